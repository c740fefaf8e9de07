"""`newsclf cloud run --sweep` on Cloud Batch: the real batch_v1 client (REST) against the Batch stand-in,
which runs the job's tasks; the real storage client against fake-gcs-server. Here each task is a
thread playing `newsclf job --sweep-plan` (FakeTrial); tests/test_batch_e2e.py runs the real one."""

from __future__ import annotations

import json
import threading

from tests.batch_standin import ThreadTask, batch  # noqa: F401  (fixtures)
from tests.compute_standin import standin  # noqa: F401  (fixtures)

POLL = ("--poll-interval", "0.05")


def _image() -> str:
    from newsclf import __version__

    return f"europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:{__version__}"  # what `cloud build` pushed


class FakeTrial:
    """A task the way `newsclf job --sweep-plan` runs it: its trial from the plan by BATCH_TASK_INDEX,
    status.json (running, with an evaluation in `progress`), metrics.json with macro-F1 = 1 - lr, status
    succeeded; a trial with lr >= 0.5 fails by itself ("loss is nan", exit 3), except lr = 0.7, which
    crashes (exit 139) without a final status."""

    def __init__(self, gcs, hold: threading.Event | None = None) -> None:
        self.gcs = gcs
        self.hold = hold  # each attempt waits for it (or for a kill) before it finishes
        self.running = threading.Event()  # set once an attempt has written status running

    def __call__(self, task) -> ThreadTask:
        return ThreadTask(self.run, task)

    def _put(self, bucket, name, doc) -> None:
        self.gcs.bucket(bucket).blob(name).upload_from_string(json.dumps(doc), content_type="application/json")

    def run(self, task, stop: threading.Event) -> int:
        cmd = task.runnable["container"]["commands"]
        bucket, plan = cmd[cmd.index("--bucket") + 1], cmd[cmd.index("--sweep-plan") + 1]
        doc = json.loads(self.gcs.bucket(bucket).blob(plan).download_as_bytes())
        entry = doc["tasks"][int(task.env["BATCH_TASK_INDEX"])]
        run_id, lr = entry["run_id"], entry["params"]["lr"]
        status_name = f"runs/{run_id}/status.json"
        blob = self.gcs.bucket(bucket).blob(status_name)
        previous = json.loads(blob.download_as_bytes()) if blob.exists() else {}
        now = "2026-01-01T00:00:00Z"
        f1 = round(1 - lr, 4)
        status = {"run_id": run_id, "state": "running", "started_at": now, "exit_code": None,
                  "attempt": int(previous.get("attempt") or 0) + 1,
                  "progress": {"epoch": 1.0, "step": 2, "max_steps": 2, "validation": {"macro_f1": f1, "loss": lr}}}  # fmt: skip
        self._put(bucket, status_name, status)
        self.running.set()
        if self.hold is not None:
            while not self.hold.is_set() and not stop.is_set():
                self.hold.wait(0.02)
        if stop.is_set():
            return 137  # killed: the stand-in reports why
        if lr == 0.7:
            return 139  # a crash that leaves status.json `running`, every time
        if lr >= 0.5:
            self._put(bucket, status_name, {**status, "state": "failed", "exit_code": 1, "error": "loss is nan",
                                            "finished_at": now})  # fmt: skip
            return 3
        best = {"epoch": 1.0, "accuracy": f1, "macro_f1": f1, "precision": f1, "recall": f1, "loss": lr}
        metrics = {"run_id": run_id, "validation": [best], "best_validation": best,
                   "test": {**best, "epoch": None}, "train": {"runtime_s": 1.5, "epochs_completed": 1.0}}  # fmt: skip
        self._put(bucket, f"runs/{run_id}/metrics.json", metrics)
        self._put(bucket, status_name, {**status, "state": "succeeded", "exit_code": 0, "finished_at": now})
        return 0


def release_after(condition, event: threading.Event, timeout: float = 30) -> None:
    """Set `event` once `condition()` holds (checked against the stand-in's records, not a fixed sleep)."""
    import time

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    event.set()


def run_json(gcs, run_id: str) -> dict:
    return json.loads(gcs.bucket(gcs.test_bucket).blob(f"runs/{run_id}/run.json").download_as_bytes())


def test_sweep_is_one_batch_job_with_one_task_per_trial(cli, standin, batch):
    batch.runner = FakeTrial(standin.gcs)
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.5", "--parallel", "2", "--gpu", "nvidia-tesla-t4:1",
            "--spot", "--max-hours", "2", *POLL, "--", "--epochs", "1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    sid = data["sweep_id"]
    [body] = batch.created_jobs()
    [create] = batch.calls("POST", r"/jobs$")
    assert create.path == "/v1/projects/test-project/locations/europe-west1/jobs"
    assert create.query["jobId"] == data["job_id"] and data["job_id"].startswith(
        f"newsclf-{sid.removeprefix('sweep-')}-"
    )
    [group] = body["taskGroups"]
    assert (group["taskCount"], group["parallelism"], group["taskCountPerNode"]) == ("3", "2", "1")
    spec = group["taskSpec"]
    plan = f"sweeps/{sid}/{data['job_id']}.json"
    assert spec["runnables"][0]["container"] == {
        "imageUri": _image(), "entrypoint": "newsclf",
        "commands": ["job", "--bucket", standin.gcs.test_bucket, "--sweep-plan", plan],
    }  # fmt: skip
    assert spec["maxRunDuration"] == "7200s" and spec["maxRetryCount"] == 3
    # a trial failing by itself (exit 3) is not retried; preemption and lost VMs are
    assert spec["lifecyclePolicies"] == [{"action": "FAIL_TASK", "actionCondition": {"exitCodes": [3]}}]
    [instances] = body["allocationPolicy"]["instances"]
    assert instances == {
        "policy": {"machineType": "n1-standard-8", "provisioningModel": "SPOT", "bootDisk": {"sizeGb": "100"},
                   "accelerators": [{"type": "nvidia-tesla-t4", "count": "1"}]},
        "installGpuDrivers": True,
    }  # fmt: skip
    assert body["allocationPolicy"]["location"] == {"allowedLocations": ["regions/europe-west1"]}
    assert body["allocationPolicy"]["serviceAccount"] == {"email": "newsclf-vm@test-project.iam.gserviceaccount.com"}
    assert body["labels"] == {"newsclf": "sweep", "newsclf-sweep": sid}
    assert body["logsPolicy"] == {"destination": "CLOUD_LOGGING"}
    assert "secretVariables" not in spec["environment"]

    # the plan the tasks read, and the tasks as the stand-in ran them: two at once, one per trial
    doc = json.loads(standin.gcs.bucket(standin.gcs.test_bucket).blob(plan).download_as_bytes())
    assert doc["train_args"] == ["--epochs", "1"] and [t["params"] for t in doc["tasks"]] == [
        {"lr": 0.1},
        {"lr": 0.2},
        {"lr": 0.5},
    ]
    assert sorted((s.index, s.attempt) for s in batch.started) == [(0, 0), (1, 0), (2, 0)]
    assert {s.env["BATCH_TASK_COUNT"] for s in batch.started} == {"3"}

    assert data["counts"] == {"trials": 3, "succeeded": 2, "failed": 1, "pending": 0, "running": 0, "interrupted": 0}
    assert [(t["trial"], t["params"], t["status"], t["rank"], t["best"]) for t in data["trials"]] == [
        (1, {"lr": 0.1}, "succeeded", 1, True),
        (2, {"lr": 0.2}, "succeeded", 2, False),
        (3, {"lr": 0.5}, "failed", None, False),
    ]
    assert data["trials"][2]["error"] == "loss is nan"
    assert [t["run_id"] for t in data["trials"]] == [t["run_id"] for t in doc["tasks"]]
    for t in data["trials"]:
        record = run_json(standin.gcs, t["run_id"])
        assert (record["sweep_id"], record["sweep_params"], record["sweep_trial"]) == (sid, t["params"], t["trial"])
    assert r.json["warnings"] == ["Trial 3/3 (lr=0.5) failed: loss is nan"]

    # the same table later, from the bucket alone
    again = cli("--json", "models", "list", "--sweep", sid)
    keep = ("trial", "params", "run_id", "status", "objective", "rank", "best", "error")
    assert [{k: t[k] for k in keep} for t in again.json["data"]["trials"]] == [
        {k: t[k] for k in keep} for t in data["trials"]
    ]

    # `cloud status`: the job with its tasks by state and a cost estimate
    status = cli("--json", "cloud", "status")
    assert status.exit_code == 0, status.stderr
    [job] = status.json["data"]["sweep_jobs"]
    assert (job["job_id"], job["sweep_id"], job["state"]) == (data["job_id"], sid, "FAILED")
    assert job["tasks"] == {"SUCCEEDED": 2, "FAILED": 1} and job["retries"] == 0
    assert job["est_usd_per_hour"] == 0.0 and job["est_usd_so_far"] > 0
    human = cli("cloud", "status")
    assert data["job_id"] in human.stdout and "2 succeeded, 1 failed (of 3)" in human.stdout


def test_a_preempted_trial_is_retried_by_batch(cli, standin, batch):
    fake = FakeTrial(standin.gcs, hold=threading.Event())
    batch.runner = fake
    batch.preempt(None, 1, when=fake.running.is_set)
    # task 1 is preempted once it runs; then the trials may finish
    threading.Thread(target=release_after, args=(lambda: len(batch.started) == 3, fake.hold), daemon=True).start()
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2", "--parallel", "2", "--spot", *POLL)
    assert r.exit_code == 0, r.stderr
    assert sorted((s.index, s.attempt) for s in batch.started) == [(0, 0), (1, 0), (1, 1)]
    assert [t["status"] for t in r.json["data"]["trials"]] == ["succeeded", "succeeded"]
    run = r.json["data"]["trials"][1]["run_id"]
    status = json.loads(standin.gcs.bucket(standin.gcs.test_bucket).blob(f"runs/{run}/status.json").download_as_bytes())
    assert status["attempt"] == 2  # the same run, resumed
    events = batch.job().tasks[1].events
    assert [e.get("taskExecution", {}).get("exitCode") for e in events if e["taskState"] == "FAILED"] == [50001]
    [job] = cli("--json", "cloud", "status").json["data"]["sweep_jobs"]
    assert job["state"] == "SUCCEEDED" and job["retries"] == 1


def test_detached_sweep_goes_on_and_the_same_command_follows_it(cli, standin, batch):
    fake = FakeTrial(standin.gcs, hold=threading.Event())
    batch.runner = fake
    args = ("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2", *POLL)
    r = cli(*args, "--detach")
    assert r.exit_code == 0, r.stderr
    sid, job_id = r.json["data"]["sweep_id"], r.json["data"]["job_id"]
    assert r.json["data"]["state"] == "detached"
    assert fake.running.wait(30)
    status = cli("--json", "cloud", "status").json["data"]
    [job] = status["sweep_jobs"]
    assert job["state"] == "RUNNING" and job["tasks"] == {"PENDING": 1, "RUNNING": 2}

    # again: the running job is followed, not submitted twice (the trials finish once it has looked)
    lists = len(batch.calls("GET", "/jobs$"))
    threading.Thread(target=release_after, args=(lambda: len(batch.calls("GET", "/jobs$")) > lists, fake.hold),
                     daemon=True).start()  # fmt: skip
    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    assert len(batch.created_jobs()) == 1
    assert (again.json["data"]["job_id"], again.json["data"]["attached"]) == (job_id, True)
    assert [t["status"] for t in again.json["data"]["trials"]] == ["succeeded"] * 3

    # and once more: nothing left to run
    done = cli(*args[1:])
    assert done.exit_code == 0 and len(batch.created_jobs()) == 1
    assert f"Sweep {sid}: all 3 trials already succeeded" in done.stderr


def test_rerun_submits_only_the_trials_that_did_not_succeed(cli, standin, batch):
    batch.runner = FakeTrial(standin.gcs)
    first = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.5", *POLL)
    assert first.exit_code == 0, first.stderr
    ok = {t["trial"]: t["run_id"] for t in first.json["data"]["trials"]}
    r = cli("cloud", "run", "--sweep", "lr=0.1,0.5", *POLL)
    assert r.exit_code == 0, r.stderr
    second = batch.created_jobs()[1]
    assert second["taskGroups"][0]["taskCount"] == "1"
    plan = second["taskGroups"][0]["taskSpec"]["runnables"][0]["container"]["commands"][-1]
    doc = json.loads(standin.gcs.bucket(standin.gcs.test_bucket).blob(plan).download_as_bytes())
    assert [t["params"] for t in doc["tasks"]] == [{"lr": 0.5}] and doc["tasks"][0]["run_id"] != ok[2]
    assert f"* best: trial 1 (lr=0.1), run {ok[1]}" in r.stdout


def test_all_trials_failing_exits_non_zero(cli, standin, batch):
    batch.runner = FakeTrial(standin.gcs)
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.5,0.6", "--parallel", "2", *POLL)
    assert r.exit_code == 1
    sid = r.json["data"]["sweep_id"]
    assert r.json["errors"][0].startswith(f"All 2 trials of sweep {sid} failed (trial 1: loss is nan)")
    assert r.stderr.strip().splitlines()[-1].startswith(f"Error: All 2 trials of sweep {sid} failed")
    assert len(batch.started) == 2  # failed by themselves: not retried


def test_stop_sweep_cancels_the_job_and_waits_until_it_is_gone(cli, standin, batch):
    fake = FakeTrial(standin.gcs, hold=threading.Event())  # never released: only a cancel ends the tasks
    batch.runner = fake
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2", "--detach", *POLL)
    sid, job_id = r.json["data"]["sweep_id"], r.json["data"]["job_id"]
    assert fake.running.wait(30)
    refused = cli("cloud", "stop", "--sweep", sid)
    assert refused.exit_code == 1
    assert refused.stderr.strip() == (
        f"Error: Cancel Batch job {job_id} of sweep {sid}, stopping 2 running trials: pass --yes to confirm"
    )
    stop = cli("--json", "cloud", "stop", "--sweep", sid, "--yes", "--poll-interval", "0.05")
    assert stop.exit_code == 0, stop.stderr
    assert stop.json["data"]["jobs"] == [{"job_id": job_id, "before": "RUNNING", "cancelled": True, "deleted": True}]
    assert [c.path.rsplit("/", 1)[-1] for c in batch.calls("POST", ":cancel$")] == [f"{job_id}:cancel"]
    assert len(batch.calls("DELETE", f"/jobs/{job_id}$")) == 1
    assert batch.jobs == {}  # gone
    assert cli("--json", "cloud", "status").json["data"]["sweep_jobs"] == []
    again = cli("cloud", "stop", "--sweep", sid)
    assert again.exit_code == 0 and "nothing to stop" in again.stdout
    # the trials that ran keep their state in the bucket; the next run of the command resumes them
    trials = cli("--json", "models", "list", "--sweep", sid).json["data"]["trials"]
    assert sorted(t["status"] for t in trials) == ["pending", "running", "running"]
    fake.hold.set()
    again = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2", *POLL)
    assert again.exit_code == 0, again.stderr
    assert again.json["data"]["job_id"] != job_id and len(batch.created_jobs()) == 2
    assert {t["run_id"] for t in again.json["data"]["trials"]} == {t["run_id"] for t in trials}  # same runs, resumed
    assert [t["status"] for t in again.json["data"]["trials"]] == ["succeeded"] * 3


def test_sweep_flags_are_checked_before_anything_is_submitted(cli, standin, batch):
    r = cli("cloud", "run", "--parallel", "2")
    assert r.exit_code == 2 and "--parallel runs a sweep's trials on several VMs" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3", "--resume", "20260101-000000-abcdef")
    assert r.exit_code == 2 and "a sweep carries on when you run the same command again" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3", "--zone", "europe-west1-c", "--keep-vm")
    assert r.exit_code == 2 and "--keep-vm, --zone concern a single run's VM" in r.stderr
    r = cli("cloud", "run", "--sweep", "lrr=1e-3")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: Unknown sweep parameter 'lrr': did you mean lr? (sweepable: lr, batch_size,")
    r = cli("cloud", "run", "--sweep", "lr=1e-3,2e-3", "--", "--lr", "1e-3")
    assert r.exit_code == 2 and "--lr is both swept and given after `--`" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3", "--", "--sweep", "lr=1")
    assert r.exit_code == 2 and "give the sweep to `newsclf cloud run` itself" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3,2e-3", "--gpu", "nvidia-tesla-v100:1")
    assert r.exit_code == 1 and r.stderr.startswith("Error: --gpu nvidia-tesla-v100 (")
    r = cli("cloud", "stop", "--sweep", "sweep-1a2b3c4d", "--delete")
    assert r.exit_code == 2 and "go with it: drop --delete" in r.stderr
    assert batch.requests == []


def test_a_disabled_batch_api_names_cloud_setup(cli, standin, batch):
    from tests.google_errors import service_disabled

    batch.fail("GET", "/jobs$", service_disabled("batch.googleapis.com", "Batch API"))
    r = cli("cloud", "run", "--sweep", "lr=0.1,0.2", *POLL)
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("Error: The Batch API is not enabled in project test-project: run `newsclf cloud setup` (")
    assert batch.created_jobs() == []


def test_ctrl_c_detaches_and_the_sweep_goes_on(cli, standin, batch):
    import _thread

    fake = FakeTrial(standin.gcs, hold=threading.Event())
    batch.runner = fake
    # Ctrl-C once a trial runs and the command follows the job
    followed = threading.Event()

    def ctrl_c() -> None:
        release_after(lambda: fake.running.is_set() and len(batch.calls("GET", "/tasks$")) >= 2, followed)
        _thread.interrupt_main()

    threading.Thread(target=ctrl_c, daemon=True).start()
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2", *POLL)
    assert r.exit_code == 130, r.stderr
    sid, job_id = r.json["data"]["sweep_id"], r.json["data"]["job_id"]
    assert r.json["errors"] == [
        f"Detached from sweep {sid}: Batch job {job_id} goes on running its trials; run the same command again to "
        "follow it"
    ]
    assert batch.job(job_id).state == "RUNNING" and batch.calls("POST", ":cancel$") == []
    fake.hold.set()
    assert batch.wait_job(job_id).state == "SUCCEEDED"  # without anyone following it


def test_a_task_batch_gives_up_on_is_a_failed_trial(cli, standin, batch):
    batch.runner = FakeTrial(standin.gcs)
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.7", "--parallel", "2", *POLL)
    assert r.exit_code == 0, r.stderr
    trials = r.json["data"]["trials"]
    assert [(t["params"]["lr"], t["status"]) for t in trials] == [(0.1, "succeeded"), (0.7, "failed")]
    assert trials[1]["error"] == "Batch gave up on its task after 4 attempts (exit codes 139, 139, 139, 139)"
    assert sorted(s.attempt for s in batch.started if s.index == 1) == [0, 1, 2, 3]  # maxRetryCount 3
    assert r.json["warnings"] == [f"Trial 2/2 (lr=0.7) failed: {trials[1]['error']}"]
