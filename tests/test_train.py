"""`newsclf train`: a tiny random BERT end to end, resume after kill -9 and Ctrl-C, DDP, W&B, demo.

Faults covered here (issue 15): a Hub id for --model with no network (fails after one short probe, not
a minute of retries) or not cached under HF_HUB_OFFLINE, and an unreachable W&B server (no ./wandb/ left).
Divergence, damaged checkpoints and incomplete runs are in tests/test_runs.py, option ranges in
tests/test_validation.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tiny_model import tiny_data, tiny_model  # noqa: F401 (fixtures)

RUN_CONFIG_KEYS = {"run_id", "created_at", "base_model", "max_length", "epochs", "batch_size", "lr", "weight_decay",
                   "warmup_ratio", "patience", "seed", "dataset", "dataset_manifest_sha256", "versions",
                   "git_commit", "device"}  # fmt: skip
METRIC_KEYS = {"accuracy", "macro_f1", "precision", "recall", "loss"}
REPO = Path(__file__).resolve().parents[1]


def tiny_args(data: Path, model: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--model", str(model), "--batch-size", "8", "--lr", "3e-3",
            "--max-length", "64", "--warmup-ratio", "0", *extra]  # fmt: skip


def the_run(models: Path = Path("models")) -> Path:
    runs = [p for p in models.iterdir() if p.is_dir() and not p.is_symlink()]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_writes_a_complete_run(cli, tiny_data, tiny_model, monkeypatch):
    monkeypatch.setenv("NEWSCLF_EPOCHS", "5")  # the flag below wins
    monkeypatch.setenv("NEWSCLF_PATIENCE", "3")  # no flag: the environment wins over the default
    r = cli("--json", *tiny_args(tiny_data, tiny_model, "--epochs", "3"))  # the tiny model leaves 0.5 in epoch 2 or 3
    assert r.exit_code == 0, r.stderr
    doc = r.json  # stdout is exactly one JSON document
    assert doc["status"] == "ok" and doc["command"] == "train"
    data = doc["data"]
    run = Path(data["run_dir"])
    assert run == Path("models") / data["run_id"]
    assert os.readlink("models/latest") == data["run_id"]
    names = {p.name for p in run.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "run_config.json",
            "metrics.json", "trainer_state.json"} <= names  # fmt: skip
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".tmp"))]
    assert "checkpoints" not in names  # pruned once the run is complete

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics == data["metrics"]
    assert metrics["run_id"] == data["run_id"]
    assert [row["epoch"] for row in metrics["validation"]] == [1.0, 2.0, 3.0]
    assert all(set(row) == {"epoch"} | METRIC_KEYS for row in metrics["validation"])
    assert metrics["best_validation"]["macro_f1"] == max(row["macro_f1"] for row in metrics["validation"])
    assert set(metrics["test"]) == METRIC_KEYS
    assert metrics["test"]["accuracy"] >= 0.9  # the corpus is learnable: training did something
    assert metrics["train"]["epochs_completed"] == 3.0 and metrics["train"]["samples_per_second"] > 0

    cfg = json.loads((run / "run_config.json").read_text())
    assert RUN_CONFIG_KEYS <= set(cfg)
    assert cfg["epochs"] == 3.0 and cfg["patience"] == 3 and cfg["lr"] == 3e-3 and cfg["max_length"] == 64
    assert cfg["dataset"] == str(tiny_data) and len(cfg["dataset_manifest_sha256"]) == 64
    assert cfg["device"] == "cpu" and {"newsclf", "torch", "transformers"} <= set(cfg["versions"])
    from newsclf.train import cpu_bf16_fast

    assert cfg["precision"] == ("bf16" if cpu_bf16_fast() else "fp32")  # auto: bf16 only where AMX makes it fast
    assert cfg["attention_dropout"] == 0.0

    model_cfg = json.loads((run / "config.json").read_text())
    assert model_cfg["attention_probs_dropout_prob"] == 0.0  # the default, over the base model's 0.1
    assert model_cfg["id2label"] == {"0": "fake", "1": "real"}
    assert model_cfg["label2id"] == {"fake": 0, "real": 1}
    state = json.loads((run / "trainer_state.json").read_text())
    assert len([h for h in state["log_history"] if "eval_macro_f1" in h]) == 3


def test_train_human_output_is_a_table(cli, tiny_data, tiny_model):
    r = cli(*tiny_args(tiny_data, tiny_model, "--epochs", "1", "--precision", "fp32", "--attention-dropout", "0.1"))
    assert r.exit_code == 0, r.stderr
    run = the_run()
    assert json.loads((run / "run_config.json").read_text())["precision"] == "fp32"
    assert json.loads((run / "config.json").read_text())["attention_probs_dropout_prob"] == 0.1
    assert f"run {run.name}" in r.stdout and "validation*" in r.stdout and "test" in r.stdout
    assert f"Saved to {run}" in r.stdout
    # progress goes to stderr as plain lines (not a TTY), never to stdout
    assert "epoch 1 validation: accuracy" in r.stderr and "step 12/12" in r.stderr
    assert "step 12/12" not in r.stdout


def test_missing_dataset_names_the_fixes(cli):
    r = cli("train")
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: No prepared dataset in data/processed/ (missing ")
    for fix in ("`newsclf data prepare", "`newsclf data pull`", "`newsclf train --demo`"):
        assert fix in lines[0]
    assert r.stdout == ""


@pytest.mark.parametrize(
    ("flags", "error"),
    [(["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1): fix the flag or its NEWSCLF_* setting"),
     (["--precision", "half"], "--precision must be one of auto, bf16, fp16, tf32, fp32: fix the flag or its "
                               "NEWSCLF_* setting"),
     (["--precision", "tf32", "--cpu"], "--precision tf32 needs a CUDA GPU: use bf16 or fp32 on the CPU")],
)  # fmt: skip
def test_bad_option_value_is_one_line(cli, tiny_data, flags, error):
    r = cli("train", "--data", str(tiny_data), *flags)
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {error}"
    assert not Path("models").exists()


def test_missing_base_model_is_one_line(cli, tiny_data, tmp_path):
    r = cli("train", "--data", str(tiny_data), "--model", str(tmp_path / "nope"))
    assert r.exit_code == 1
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and r.stderr.strip().splitlines()[-1] == errors[0]
    line = errors[0]
    assert line.startswith(f"Error: Cannot load base model '{tmp_path / 'nope'}' (")
    assert line.endswith("pass --model with a local directory holding safetensors weights, or a cached Hub id "
                         "(downloads need HF_HUB_OFFLINE unset and network)")  # fmt: skip
    assert not Path("models").exists()  # nothing half-made to resume later


def test_uncached_hub_model_with_hf_hub_offline_is_one_line(cli, tiny_data):
    r = cli("train", "--data", str(tiny_data), "--model", "newsclf-tests/not-cached")  # HF_HUB_OFFLINE=1 (conftest)
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        "Error: --model newsclf-tests/not-cached is not in the Hugging Face cache and HF_HUB_OFFLINE is set: "
        "unset HF_HUB_OFFLINE to download it (needs network), or pass --model with a local directory"
    )


def test_hub_model_without_network_fails_fast(tiny_data, tmp_path):
    """No HF_HUB_OFFLINE and no network: huggingface_hub alone retried for 69 s, printing ~10 retry lines."""
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", WANDB_MODE="disabled",
               HF_HOME=str(tmp_path / "hf-home"), PYTHONPATH=str(REPO))  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "newsclf", "--quiet", "train", "--data", str(tiny_data),
                           "--model", "distilbert-base-uncased"], capture_output=True, text=True, timeout=300,
                          env=env, cwd=tmp_path)  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == (
        "Error: Cannot download --model distilbert-base-uncased: the Hugging Face Hub (https://huggingface.co) is "
        "not reachable and it is not in the cache: connect to the network, pass --model with a local directory, "
        "or set HF_HUB_OFFLINE=1 to use only cached models"
    )
    assert elapsed < 45, elapsed  # start-up plus one 3 s probe, not a minute of retries


def test_run_argument_needs_resume(cli):
    r = cli("train", "20261127-000000-abcdef")
    assert r.exit_code == 2
    assert "got RUN '20261127-000000-abcdef' without --resume" in r.stderr


def test_resume_refuses_run_defining_flags(cli):
    r = cli("train", "--resume", "--epochs", "4", "--lr", "1e-4")
    assert r.exit_code == 2
    assert "--epochs, --lr cannot change a run being resumed: drop them" in r.stderr


def test_resume_with_nothing_to_resume(cli):
    r = cli("train", "--resume")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: No unfinished run in models/ to resume: start one with `newsclf train`"


KILL_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from pathlib import Path
from transformers import TrainerCallback
from newsclf.train import TrainOptions, run_training

class KillNine(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # kill -9 right after checkpoint-N is on disk

options = TrainOptions(data_dir=Path(sys.argv[1]), models_dir=Path("models"), base_model=sys.argv[2], epochs=3,
                       batch_size=8, lr=3e-3, max_length=64, patience=5, warmup_ratio=0.0)
run_training(options, run_dir=Path("models") / "20261127-000000-killed", callbacks=[KillNine()])
"""


def test_resume_after_kill_9(cli, tiny_data, tiny_model):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_FIRST_CHECKPOINT, str(tiny_data), str(tiny_model)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr[-2000:]
    run = Path("models/20261127-000000-killed")
    assert (run / "checkpoints" / "checkpoint-12" / "trainer_state.json").is_file()
    assert not (run / "metrics.json").exists() and not (run / "model.safetensors").exists()
    assert not Path("models/latest").exists()

    r = cli("--json", "train", "--resume")  # the newest unfinished run
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert data["run_id"] == run.name and data["resumed_from"].endswith("checkpoint-12")
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["validation"]] == [1.0, 2.0, 3.0]  # epoch 1 from before the kill
    assert metrics["train"]["resumed_from_step"] == 12 and metrics["train"]["epochs_completed"] == 3.0
    assert (run / "model.safetensors").is_file() and os.readlink("models/latest") == run.name


def test_ctrl_c_then_resume_by_id(cli, tiny_data, tiny_model):
    from transformers import TrainerCallback

    from newsclf.runs import is_complete
    from newsclf.train import TrainOptions, run_training

    class CtrlC(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 24:
                raise KeyboardInterrupt

    options = TrainOptions(data_dir=tiny_data, models_dir=Path("models"), base_model=str(tiny_model), epochs=3,
                           batch_size=8, lr=3e-3, max_length=64, patience=5, warmup_ratio=0.0)  # fmt: skip
    run = Path("models/20261127-000000-ctrlc")
    with pytest.raises(KeyboardInterrupt):
        run_training(options, run_dir=run, callbacks=[CtrlC()])
    assert not is_complete(run)

    r = cli("--json", "train", "--resume", run.name)
    assert r.exit_code == 0, r.stderr
    metrics = r.json["data"]["metrics"]
    assert metrics["train"]["resumed_from_step"] == 24
    assert [row["epoch"] for row in metrics["validation"]] == [1.0, 2.0, 3.0]
    assert is_complete(run)

    again = cli("train", "--resume", run.name)
    assert again.exit_code == 1
    assert again.stderr.strip() == f"Error: Run {run.name} already finished (metrics.json exists): nothing to resume"


def test_extra_callbacks_see_every_checkpoint(tiny_data, tiny_model, tmp_path):
    """The cloud job's hook: on_save with the checkpoint directory complete on disk."""
    from transformers import TrainerCallback

    from newsclf.train import TrainOptions, run_training

    seen = []

    class Sync(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            seen.append((ckpt.name, sorted(p.name for p in ckpt.iterdir())))

    options = TrainOptions(data_dir=tiny_data, models_dir=tmp_path / "m", base_model=str(tiny_model), epochs=2,
                           batch_size=8, lr=3e-3, max_length=64, warmup_ratio=0.0, keep_checkpoints=True)  # fmt: skip
    result = run_training(options, callbacks=[Sync()])
    assert [name for name, _ in seen] == ["checkpoint-12", "checkpoint-24"]
    assert all({"model.safetensors", "trainer_state.json", "optimizer.pt"} <= set(files) for _, files in seen)
    assert result.metrics["validation"][-1]["epoch"] == 2.0
    assert (result.run_dir / "checkpoints").is_dir()  # --keep-checkpoints


def test_early_stopping_ends_before_the_last_epoch(tiny_data, tiny_model, tmp_path):
    """A learning rate too small to change any prediction: macro-F1 never improves after epoch 1."""
    from newsclf.train import TrainOptions, run_training

    options = TrainOptions(data_dir=tiny_data, models_dir=tmp_path / "m", base_model=str(tiny_model), epochs=8,
                           batch_size=8, lr=1e-12, max_length=32, patience=1)  # fmt: skip
    result = run_training(options)
    assert result.metrics["train"]["stopped_early"] is True
    assert result.metrics["train"]["epochs_completed"] == 2.0  # epoch 2 did not beat epoch 1
    assert [row["epoch"] for row in result.metrics["validation"]] == [1.0, 2.0]
    assert result.metrics["best_validation"]["epoch"] == 1.0


@pytest.mark.slow
def test_two_processes_ddp(cli, tiny_data, tiny_model):
    r = cli("--json", *tiny_args(tiny_data, tiny_model, "--epochs", "2", "--num-processes", "2"))
    assert r.exit_code == 0, r.stderr[-3000:]
    data = r.json["data"]  # one document, relayed from rank 0
    run = the_run()
    assert data["run_id"] == run.name and os.readlink("models/latest") == run.name
    assert len(list(run.glob("*.safetensors"))) == 1
    cfg = json.loads((run / "run_config.json").read_text())
    assert cfg["num_processes"] == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["validation"]] == [1.0, 2.0]  # recorded once, not per rank
    assert metrics["validation"][0]["loss"] < 0.8  # ~ln 2, not multiplied by the number of processes
    state = json.loads((run / "trainer_state.json").read_text())
    assert state["global_step"] == 12  # 96 rows / (8 per step x 2 processes) x 2 epochs
    assert len([h for h in state["log_history"] if "eval_macro_f1" in h]) == 2


def test_wandb_offline_writes_a_local_run(cli, tiny_data, tiny_model):
    r = cli("--json", *tiny_args(tiny_data, tiny_model, "--epochs", "1", "--wandb-offline"))
    assert r.exit_code == 0, r.stderr
    runs = list(Path("wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("*.wandb"))
    assert r.json["warnings"] == []


def test_wandb_unreachable_warns_and_trains(cli, tiny_data, tiny_model, monkeypatch):
    secret = "f" * 40
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NEWSCLF_WANDB_API_KEY", secret)  # the key alone turns W&B on
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    r = cli("--json", *tiny_args(tiny_data, tiny_model, "--epochs", "1"))
    assert r.exit_code == 0, r.stderr
    warnings = r.json["warnings"]
    assert len(warnings) == 1
    assert warnings[0].startswith("W&B not reachable (") and warnings[0].endswith(
        "): training continues without tracking"
    )
    run = the_run()
    assert (run / "metrics.json").is_file()
    everything = r.stdout + r.stderr + (run / "run_config.json").read_text()
    assert secret not in everything
    assert not Path("wandb").exists()  # the run that never started leaves nothing behind


def test_demo_prepares_the_corpus_and_trains(cli, tiny_model):
    r = cli("--json", "train", "--demo", "--model", str(tiny_model), "--epochs", "1", "--max-train-samples", "32")
    assert r.exit_code == 0, r.stderr
    assert (Path("data/demo") / "manifest.json").is_file()
    cfg = json.loads((Path(r.json["data"]["run_dir"]) / "run_config.json").read_text())
    assert cfg["dataset"] == str(Path("data/demo"))
    assert cfg["max_length"] == 128 and cfg["epochs"] == 1.0  # demo preset, then the flag
    # a second demo run reuses the prepared corpus
    again = cli("--json", "train", "--demo", "--model", str(tiny_model), "--epochs", "1", "--max-train-samples", "32")
    assert again.exit_code == 0, again.stderr
    assert len([p for p in Path("models").iterdir() if not p.is_symlink()]) == 2


@pytest.mark.slow
def test_packaged_minilm_on_real_isot_rows(cli, isot_sample):
    """A few steps of the real base model on real articles; the saved model then predicts."""
    from newsclf.data import Source, prepare_dataset

    prepare_dataset(Source.isot(isot_sample / "Fake.csv", isot_sample / "True.csv"), Path("data/processed"))
    r = cli("--json", "train", "--epochs", "1", "--max-length", "64", "--max-train-samples", "96",
            "--batch-size", "16", "--lr", "1e-4")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    cfg = json.loads((Path(r.json["data"]["run_dir"]) / "run_config.json").read_text())
    assert cfg["base_model"] == "packaged:all-MiniLM-L6-v2"
    assert r.json["data"]["metrics"]["test"]["accuracy"] > 0.5
    p = cli("--json", "predict", "WASHINGTON - The Senate passed the spending bill on Tuesday, officials said.",
            "SHOCKING: You won't believe what this celebrity just said about the president!!!")  # fmt: skip
    assert p.exit_code == 0, p.stderr
    preds = p.json["data"]["predictions"]
    assert [x["index"] for x in preds] == [0, 1]
    assert all(x["label"] in ("fake", "real") and 0.5 <= x["probability"] <= 1 for x in preds)


@pytest.mark.slow
def test_readme_demo_offline_then_predict_and_evaluate():
    """`newsclf train --demo` with the packaged model and every network route dead, then predict/evaluate."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", NO_PROXY="",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", WANDB_MODE="disabled")  # fmt: skip

    def newsclf(*args: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "newsclf", "--json", *args], capture_output=True, text=True,
                              timeout=600, env=env)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout)["data"]

    trained = newsclf("train", "--demo")
    metrics = trained["metrics"]
    assert metrics["test"]["macro_f1"] >= 0.8, metrics  # the demo corpus is learnt, not memorised noise
    preds = newsclf("predict", "Ministry publishes quarterly inflation figures, officials said on Tuesday.",
                    "SHOCKING!!! They don't want you to know what the mayor did - share before it's deleted!")  # fmt: skip
    assert [p["index"] for p in preds["predictions"]] == [0, 1]
    assert preds["run_id"] == trained["run_id"]
    scored = newsclf("evaluate")
    assert scored["run_id"] == trained["run_id"] and scored["data"] == str(Path("data/demo"))
    assert scored["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"], abs=1e-4)


def test_half_precision_checkpoint_trains_with_fp32_weights(cli, tiny_data, tiny_model, tmp_path):
    # Hub checkpoints are often stored in fp16/bf16; transformers 5 would load them as such
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    half = tmp_path / "half"
    shutil.copytree(tiny_model, half)
    weights = load_file(half / "model.safetensors")
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, half / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    config = json.loads((half / "config.json").read_text())
    config["dtype"] = "float16"  # as a checkpoint saved in fp16 says
    (half / "config.json").write_text(json.dumps(config))
    r = cli(*tiny_args(tiny_data, half, "--epochs", "1", "--precision", "fp32"))
    assert r.exit_code == 0, r.stderr
    with safe_open(the_run() / "model.safetensors", "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}


@pytest.mark.parametrize(("capability", "expected"), [((9, 0), "tf32"), ((8, 0), "tf32"), ((7, 5), "fp16")])
def test_auto_precision_on_gpus(monkeypatch, capability, expected):
    # no GPU here: only the choice is checked (the GPU runs themselves are in bench/README.md)
    import torch

    from newsclf.train import resolve_precision

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert resolve_precision("auto", cuda=True) == expected
    assert resolve_precision("fp32", cuda=True) == "fp32"


def test_resuming_a_run_from_before_attention_dropout_keeps_the_models_own(tmp_path):
    from newsclf.train import TrainOptions

    run = tmp_path / "models" / "20261101-000000-abcdef"
    run.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps({"run_id": run.name, "dataset": "data/processed", "lr": 3e-3}))
    options = TrainOptions.from_run_config(run)
    assert options.attention_dropout is None and options.lr == 3e-3  # not today's default of 0
