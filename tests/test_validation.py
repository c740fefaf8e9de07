"""Numeric options and settings: finite and in a sensible range, or one `Error:` line naming the fix.

Faults covered here (issue 15): `--epochs inf` / `nan`, out-of-range flags and NEWSCLF_* values
(`config show` with batch_size -4, precision fp64, max_hours -1), a run_config.json from before the
checks that holds Infinity, and `--max-length` above the base model's limit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tiny_model import tiny_data, tiny_model  # noqa: F401 (fixtures)


@pytest.mark.parametrize(
    ("flags", "error"),
    [(["--epochs", "inf"], "--epochs must be a finite number"),
     (["--epochs", "nan"], "--epochs must be a finite number"),
     (["--epochs", "1e9"], "--epochs must be <= 1000"),
     (["--lr", "inf"], "--lr must be a finite number"),
     (["--lr", "5"], "--lr must be <= 1"),
     (["--batch-size", "0"], "--batch-size must be >= 1"),
     (["--batch-size", "100000"], "--batch-size must be <= 4096"),
     (["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
     (["--warmup-ratio", "nan"], "--warmup-ratio must be a finite number"),
     (["--attention-dropout", "inf"], "--attention-dropout must be a finite number"),
     (["--max-length", "4"], "--max-length must be >= 8"),
     (["--patience", "0"], "--patience must be >= 1"),
     (["--seed", "-1"], "--seed must be >= 0"),
     (["--seed", str(2**32)], "--seed must be <= 4294967295"),
     (["--max-train-samples", "0"], "--max-train-samples must be >= 1")],
)  # fmt: skip
def test_out_of_range_flags_are_one_line(cli, tmp_path, flags, error):
    r = cli("train", "--data", str(tmp_path / "not-prepared"), *flags)  # checked before the dataset is
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == f"Error: {error}: fix the flag or its NEWSCLF_* setting"
    assert not Path("models").exists()


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [("NEWSCLF_BATCH_SIZE", "-4", "input should be greater than or equal to 1"),
     ("NEWSCLF_PRECISION", "fp64", "input should be 'auto', 'bf16', 'fp16', 'tf32' or 'fp32'"),
     ("NEWSCLF_MAX_HOURS", "-1", "input should be greater than 0"),
     ("NEWSCLF_EPOCHS", "inf", "input should be a finite number"),
     ("NEWSCLF_LR", "nan", "input should be a finite number"),
     ("NEWSCLF_WARMUP_RATIO", "1", "input should be less than 1"),
     ("NEWSCLF_SEED", "-3", "input should be greater than or equal to 0"),
     ("NEWSCLF_DISK_GB", "5", "input should be greater than or equal to 10")],
)  # fmt: skip
def test_out_of_range_settings_are_one_line(cli, monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    r = cli("--json", "config", "show")
    assert r.exit_code == 1
    expected = f"Invalid setting {variable}: {message}, not {value}; fix {variable} in the environment or .env"
    assert r.stderr.strip() == f"Error: {expected}"
    assert r.json["errors"] == [expected]


def test_out_of_range_setting_in_dotenv(cli, tmp_path):
    (tmp_path / ".env").write_text("NEWSCLF_EPOCHS=inf\n")
    r = cli("train")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: Invalid setting NEWSCLF_EPOCHS: input should be a finite number, not inf; "
        "fix NEWSCLF_EPOCHS in the environment or .env"
    )


def test_resuming_a_run_config_with_infinity_is_one_line(cli):
    run = Path("models/20261127-000000-infinite")
    run.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"run_id": run.name, "dataset": "data/processed",
                                                     "epochs": float("inf")}))  # fmt: skip
    r = cli("train", "--resume")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: {run / 'run_config.json'} has a setting out of range (--epochs should be a finite number): "
        "this run cannot be resumed; start a new one with `newsclf train`"
    )


def test_max_length_above_the_models_limit_is_an_error(cli, tiny_data, tiny_model):
    r = cli("train", "--data", str(tiny_data), "--model", str(tiny_model), "--max-length", "512", "--epochs", "1")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: --max-length 512 is more than {tiny_model} takes (256 tokens): pass --max-length 256 or less"
    )
    assert not Path("models").exists() or not any(Path("models").iterdir())  # no run to resume later


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_inference_batch_size_has_an_upper_bound(cli, command):
    args = [command, "--batch-size", "100000"] + (["some text"] if command == "predict" else [])
    r = cli(*args)
    assert r.exit_code == 2
    assert "--batch-size must be at most 4096, not 100000" in r.stderr
