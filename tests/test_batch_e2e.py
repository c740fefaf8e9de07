"""End to end, no cloud: `newsclf cloud run --sweep` in a process of its own → the Batch stand-in, which
runs each task as the real `newsclf job --sweep-plan` against fake-gcs-server, two at a time → one task
preempted mid-trial and retried (it resumes from its synced checkpoint) → the client killed halfway,
the sweep going on without it → `cloud status`, the same command again, `cloud logs`, `cloud stop --sweep`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.batch_standin import batch, container_runner  # noqa: F401  (fixtures)
from tests.compute_standin import standin  # noqa: F401  (fixtures)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

GRID = "lr=3e-3,1e-3,5e-4,2e-4"


def _train_args(model) -> list[str]:
    # two epochs: the preempted trial has one synced checkpoint and an epoch still to go
    return ["--model", str(model), "--epochs", "2", "--batch-size", "8", "--max-length", "32",
            "--warmup-ratio", "0", "--max-train-samples", "16", "--patience", "9"]  # fmt: skip


@pytest.fixture
def bucket_with_data(standin, tiny_data):
    bucket = standin.gcs.bucket(standin.gcs.test_bucket)
    for path in sorted(tiny_data.iterdir()):
        bucket.blob(f"data/processed/{path.name}").upload_from_filename(str(path))
    return bucket


def _doc(bucket, name: str) -> dict:
    return json.loads(bucket.blob(name).download_as_bytes())


def test_sweep_survives_a_preemption_and_the_client_killed(cli, standin, batch, fake_gcs, bucket_with_data,
                                                           tiny_model, tmp_path):  # fmt: skip
    batch.runner = container_runner(fake_gcs.url, tmp_path / "tasks")
    bucket = bucket_with_data

    def first_trial_synced_a_checkpoint() -> bool:
        """Task 0's job said its first checkpoint is in the bucket (uploaded whole, not half-way)."""
        logs = list(batch.workdir.glob("*-task0-attempt0.log"))
        return bool(logs) and "synced to" in logs[0].read_text(errors="replace")

    batch.preempt(None, 0, when=first_trial_synced_a_checkpoint)
    args = ["cloud", "run", "--sweep", GRID, "--parallel", "2", "--poll-interval", "0.2", "--",
            *_train_args(tiny_model)]  # fmt: skip
    client = subprocess.Popen([sys.executable, "-m", "newsclf", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    try:
        assert batch.task_started.wait(120), client.stderr.read().decode() if client.poll() is not None else ""
    finally:
        client.send_signal(signal.SIGKILL)  # the laptop closes: nothing is told, nothing is cleaned up
        client.wait(30)
    assert client.returncode == -signal.SIGKILL
    [body] = batch.created_jobs()
    job_id = batch.job().job_id
    sid = body["labels"]["newsclf-sweep"]

    status = cli("--json", "cloud", "status")
    assert status.exit_code == 0, status.stderr
    [row] = status.json["data"]["sweep_jobs"]
    assert (row["job_id"], row["sweep_id"], row["state"]) == (job_id, sid, "RUNNING")
    assert row["task_count"] == 4 and row["parallelism"] == 2 and row["tasks"].get("RUNNING", 0) >= 1

    job = batch.wait_job(job_id, timeout=600)
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(batch.workdir.glob("*.log")))
    assert job.state == "SUCCEEDED", logs
    assert sorted((s.index, s.attempt) for s in batch.started) == [(0, 0), (0, 1), (1, 0), (2, 0), (3, 0)]
    assert max(len([s for s in batch.started if s.index == i]) for i in range(4)) == 2  # one retry in all
    preempted = [e for e in job.tasks[0].events if e["taskState"] == "FAILED"]
    assert [e["taskExecution"]["exitCode"] for e in preempted] == [50001]

    # the preempted trial: the same run, attempt 2, resumed from the checkpoint it had synced
    plan = _doc(bucket, f"sweeps/{sid}/{job_id}.json")
    first = plan["tasks"][0]["run_id"]
    killed_log = (batch.workdir / f"{job_id}-task0-attempt0.log").read_text()
    assert "Checkpoint at step 2 synced" in killed_log and "succeeded" not in killed_log
    run_status = _doc(bucket, f"runs/{first}/status.json")
    assert run_status["state"] == "succeeded" and run_status["attempt"] == 2
    retry_log = (batch.workdir / f"{job_id}-task0-attempt1.log").read_text()
    assert f"Resuming from the checkpoints in gs://{bucket.name}/runs/{first}/checkpoints/" in retry_log
    metrics = _doc(bucket, f"runs/{first}/metrics.json")
    assert [e["epoch"] for e in metrics["validation"]] == [1, 2]

    # the same command: nothing left to run, the table from the bucket
    r = cli("--json", *args)
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert len(batch.created_jobs()) == 1 and data["sweep_id"] == sid
    assert data["counts"]["succeeded"] == 4 and [t["rank"] for t in data["trials"]] == [1, 2, 3, 4]
    assert sorted(t["run_id"] for t in data["trials"]) == sorted(t["run_id"] for t in plan["tasks"])
    for t in data["trials"]:
        config = _doc(bucket, f"runs/{t['run_id']}/run.json")
        assert (config["sweep_id"], config["sweep_params"], config["sweep_trial"]) == (sid, t["params"], t["trial"])
        assert "planned" not in config and config["epochs"] == 2.0  # the run's own run.json, published
        assert t["objective"] == _doc(bucket, f"runs/{t['run_id']}/metrics.json")["best_validation"]["macro_f1"]

    # a trial's log, uploaded by its task
    log = cli("--json", "cloud", "logs", first)
    assert log.exit_code == 0, log.stderr
    assert any("Resuming from the checkpoints" in line for line in log.json["data"]["lines"])

    # stop: the finished job is deleted, and Batch no longer lists it
    stop = cli("--json", "cloud", "stop", "--sweep", sid, "--poll-interval", "0.05")
    assert stop.exit_code == 0, stop.stderr
    assert stop.json["data"]["jobs"] == [{"job_id": job_id, "before": "SUCCEEDED", "cancelled": False, "deleted": True}]
    assert cli("--json", "cloud", "status").json["data"]["sweep_jobs"] == []
