"""newsclf.cloud.batch through the real batch_v1 client (REST) against the Batch stand-in: the job spec as
Google's batch.v1 contract takes it, retries as Batch applies them, cancel and delete; and the task side,
`newsclf job --sweep-plan`, refusing what it cannot run."""

from __future__ import annotations

import json
import threading

import pytest

from tests.batch_standin import ThreadTask, batch  # noqa: F401  (fixtures)

SWEEP = "sweep-1a2b3c4d"
IMAGE = "europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:latest"


def _request(job_id: str, **changes):
    from newsclf.cloud import batch as b

    fields = dict(project="test-project", region="europe-west1", job_id=job_id, sweep_id=SWEEP,
                  bucket="my-newsclf-bucket", plan=f"sweeps/{SWEEP}/{job_id}.json", task_count=3, parallel=2,
                  image=IMAGE, machine_type="n1-standard-8")  # fmt: skip
    return b.SweepJobRequest(**{**fields, **changes})


@pytest.fixture
def client(batch):
    from newsclf.cloud import batch as b
    from newsclf.config import Settings

    return b.make_client(Settings(batch_api_endpoint=batch.url))


def _exits(codes: dict[tuple[int, int], int], seen: list):
    """A runner whose task `index`, attempt `attempt` exits codes[(index, attempt)] (default 0)."""

    def fn(task, stop):
        seen.append((task.index, task.attempt, task.env["BATCH_TASK_INDEX"], task.env["BATCH_TASK_RETRY_ATTEMPT"]))
        return codes.get((task.index, task.attempt), 0)

    return lambda task: ThreadTask(fn, task)


def test_retries_follow_the_lifecycle_policy(batch, client):
    from newsclf.cloud import batch as b

    seen: list = []
    # task 0 crashes once (retried), task 1 fails by itself (exit 3: not retried), task 2 always crashes
    batch.runner = _exits({(0, 0): 1, (1, 0): b.TRIAL_FAILED_EXIT, **{(2, i): 137 for i in range(5)}}, seen)
    job = b.submit(client, _request("newsclf-1a2b3c4d-20261130-120000-abcd"))
    assert job.state == "QUEUED" and job.task_count == 3 and job.parallelism == 2 and job.sweep_id == SWEEP
    batch.wait_job()
    infos = b.tasks(client, job.name)
    assert {i: (t.state, t.attempts, t.exit_codes) for i, t in infos.items()} == {
        0: ("SUCCEEDED", 2, [1]),
        1: ("FAILED", 1, [3]),
        2: ("FAILED", 1 + b.MAX_RETRIES, [137] * (1 + b.MAX_RETRIES)),
    }
    assert sorted(s[:2] for s in seen) == sorted([(0, 0), (0, 1), (1, 0), *((2, i) for i in range(4))])
    assert all(s[2] == str(s[0]) and s[3] == str(s[1]) for s in seen)
    [listed] = b.list_jobs(client, "test-project", "europe-west1", sweep_id=SWEEP)
    assert listed.state == "FAILED" and listed.counts == {"SUCCEEDED": 1, "FAILED": 2}
    assert b.list_jobs(client, "test-project", "europe-west1", sweep_id="sweep-other") == []


def test_wandb_secret_reaches_the_task_as_a_variable_only(batch, client):
    from newsclf.cloud import batch as b

    batch.secrets["projects/test-project/secrets/wandb-key/versions/latest"] = "the-key"
    got = {}

    def fn(task, stop):
        got.update(task.env)
        return 0

    batch.runner = lambda task: ThreadTask(fn, task)
    b.submit(client, _request("newsclf-1a2b3c4d-20261130-120000-0001", task_count=1, wandb_secret="wandb-key",
                              gpu=("nvidia-l4", 2), spot=True))  # fmt: skip
    batch.wait_job()
    [body] = batch.created_jobs()
    spec = body["taskGroups"][0]["taskSpec"]
    assert spec["environment"]["secretVariables"] == {
        "WANDB_API_KEY": "projects/test-project/secrets/wandb-key/versions/latest"
    }
    assert "the-key" not in json.dumps(body)
    assert got["WANDB_API_KEY"] == "the-key"
    policy = body["allocationPolicy"]["instances"][0]
    assert policy["installGpuDrivers"] is True and policy["policy"]["provisioningModel"] == "SPOT"
    assert policy["policy"]["accelerators"] == [{"type": "nvidia-l4", "count": "2"}]


def test_a_task_over_its_run_limit_is_stopped(batch, client):
    from newsclf.cloud import batch as b

    def fn(task, stop):
        stop.wait(30)
        return 0

    batch.runner = lambda task: ThreadTask(fn, task)
    spec = b.job_spec(_request("newsclf-1a2b3c4d-20261130-120000-0002", task_count=1))
    assert spec["taskGroups"][0]["taskSpec"]["maxRunDuration"] == "21600s"  # --max-hours 6
    spec["taskGroups"][0]["taskSpec"].update(maxRunDuration="0.2s", maxRetryCount=0)  # what a 6 h limit does, fast
    from google.cloud import batch_v1

    client.create_job(parent="projects/test-project/locations/europe-west1", job_id="limit-test",
                      job=batch_v1.Job.from_json(json.dumps(spec)))  # fmt: skip
    job = batch.wait_job()
    assert job.state == "FAILED"
    assert [e.get("taskExecution", {}).get("exitCode") for e in job.tasks[0].events if e["taskState"] == "FAILED"] == [
        50005
    ]


def test_stop_cancels_running_tasks_then_deletes_the_job(batch, client):
    from newsclf.cloud import batch as b

    started = threading.Event()

    def fn(task, stop):
        started.set()
        stop.wait(60)
        return 0

    batch.runner = lambda task: ThreadTask(fn, task)
    job = b.submit(client, _request("newsclf-1a2b3c4d-20261130-120000-0003"))
    assert started.wait(30)
    result = b.stop_job(client, job, poll_s=0.02)
    assert (result.cancelled, result.deleted) == (True, True)
    assert b.get_job(client, job.name) is None and batch.jobs == {}
    assert len(batch.started) == 2  # the third task never started
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in batch.calls(path=job.job_id) if r.method != "GET"] == [
        ("POST", f"{job.job_id}:cancel"),
        ("DELETE", job.job_id),
    ]


def test_the_stand_in_rejects_what_batch_would(batch, client):
    from google.cloud import batch_v1

    from newsclf.cloud import batch as b

    spec = b.job_spec(_request("newsclf-1a2b3c4d-20261130-120000-0004"))
    spec["labels"]["Newsclf"] = "Sweep"
    spec["taskGroups"][0]["taskSpec"]["maxRetryCount"] = 11
    spec["allocationPolicy"]["location"]["allowedLocations"] = ["regions/us-central1"]
    with pytest.raises(Exception) as e:
        client.create_job(parent="projects/test-project/locations/europe-west1", job_id="Bad_Id",
                          job=batch_v1.Job.from_json(json.dumps(spec)))  # fmt: skip
    assert "400" in str(e.value)
    [(_, errors)] = batch.violations
    assert any("jobId" in x for x in errors) and any("maxRetryCount" in x for x in errors)
    assert any("outside the job's region" in x for x in errors) and any("'Newsclf'" in x for x in errors)
    batch.violations.clear()  # expected here


def test_job_sweep_plan_needs_its_task_index_and_plan(cli, gcs, monkeypatch):
    r = cli("job", "--bucket", gcs.test_bucket, "--sweep-plan", f"sweeps/{SWEEP}/job.json")
    assert r.exit_code == 2 and "BATCH_TASK_INDEX is not set" in r.stderr
    monkeypatch.setenv("BATCH_TASK_INDEX", "0")
    r = cli("job", "--bucket", gcs.test_bucket, "--sweep-plan", f"sweeps/{SWEEP}/job.json")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: No sweep plan at gs://{gcs.test_bucket}/sweeps/{SWEEP}/job.json: `newsclf cloud run --sweep` "
        "writes it before it submits the job"
    )
    r = cli("job", "--sweep-plan", "x.json", "--run-id", "20261127-120000-abc123")
    assert r.exit_code == 2 and "drop --run-id and the train options" in r.stderr
    r = cli("job", "--bucket", gcs.test_bucket)
    assert r.exit_code == 2 and "give the run to execute" in r.stderr


def test_a_trial_failing_by_itself_exits_with_the_code_batch_does_not_retry(cli, gcs, monkeypatch, tmp_path):
    from newsclf.cloud import batch as b
    from newsclf.cloud.storage.objects import write_json

    bucket = gcs.bucket(gcs.test_bucket)
    bucket.blob("data/processed/manifest.json").upload_from_string("{}")  # no real data: training fails early
    run = "20261130-120000-abc123"
    write_json(bucket, f"sweeps/{SWEEP}/job.json", {
        "plan_version": 1, "sweep_id": SWEEP, "job_id": "job", "metric": "macro_f1", "grid": {"lr": [0.001]},
        "train_args": ["--model", str(tmp_path / "no-such-model"), "--epochs", "1"],
        "tasks": [{"trial": 1, "run_id": run, "params": {"lr": 0.001}}],
    })  # fmt: skip
    monkeypatch.setenv("BATCH_TASK_INDEX", "0")
    monkeypatch.setenv("BATCH_JOB_ID", "job")
    r = cli("--json", "job", "--bucket", gcs.test_bucket, "--sweep-plan", f"sweeps/{SWEEP}/job.json",
            "--workdir", tmp_path / "work")  # fmt: skip
    assert r.exit_code == b.TRIAL_FAILED_EXIT, r.stderr
    status = json.loads(bucket.blob(f"runs/{run}/status.json").download_as_bytes())
    assert status["state"] == "failed" and status["error"]
    assert r.json["errors"] == [
        f"Trial 1 (lr=0.001) failed: {status['error']} (recorded in gs://{gcs.test_bucket}/runs/{run}/status.json)"
    ]
    assert bucket.blob(f"runs/{run}/logs/batch-job-task0-attempt0.log").exists()  # `cloud logs RUN` has it
