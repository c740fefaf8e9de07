"""What makes a run complete and publishable: finite numbers, the manifest, damaged checkpoints.

Faults covered here (issue 15): a run that diverges (NaN weights from the start, or NaN in the middle of
training), NaN/Infinity reaching a JSON document, a run folder missing its tokenizer or holding a changed
or truncated file (predict, evaluate, models push, models pull), runs from before the manifest, a publish
interrupted half-way, a checkpoint whose model.safetensors is NaN, 0-byte or truncated, and a pickle
that is not plain tensors in a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.tiny_model import tiny_data, tiny_model, tiny_run  # noqa: F401 (fixtures)

FAKE = "shocking viral hoax exposed watch the insane secret"


def strict_json(text: str) -> dict:
    """json.loads that rejects NaN/Infinity, as jq, JSON.parse and most other readers do."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def tiny_args(data: Path, model: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", str(model), "--batch-size", "8", "--lr", "3e-3",
            "--max-length", "64", "--warmup-ratio", "0", *extra]  # fmt: skip


def copy_run(run: Path, models: Path = Path("models")) -> Path:
    dest = models / run.name
    shutil.copytree(run, dest)
    return dest


# -- JSON: never a bare NaN -------------------------------------------------------------------------


def test_json_document_maps_non_finite_numbers_to_null(capsys):
    import numpy as np

    from newsclf.cli import _output

    _output.reset(json=True, command="evaluate")
    data = {"loss": float("nan"), "scores": [float("inf"), -float("inf"), 0.5], "f32": np.float32("nan"),
            "arr": np.array([1.0, np.nan]), "n": 3, "ok": True}  # fmt: skip
    _output.emit(data)
    doc = strict_json(capsys.readouterr().out)
    assert doc["data"] == {"loss": None, "scores": [None, None, 0.5], "f32": None, "arr": [1.0, None], "n": 3,
                           "ok": True}  # fmt: skip


# -- divergence fails the run ----------------------------------------------------------------------


def nan_base_model(tiny_model: Path, dest: Path) -> Path:
    """The tiny base model with one NaN in its word embeddings: every loss is NaN from the first step."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_model, dest)
    weights = load_file(dest / "model.safetensors")
    key = next(k for k in weights if "word_embeddings" in k)
    weights[key][5, 0] = float("nan")
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def test_a_diverging_run_fails_and_is_not_published(cli, tiny_data, tiny_model, tmp_path):
    base = nan_base_model(tiny_model, tmp_path / "nan-base")
    r = cli("--json", *tiny_args(tiny_data, base, "--epochs", "1"))
    assert r.exit_code == 1
    doc = strict_json(r.stdout)  # one JSON document, no bare NaN
    assert doc["status"] == "error" and doc["data"] is None
    [error] = doc["errors"]
    assert error.startswith("Training diverged: loss was nan at step 1, so run ")
    assert error.endswith("resume it from its last finite checkpoint (`newsclf train --resume "
                          f"{error.split('run ')[1].split(' ')[0]}`), or start a new run with a lower --lr")  # fmt: skip
    assert r.stderr.strip().splitlines()[-1] == f"Error: {error}"
    assert not Path("models/latest").exists()
    [run] = [p for p in Path("models").iterdir()]
    assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())  # nothing NaN kept


def test_nan_in_the_middle_keeps_the_last_finite_checkpoint_and_resumes(cli, tiny_data, tiny_model):
    import torch
    from transformers import TrainerCallback

    from newsclf.runs import is_complete
    from newsclf.train import TrainingDiverged, TrainOptions, run_training

    class Poison(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 14:  # two steps into epoch 2, after checkpoint-12
                with torch.no_grad():
                    next(model.parameters()).fill_(float("nan"))

    options = TrainOptions(data_dir=tiny_data, models_dir=Path("models"), base_model=str(tiny_model), epochs=2,
                           batch_size=8, lr=3e-3, max_length=64, patience=5, warmup_ratio=0.0)  # fmt: skip
    run = Path("models/20261127-000000-diverged")
    with pytest.raises(TrainingDiverged, match=r"^Training diverged: loss was nan at step 15, so run "):
        run_training(options, run_dir=run, callbacks=[Poison()])
    assert not is_complete(run) and not Path("models/latest").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["checkpoint-12"]  # none saved after the NaN

    r = cli("--json", "train", "--resume", run.name)
    assert r.exit_code == 0, r.stderr
    data = strict_json(r.stdout)["data"]
    assert data["resumed_from"].endswith("checkpoint-12")
    assert data["metrics"]["train"]["resumed_from_step"] == 12
    assert is_complete(run) and os.readlink("models/latest") == run.name


# -- damaged checkpoints ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, tiny_data, tiny_model) -> Path:
    """An unfinished run stopped by Ctrl-C right after checkpoint-12 (epoch 1 of 2)."""
    from transformers import TrainerCallback

    from newsclf.train import TrainOptions, run_training

    class CtrlC(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise KeyboardInterrupt

    models = tmp_path_factory.mktemp("interrupted") / "models"
    options = TrainOptions(data_dir=tiny_data, models_dir=models, base_model=str(tiny_model), epochs=2,
                           batch_size=8, lr=3e-3, max_length=64, patience=5, warmup_ratio=0.0)  # fmt: skip
    run = models / "20261127-000000-stopped"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        with pytest.raises(KeyboardInterrupt):
            run_training(options, run_dir=run, callbacks=[CtrlC()])
    assert (run / "checkpoints" / "checkpoint-12" / "trainer_state.json").is_file()
    return run


def damage(weights: Path, how: str) -> None:
    from safetensors.torch import load_file, save_file

    if how == "nan":  # a valid file whose bytes now decode to NaN
        tensors = load_file(weights)
        key = sorted(tensors)[0]
        tensors[key].view(-1)[0] = float("nan")
        save_file(tensors, weights, metadata={"format": "pt"})
    elif how == "zero":
        weights.write_bytes(b"")
    elif how == "truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize(
    ("how", "problem"),
    [("nan", "model.safetensors holds NaN or infinite weights ("),
     ("zero", "model.safetensors is unreadable: Error while deserializing header: header too small"),
     ("truncated", "model.safetensors is unreadable: Error while deserializing header: incomplete metadata")],
)  # fmt: skip
def test_resume_from_a_damaged_checkpoint_is_one_error(cli, interrupted_run, how, problem):
    run = copy_run(interrupted_run)
    damage(run / "checkpoints" / "checkpoint-12" / "model.safetensors", how)
    r = cli("--json", "train", "--resume", run.name)
    assert r.exit_code == 1
    [error] = strict_json(r.stdout)["errors"]
    assert error.startswith(f"Cannot resume run {run.name}: checkpoint-12 ({problem}")
    assert error.endswith(f"and no earlier checkpoint is intact: delete {run / 'checkpoints'} to train it from "
                          "the start, or start a new run")  # fmt: skip
    assert r.stderr.strip().splitlines()[-1] == f"Error: {error}"
    assert not (run / "metrics.json").exists() and not Path("models/latest").exists()


def test_a_damaged_newest_checkpoint_is_skipped(interrupted_run, caplog):
    from newsclf.train import resumable_checkpoint

    run = copy_run(interrupted_run)
    shutil.copytree(run / "checkpoints" / "checkpoint-12", run / "checkpoints" / "checkpoint-24")
    damage(run / "checkpoints" / "checkpoint-24" / "model.safetensors", "zero")
    with caplog.at_level("WARNING", logger="newsclf"):
        assert resumable_checkpoint(run) == run / "checkpoints" / "checkpoint-12"
    assert "Skipping damaged checkpoint-24 (model.safetensors is unreadable" in caplog.text


def test_a_pickle_in_a_checkpoint_is_refused_without_suggesting_to_load_it(cli, interrupted_run):
    from fractions import Fraction

    import torch

    run = copy_run(interrupted_run)
    ckpt = run / "checkpoints" / "checkpoint-12"
    torch.save({"state": Fraction(1, 3)}, ckpt / "rng_state.pth")  # not tensors: weights_only refuses it
    r = cli("train", "--resume", run.name)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: {ckpt} holds a file that is not plain tensors (optimizer, scheduler or RNG state), and newsclf "
        f"never loads such pickles: delete {ckpt} to resume from an earlier checkpoint, or start a new run"
    )
    assert "weights_only" not in r.stderr + r.stdout
    assert not (run / "metrics.json").exists()


# -- the manifest ----------------------------------------------------------------------------------


def test_a_finished_run_has_a_manifest_of_every_file(tiny_run):
    from newsclf.runs import check_run, file_sha256

    manifest = json.loads((tiny_run / "run_manifest.json").read_text())
    top = {p.name for p in tiny_run.iterdir() if p.is_file()} - {"run_manifest.json"}
    assert set(manifest["files"]) == top
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "run_config.json",
            "trainer_state.json", "metrics.json"} <= top  # fmt: skip
    for name, entry in manifest["files"].items():
        assert entry == {"size": (tiny_run / name).stat().st_size, "sha256": file_sha256(tiny_run / name)}
    check_run(tiny_run)
    strict_json((tiny_run / "metrics.json").read_text())
    strict_json((tiny_run / "trainer_state.json").read_text())


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # inside the tensor data: same size, different content
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("change", "problem"),
    [(lambda run: [(run / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")],
      "tokenizer.json missing; tokenizer_config.json missing"),
     (lambda run: flip_a_byte(run / "model.safetensors"),
      "model.safetensors changed (sha256 differs from what training wrote)"),
     (lambda run: (run / "model.safetensors").write_bytes(b""), "model.safetensors changed (0 bytes, training wrote ")],
    ids=["no-tokenizer", "flipped-byte", "zero-bytes"],
)  # fmt: skip
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_predict_and_evaluate_refuse_an_incomplete_run(cli, tiny_run, change, problem, command):
    run = copy_run(tiny_run)
    change(run)
    args = ["predict", "--model", str(run), FAKE] if command == "predict" else ["evaluate", "--model", str(run)]
    r = cli(*args)
    assert r.exit_code == 1 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert line.startswith(f"Error: Run {run} is incomplete ({problem}")
    assert line.endswith(f"): pull it again (`newsclf models pull {run.name}`) or train a new one, or pick another "
                         "with --model")  # fmt: skip


def test_a_run_from_before_the_manifest_needs_its_files(cli, tiny_run):
    old = copy_run(tiny_run)
    (old / "run_manifest.json").unlink(missing_ok=True)  # as runs made before it
    r = cli("--json", "predict", "--model", str(old), FAKE)
    assert r.exit_code == 0, r.stderr  # complete: used as before
    assert r.json["data"]["predictions"][0]["label"] == "fake"

    (old / "tokenizer.json").unlink()
    (old / "tokenizer_config.json").unlink()
    r = cli("predict", "--model", str(old), FAKE)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: Run {old} is incomplete (tokenizer vocabulary missing (none of "
        "tokenizer.json, vocab.txt, vocab.json, spiece.model, sentencepiece.bpe.model)): pull it again "
        f"(`newsclf models pull {old.name}`) or train a new one, or pick another with --model"
    )


def test_a_corrupt_model_without_a_manifest_is_one_error(cli, tiny_run):
    old = copy_run(tiny_run)
    (old / "run_manifest.json").unlink(missing_ok=True)  # as runs made before it
    damage(old / "model.safetensors", "truncated")
    r = cli("evaluate", "--model", str(old))
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: Cannot load the model in {old} (Error while deserializing header: incomplete metadata, file not "
        "fully covered): pull or train it again, or pick another with --model"
    )


def test_models_push_refuses_an_incomplete_run(cli, tiny_run, monkeypatch):
    monkeypatch.setenv("NEWSCLF_BUCKET", "my-newsclf-bucket")
    run = copy_run(tiny_run)
    (run / "tokenizer.json").unlink()
    r = cli("models", "push", str(run))
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: Run {run} is incomplete (tokenizer.json missing): pull it again (`newsclf models pull {run.name}`) "
        "or train a new one, or pick another with --model"
    )


def test_models_pull_refuses_a_run_changed_in_the_bucket(cli, gcs, tiny_run):
    from newsclf.cloud.storage.runs import push_run

    push_run(gcs, gcs.test_bucket, copy_run(tiny_run, Path("pushed")))
    gcs.bucket(gcs.test_bucket).blob(f"runs/{tiny_run.name}/model/tokenizer.json").upload_from_string(b"{}")
    r = cli("models", "pull", tiny_run.name)
    assert r.exit_code == 1
    run = Path("models") / tiny_run.name
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: Run {run} is incomplete (tokenizer.json changed (2 bytes, training wrote "
        f"{(tiny_run / 'tokenizer.json').stat().st_size})): pull it again (`newsclf models pull {run.name}`) "
        "or train a new one, or pick another with --model"
    )
    assert not (run / "metrics.json").exists() and not Path("models/latest").exists()


# -- publishing ------------------------------------------------------------------------------------


def test_publishing_makes_the_run_complete_in_one_last_step(tiny_run, tmp_path, monkeypatch):
    """Killed anywhere before the final rename, the run is not complete; after it, it checks out."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerState

    from newsclf import train
    from newsclf.runs import check_run, is_complete

    model = AutoModelForSequenceClassification.from_pretrained(tiny_run)
    tokenizer = AutoTokenizer.from_pretrained(tiny_run)
    state = TrainerState(global_step=3, log_history=[{"loss": 0.5, "grad_norm": float("inf"), "step": 3}])
    run = tmp_path / "models" / "20261127-000000-publish"
    run.mkdir(parents=True)
    shutil.copy(tiny_run / "run_config.json", run)

    real_replace = os.replace

    def crash_at_metrics(src, dst):
        if Path(dst) == run / "metrics.json":
            raise OSError("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(train.os, "replace", crash_at_metrics)
    with pytest.raises(OSError, match="killed"):
        train._publish(run, model, tokenizer, state, {"run_id": run.name, "test": {"loss": 0.1}})
    assert (run / "model.safetensors").is_file() and not is_complete(run)  # everything else is already there
    monkeypatch.setattr(train.os, "replace", real_replace)

    train._publish(run, model, tokenizer, state, {"run_id": run.name, "test": {"loss": 0.1}})
    assert is_complete(run) and not (run / ".publish.tmp").exists()
    check_run(run)
    saved = strict_json((run / "trainer_state.json").read_text())
    assert saved["log_history"][0]["grad_norm"] is None  # an fp16 overflow step: null, not Infinity
