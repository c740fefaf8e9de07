"""`newsclf job` end to end against the storage emulator, with a tiny model: run, skip, fail, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsclf.runstate import problems
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)

RUN = "20261127-120000-abc123"


def _train_flags(tiny_model: Path, epochs: int = 2) -> list[str]:
    return ["--model", str(tiny_model), "--epochs", str(epochs), "--batch-size", "8", "--lr", "3e-3",
            "--max-length", "64", "--warmup-ratio", "0", "--patience", "9"]  # fmt: skip


def _push_data(gcs, tiny_data: Path) -> None:
    from newsclf.cloud.storage.upload import upload_dir

    upload_dir(gcs, gcs.test_bucket, tiny_data, "data/processed/")


def _names(gcs, prefix: str) -> set[str]:
    return {b.name for b in gcs.list_blobs(gcs.test_bucket, prefix=prefix)}


def _status(gcs, run: str = RUN) -> dict:
    return json.loads(gcs.bucket(gcs.test_bucket).blob(f"runs/{run}/status.json").download_as_bytes())


def test_job_trains_publishes_and_model_predicts(cli, gcs, tiny_data, tiny_model, tmp_path):
    _push_data(gcs, tiny_data)
    r = cli("--json", "job", "--bucket", gcs.test_bucket, "--run-id", RUN, "--workdir", tmp_path / "work",
            *_train_flags(tiny_model))  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert doc["command"] == "job" and doc["data"]["state"] == "succeeded" and not doc["data"]["skipped"]
    names = _names(gcs, f"runs/{RUN}/")
    for name in ("model/model.safetensors", "model/config.json", "model/tokenizer.json", "run.json",
                 "metrics.json", "status.json"):  # fmt: skip
        assert f"runs/{RUN}/{name}" in names
    assert any(n.startswith(f"runs/{RUN}/checkpoints/checkpoint-") for n in names)
    status = _status(gcs)
    assert status["state"] == "succeeded" and status["exit_code"] == 0 and status["error"] is None
    assert status["started_at"] <= status["finished_at"] and problems(status) == []
    metrics = json.loads(gcs.bucket(gcs.test_bucket).blob(f"runs/{RUN}/metrics.json").download_as_bytes())
    assert len(metrics["validation"]) == 2 and "macro_f1" in metrics["test"]

    # the model comes back through `models pull` and predicts
    pull = cli("--json", "models", "pull", "latest", "--dest", tmp_path / "models")
    assert pull.exit_code == 0, pull.stderr
    pred = cli("--json", "predict", "--model", str(tmp_path / "models" / RUN), "officials said in a statement")
    assert pred.exit_code == 0, pred.stderr
    rows = pred.json["data"]["predictions"]
    assert len(rows) == 1 and rows[0]["label"] in ("fake", "real")

    # a second start of the same run (a rebooted VM) does nothing
    again = cli("--json", "job", "--bucket", gcs.test_bucket, "--run-id", RUN, "--workdir", tmp_path / "w2",
                *_train_flags(tiny_model))  # fmt: skip
    assert again.exit_code == 0 and again.json["data"]["skipped"] is True
    assert _status(gcs) == status


def test_job_without_data_records_failure(cli, gcs, tiny_model, tmp_path):
    r = cli("job", "--run-id", RUN, "--workdir", tmp_path, *_train_flags(tiny_model))
    assert r.exit_code == 1
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(
        f"Error: Run {RUN} failed: No dataset in gs://{gcs.test_bucket}/data/: run `newsclf data prepare"
    )
    status = _status(gcs)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert status["error"].startswith(f"No dataset in gs://{gcs.test_bucket}/data/")
    assert problems(status) == []  # the one status.json schema (newsclf/runstate.py)
    assert f"runs/{RUN}/metrics.json" not in _names(gcs, f"runs/{RUN}/")


def test_job_with_bad_model_records_failure(cli, gcs, tiny_data, tmp_path):
    _push_data(gcs, tiny_data)
    r = cli("job", "--run-id", RUN, "--workdir", tmp_path, "--model", str(tmp_path / "no-such-model"), "--epochs", "1")
    assert r.exit_code == 1
    assert _status(gcs)["state"] == "failed"


def test_job_refuses_flags_that_belong_to_local_runs(cli, gcs, tmp_path):
    r = cli("job", "--run-id", RUN, "--demo")
    assert r.exit_code == 2
    assert "--demo cannot be used in a job" in r.stderr
    assert _names(gcs, "runs/") == set()


@pytest.mark.slow
def test_job_killed_after_first_checkpoint_resumes_from_bucket(cli, gcs, tiny_data, tiny_model, tmp_path):
    _push_data(gcs, tiny_data)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "newsclf", "job", "--run-id", RUN, "--workdir", str(tmp_path / "vm1"),
           *_train_flags(tiny_model, epochs=6)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=tmp_path)  # fmt: skip
    seen = []
    deadline = time.time() + 240
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "synced to" in line:  # the first checkpoint is in the bucket: the VM dies now
            proc.kill()
            break
        assert time.time() < deadline, "".join(seen)
    proc.wait(timeout=30)
    assert proc.returncode == -9, "".join(seen)
    assert _status(gcs)["state"] == "running"  # killed -9: nobody recorded anything
    assert f"runs/{RUN}/metrics.json" not in _names(gcs, f"runs/{RUN}/")

    # the restarted VM: a fresh disk, the same run id
    r = cli("--json", "job", "--run-id", RUN, "--workdir", tmp_path / "vm2", *_train_flags(tiny_model, epochs=6))
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert data["resumed_from"] == f"gs://{gcs.test_bucket}/runs/{RUN}/checkpoints/"
    status = _status(gcs)
    assert status["state"] == "succeeded" and status["attempt"] == 2
    metrics = json.loads(gcs.bucket(gcs.test_bucket).blob(f"runs/{RUN}/metrics.json").download_as_bytes())
    assert [e["epoch"] for e in metrics["validation"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_job_trains_data_parallel_with_num_processes(cli, gcs, tiny_data, tiny_model, tmp_path):
    """What a 2-GPU VM does, with 2 CPU processes (gloo): half the steps per epoch, one published run."""
    _push_data(gcs, tiny_data)
    r = cli("--json", "job", "--run-id", RUN, "--workdir", tmp_path / "work", *_train_flags(tiny_model, epochs=1),
            "--num-processes", "2")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["state"] == "succeeded"
    bucket = gcs.bucket(gcs.test_bucket)
    run = json.loads(bucket.blob(f"runs/{RUN}/run.json").download_as_bytes())
    assert run["num_processes"] == 2
    metrics = json.loads(bucket.blob(f"runs/{RUN}/metrics.json").download_as_bytes())
    assert metrics["train"]["global_step"] == 96 // (8 * 2)  # 96 rows, batch 8 per process, 2 processes
    assert metrics == r.json["data"]["metrics"]
    assert _status(gcs)["state"] == "succeeded"
    assert f"runs/{RUN}/model/model.safetensors" in _names(gcs, f"runs/{RUN}/")


@pytest.mark.slow
def test_data_parallel_job_records_the_processes_failure(cli, gcs, tiny_data, tmp_path):
    _push_data(gcs, tiny_data)
    r = cli("job", "--run-id", RUN, "--workdir", tmp_path, "--model", str(tmp_path / "no-such-model"),
            "--epochs", "1", "--num-processes", "2")  # fmt: skip
    assert r.exit_code == 1
    status = _status(gcs)
    assert status["state"] == "failed"
    assert "no-such-model" in status["error"] and "training processes failed" not in status["error"]


def test_hub_models_go_online_the_packaged_model_and_local_paths_stay_offline(tiny_model, tmp_path):
    from newsclf.job import hub_env
    from newsclf.train import PACKAGED_MODEL

    image = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # what the Dockerfile sets
    online = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    for hub_id in ("roberta-base", "FacebookAI/roberta-base", "sentence-transformers/all-MiniLM-L6-v2"):
        assert hub_env(hub_id, image) == online, hub_id
    assert hub_env("roberta-base", {"TRANSFORMERS_OFFLINE": "true"}) == online
    for offline in ("", PACKAGED_MODEL, str(tiny_model), "/models/no-such-dir", "./my-model", "my model"):
        assert hub_env(offline, image) == {}, offline
    (tmp_path / "roberta-base").mkdir()  # a local folder wins over the Hub id it looks like (cwd is tmp_path)
    assert hub_env("roberta-base", image) == {}
    assert hub_env("FacebookAI/roberta-base", {}) == {}  # already online: nothing to change


class _RecordingHub:
    """A local stand-in for the Hugging Face Hub that knows no model: records each request, answers 404."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.paths: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hub.paths.append(self.path)
                body = b'{"error": "Repository not found"}'
                self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("X-Error-Code", "RepoNotFound")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

            def log_message(self, *args) -> None:  # noqa: ANN002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_job_with_a_hub_model_downloads_it_in_an_offline_image(gcs, tiny_data, tmp_path):
    """The image's HF_HUB_OFFLINE=1 does not stop `--model NAMESPACE/NAME`: the job asks the Hub
    (here a local stand-in that knows no model, so the run fails naming it)."""
    _push_data(gcs, tiny_data)
    hub = _RecordingHub()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_ENDPOINT": hub.url,
           "HF_HOME": str(tmp_path / "hf"), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "newsclf", "job", "--run-id", RUN, "--workdir", str(tmp_path / "work"),
             "--model", "newsclf-tests/tiny-bert", "--epochs", "1"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        hub.close()
    assert proc.returncode == 1, proc.stderr
    assert (
        "Downloading newsclf-tests/tiny-bert from the Hugging Face Hub (HF_HUB_OFFLINE=0 for this job)" in proc.stderr
    )
    assert any("newsclf-tests/tiny-bert" in path for path in hub.paths), proc.stderr
    status = _status(gcs)
    assert status["state"] == "failed" and "newsclf-tests/tiny-bert" in status["error"]


@pytest.mark.slow
def test_job_stopped_by_sigterm_stays_resumable(gcs, tiny_data, tiny_model, tmp_path):
    """A stopping or preempted VM stops the container with SIGTERM: the run is `interrupted`, not `failed`
    (the startup script skips a run whose status is succeeded or failed, so that would end it for good)."""
    import signal

    _push_data(gcs, tiny_data)
    cmd = [sys.executable, "-m", "newsclf", "job", "--run-id", RUN, "--workdir", str(tmp_path / "vm1"),
           *_train_flags(tiny_model, epochs=6)]  # fmt: skip
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, cwd=tmp_path)  # fmt: skip
    seen = []
    deadline = time.time() + 240
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line)
        if "synced to" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.time() < deadline, "".join(seen)
    seen += proc.stderr.readlines()
    proc.wait(timeout=60)
    assert proc.returncode == 143, "".join(seen)
    status = _status(gcs)
    assert status["state"] == "interrupted" and status["exit_code"] == 143, status
    assert f"runs/{RUN}/metrics.json" not in _names(gcs, f"runs/{RUN}/")
    assert any(n.startswith(f"runs/{RUN}/checkpoints/checkpoint-") for n in _names(gcs, f"runs/{RUN}/"))
