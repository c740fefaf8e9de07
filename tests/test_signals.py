"""SIGTERM (`docker stop`, `timeout`, a cancelled CI job, a preempted VM) is handled like Ctrl-C.

Real subprocesses get a real SIGTERM once an event shows they are where the test wants them (a
file appears, a pause point is reached), never after a fixed sleep. Exit 143, one JSON document with
--json, the resume hint; `newsclf job` uploads a checkpoint first and the next start resumes it.

Signals, kills and races covered here and in test_locks.py:

| fault                                           | what holds                                          |
|-------------------------------------------------|-----------------------------------------------------|
| SIGTERM during `data prepare` (temp folder half | exit 143, one JSON document, no temp folder, no     |
| written)                                        | lock file, no dataset                               |
| SIGINT at the same point                        | exit 130, "Interrupted"                             |
| SIGTERM during `train`                          | exit 143, JSON document with the `--resume` hint;   |
|                                                 | the hint resumes it                                 |
| SIGTERM during a sweep                          | its own summary document says 143 too               |
| SIGTERM to the `--num-processes` launcher only  | the ranks stop too (no training on after exit)      |
| SIGTERM mid-step in `newsclf job`               | that step's checkpoint uploaded within 25 s; status |
|                                                 | `interrupted` (143); the retry resumes from it      |
| `kill -9` during `data prepare`                 | the next prepare removes its temp folder, lock free |
| two `data prepare` to one `--out` (with or      | the second exits 1 naming the first (pid, command); |
| without --force)                                | the first finishes untouched                        |
| `train --resume` (plain or by id) of a run      | exits 1 naming the training process; the run's      |
| still training in another process               | files untouched                                     |
| unwritable `--out`                              | one `Error: Cannot write to DIR/ (...)` line        |
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.paused_cli import REPO, paused  # noqa: F401  (fixture)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)

_started: list[subprocess.Popen] = []


@pytest.fixture(autouse=True)
def _no_strays():
    """Whatever a failing test leaves running (its training processes included) is killed."""
    yield
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def _newsclf(*args: str, cwd: Path) -> subprocess.Popen:
    """`newsclf ARGS` in its own process group, so that a signal sent to it reaches it alone."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "newsclf", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    _started.append(proc)
    return proc


def _wait_for(base: Path, pattern: str, proc: subprocess.Popen, timeout: float = 240) -> Path:
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(base.glob(pattern))
        if found:
            return found[0]
        assert proc.poll() is None, f"exited {proc.returncode} first"
        assert time.monotonic() < deadline, f"no {pattern} in {base}"
        time.sleep(0.01)


def test_sigterm_during_prepare_exits_143_with_one_json_document_and_cleans_up(paused, tmp_path):
    out = tmp_path / "data" / "processed"
    proc = paused("prepare", "--json", "data", "prepare", "--demo", "--out", str(out))
    proc.wait_ready()  # its temporary folder is half written
    assert any(p.name.startswith(".processed.tmp-") for p in out.parent.iterdir())

    proc.proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.proc.communicate(timeout=60)

    assert proc.proc.returncode == 143, stderr
    doc = json.loads(stdout)
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("data prepare", "error", 143)
    assert doc["errors"] == ["Terminated (SIGTERM)"]
    assert stderr.splitlines()[-1] == "Error: Terminated (SIGTERM)"
    assert list(out.parent.iterdir()) == []  # no dataset, no temporary folder, no lock file


def test_ctrl_c_still_exits_130(paused, tmp_path):
    out = tmp_path / "data" / "processed"
    proc = paused("prepare", "--json", "data", "prepare", "--demo", "--out", str(out))
    proc.wait_ready()
    proc.proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.proc.communicate(timeout=60)
    assert proc.proc.returncode == 130, stderr
    assert json.loads(stdout)["errors"] == ["Interrupted"]
    assert list(out.parent.iterdir()) == []


def test_sigterm_in_a_sweep_reports_143_in_its_own_document(paused, tiny_data, tiny_model):
    """A command that reports its own interruption (a sweep's summary) says 143 too, not Ctrl-C's 130."""
    sweep = paused("train", "--json", "train", "--data", str(tiny_data), "--model", str(tiny_model), "--epochs", "1",
                   "--batch-size", "8", "--max-length", "64", "--max-train-samples", "16",
                   "--sweep", "lr=3e-3,1e-3")  # fmt: skip
    sweep.wait_ready()  # trial 1 is about to train
    sweep.proc.send_signal(signal.SIGTERM)
    stdout, stderr = sweep.proc.communicate(timeout=120)

    assert sweep.proc.returncode == 143, stderr
    doc = json.loads(stdout)
    assert doc["exit_code"] == 143 and doc["status"] == "error"
    [message] = doc["errors"]
    assert message.startswith("Sweep sweep-") and "interrupted with 0 of 2 trials finished" in message
    assert stderr.splitlines()[-1] == "Error: Terminated (SIGTERM)"


@pytest.mark.slow
def test_sigterm_during_training_keeps_the_json_document_and_the_resume_hint(cli, tiny_data, tiny_model, tmp_path):
    run = "20261130-120000-TERM"
    proc = _newsclf("--json", "train", "--data", str(tiny_data), "--model", str(tiny_model), "--epochs", "6",
                    "--batch-size", "8", "--lr", "3e-3", "--max-length", "64", "--warmup-ratio", "0",
                    "--patience", "9", "--run-id", run, cwd=tmp_path)  # fmt: skip
    _wait_for(tmp_path / "models" / run, "checkpoints/checkpoint-*/trainer_state.json", proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 143, stderr
    doc = json.loads(stdout)
    assert (doc["command"], doc["status"], doc["exit_code"]) == ("train", "error", 143)
    assert doc["errors"] == ["Terminated (SIGTERM)"]
    hint = f"Training interrupted; continue it with `newsclf train --resume {run}`"
    assert doc["warnings"] == [hint]
    assert f"Warning: {hint}" in stderr and stderr.splitlines()[-1] == "Error: Terminated (SIGTERM)"
    assert not (tmp_path / "models" / run / "metrics.json").exists()

    os.chdir(tmp_path)
    r = cli("--json", "train", "--resume", run)  # the hint works
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["metrics"]["train"]["resumed_from_step"] >= 12


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_every_training_process(tiny_data, tiny_model, tmp_path):
    """`docker stop` signals PID 1 only: with --num-processes the launcher passes SIGTERM on to the ranks."""
    from newsclf import locks

    run = "20261130-120000-DDPTERM"
    proc = _newsclf("--json", "train", "--data", str(tiny_data), "--model", str(tiny_model), "--epochs", "1000",
                    "--batch-size", "8", "--lr", "3e-3", "--max-length", "64", "--warmup-ratio", "0",
                    "--patience", "1000", "--num-processes", "2", "--run-id", run, cwd=tmp_path)  # fmt: skip
    run_dir = tmp_path / "models" / run
    _wait_for(run_dir, "checkpoints/checkpoint-*/trainer_state.json", proc)
    proc.send_signal(signal.SIGTERM)  # the launcher only, not its process group
    stdout, stderr = proc.communicate(timeout=60)  # the ranks would train for an hour if nobody told them

    assert proc.returncode == 143, stderr
    doc = json.loads(stdout)
    assert doc["exit_code"] == 143 and doc["errors"] == ["Terminated (SIGTERM)"]
    assert f"continue it with `newsclf train --resume {run}`" in stderr  # rank 0's hint
    assert not (run_dir / "metrics.json").exists()
    with locks.hold(run_dir.resolve(), what="run", fix="-"):  # rank 0 is gone: its lock is free
        pass


@pytest.mark.slow
def test_sigterm_in_a_job_uploads_a_checkpoint_and_the_retry_resumes_from_it(cli, gcs, paused, tiny_data, tiny_model,
                                                                              tmp_path):  # fmt: skip
    from newsclf.cloud.storage.upload import upload_dir

    run = "20261130-120000-PREEMPTED"
    upload_dir(gcs, gcs.test_bucket, tiny_data, "data/processed/")
    flags = ["--model", str(tiny_model), "--epochs", "6", "--batch-size", "8", "--lr", "3e-3", "--max-length", "64",
             "--warmup-ratio", "0", "--patience", "9"]  # fmt: skip
    job = paused("step:14", "job", "--run-id", run, "--workdir", str(tmp_path / "vm1"), *flags)
    job.wait_ready(timeout=240)  # in step 15, two steps into epoch 2 (12 steps an epoch): the VM is preempted now
    t0 = time.monotonic()
    job.proc.send_signal(signal.SIGTERM)
    rc, _, log = job.go(timeout=60)
    took = time.monotonic() - t0

    assert rc == 143, log
    assert took < 25, log  # within the ~30 s a preempted VM gets
    assert log.splitlines()[-1] == "Error: Terminated (SIGTERM)"
    assert "SIGTERM: saving and uploading a checkpoint at step 15, then stopping" in log
    bucket = gcs.bucket(gcs.test_bucket)
    status = json.loads(bucket.blob(f"runs/{run}/status.json").download_as_bytes())
    assert status["state"] == "interrupted" and status["exit_code"] == 143, status
    assert status["error"] == (
        f"SIGTERM (the VM stopping, or `docker stop`): it resumes from gs://{gcs.test_bucket}/runs/{run}/checkpoints/ "
        "when the job starts again"
    )
    names = {b.name for b in gcs.list_blobs(gcs.test_bucket, prefix=f"runs/{run}/")}
    assert f"runs/{run}/checkpoints/checkpoint-15/trainer_state.json" in names  # the step in flight, uploaded
    assert f"runs/{run}/metrics.json" not in names

    # the VM starts again: a fresh disk, the same run id; it loses nothing
    r = cli("--json", "job", "--run-id", run, "--workdir", tmp_path / "vm2", *flags)
    assert r.exit_code == 0, r.stderr
    status = json.loads(bucket.blob(f"runs/{run}/status.json").download_as_bytes())
    assert status["state"] == "succeeded" and status["attempt"] == 2
    metrics = json.loads(bucket.blob(f"runs/{run}/metrics.json").download_as_bytes())
    assert metrics["train"]["resumed_from_step"] == 15
    assert [e["epoch"] for e in metrics["validation"]] == [1, 2, 3, 4, 5, 6]
