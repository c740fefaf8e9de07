"""`newsclf cloud run --sweep`: the real compute_v1 client against the Compute stand-in, the real
storage client against fake-gcs-server. Fast tests play each VM's job in a thread (FakeSweepVM);
the slow ones run the real startup script and the real `newsclf job --sweep` in the VM sandbox."""

from __future__ import annotations

import _thread
import itertools
import json
import threading
import time

import pytest

from tests.compute_standin import sandbox, serial_reads, standin, wait_until  # noqa: F401  (fixtures)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)

VM = "newsclf-train"
POLL = ("--poll-interval", "0.05")


class FakeSweepVM:
    """Each started VM runs one trial the way `newsclf job --sweep ... --sweep-runs` would: status.json,
    a validation line on the serial port, metrics.json (macro-F1 = 1 - lr), then the guest powers
    off. A trial with lr >= 0.5 fails ("loss is nan")."""

    def __init__(self, gcs, hold: threading.Event | None = None) -> None:
        self.gcs = gcs
        self.hold = hold  # each job waits for it before it finishes
        self.started: list[tuple[str, str]] = []  # (VM name, run id)
        self.lock = threading.Lock()

    def on_start(self, standin, inst) -> None:
        meta = inst.metadata()
        run_id, bucket = meta["newsclf-run-id"], meta["newsclf-bucket"]
        args = meta["newsclf-train-args"].split("\n")
        grid = json.loads(args[args.index("--sweep") + 1])
        runs = json.loads(args[args.index("--sweep-runs") + 1])
        [trial] = [int(k) for k, v in runs.items() if v == run_id]
        params = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())][trial - 1]
        with self.lock:
            self.started.append((inst.name, run_id))
        threading.Thread(target=self._job, args=(standin, inst, run_id, bucket, params), daemon=True).start()

    def _put(self, bucket, name, doc) -> None:
        self.gcs.bucket(bucket).blob(name).upload_from_string(json.dumps(doc), content_type="application/json")

    def _job(self, standin, inst, run_id, bucket, params) -> None:
        now = "2026-01-01T00:00:00Z"
        self._put(bucket, f"runs/{run_id}/status.json", {"state": "running", "started_at": now, "exit_code": None})
        lr = params["lr"]
        f1 = round(1 - lr, 4)
        with open(inst.serial, "a") as f:
            f.write(f"newsclf-job[{run_id}]: epoch 1 validation: accuracy {f1:.4f}  macro-F1 {f1:.4f}  loss {lr:.4f}\n")
        time.sleep(0.2)
        if self.hold is not None:
            self.hold.wait(60)
        if lr >= 0.5:
            status = {"state": "failed", "exit_code": 1, "error": "loss is nan", "started_at": now, "finished_at": now}
        else:
            best = {"epoch": 1.0, "accuracy": f1, "macro_f1": f1, "precision": f1, "recall": f1, "loss": lr}
            metrics = {"run_id": run_id, "validation": [best], "best_validation": best,
                       "test": {**best, "epoch": None}, "train": {"runtime_s": 1.5, "epochs_completed": 1.0}}  # fmt: skip
            self._put(bucket, f"runs/{run_id}/metrics.json", metrics)
            status = {"state": "succeeded", "exit_code": 0, "started_at": now, "finished_at": now}
        self._put(bucket, f"runs/{run_id}/status.json", status)
        time.sleep(0.05)
        standin.shutdown(inst.zone, inst.name)


def insert_bodies(standin) -> list[dict]:
    return [r.body for r in standin.calls("POST", r"/zones/[^/]+/instances$")]


def run_json(gcs, run_id: str) -> dict:
    return json.loads(gcs.bucket(gcs.test_bucket).blob(f"runs/{run_id}/run.json").download_as_bytes())


def test_parallel_sweep_on_two_vms(cli, standin):
    fake = FakeSweepVM(standin.gcs)
    standin.on_start = fake.on_start
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.5", "--parallel", "2", *POLL)
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    sid = data["sweep_id"]
    short = sid.removeprefix("sweep-")
    vms = [f"{VM}-{short}-0", f"{VM}-{short}-1"]
    assert data["vms"] == vms
    # two VMs created, each labelled with the sweep; the third trial restarted one of them
    bodies = insert_bodies(standin)
    assert sorted(b["name"] for b in bodies) == vms
    assert all(b["labels"]["newsclf-sweep"] == sid and b["labels"]["newsclf"] == "train" for b in bodies)
    assert len(fake.started) == 3 and {name for name, _ in fake.started} == set(vms)
    assert all(standin.instance(name).status == "TERMINATED" for name in vms)

    assert data["counts"] == {"trials": 3, "succeeded": 2, "failed": 1, "pending": 0, "running": 0, "interrupted": 0}
    assert [(t["trial"], t["params"], t["status"], t["rank"], t["best"]) for t in data["trials"]] == [
        (1, {"lr": 0.1}, "succeeded", 1, True),
        (2, {"lr": 0.2}, "succeeded", 2, False),
        (3, {"lr": 0.5}, "failed", None, False),
    ]
    assert [t["objective"] for t in data["trials"]] == [0.9, 0.8, None]
    assert data["trials"][2]["error"] == "loss is nan"
    assert data["best"]["run_id"] == data["trials"][0]["run_id"]
    # run.json in the bucket carries the sweep and the trial's values
    for t in data["trials"]:
        record = run_json(standin.gcs, t["run_id"])
        assert (record["sweep_id"], record["sweep_params"], record["sweep_trial"]) == (sid, t["params"], t["trial"])
    assert r.json["warnings"] == ["Trial 3/3 (lr=0.5) failed: loss is nan"]

    # the same table later, from the bucket alone
    again = cli("--json", "models", "list", "--sweep", sid)
    assert again.exit_code == 0, again.stderr
    keep = ("trial", "params", "run_id", "status", "objective", "rank", "best", "error")
    assert [{k: t[k] for k in keep} for t in again.json["data"]["trials"]] == [
        {k: t[k] for k in keep} for t in data["trials"]
    ]
    human = cli("models", "list", "--sweep", sid)
    assert f"sweep {sid}: 3 trials (2 succeeded, 1 failed); objective: validation macro_f1" in human.stdout
    assert "trial 3 failed: loss is nan" in human.stdout
    listing = cli("--json", "models", "list")
    assert {r["sweep_id"] for r in listing.json["data"]["runs"]} == {sid}

    # `cloud status` groups the sweep's VMs
    status = cli("--json", "cloud", "status")
    assert status.json["data"]["sweeps"] == {sid: {"vms": vms, "active": 0}}
    assert [row["sweep_id"] for row in status.json["data"]["vms"]] == [sid, sid]


def test_sweep_rerun_skips_succeeded_trials(cli, standin):
    fake = FakeSweepVM(standin.gcs)
    standin.on_start = fake.on_start
    first = cli("--json", "cloud", "run", "--sweep", "lr=0.1,0.5", "--parallel", "2", *POLL)
    assert first.exit_code == 0, first.stderr
    ok = {t["trial"]: t["run_id"] for t in first.json["data"]["trials"]}
    sid = first.json["data"]["sweep_id"]
    r = cli("cloud", "run", "--sweep", "lr=0.1,0.5", "--parallel", "2", *POLL)
    assert r.exit_code == 0, r.stderr
    assert f"Sweep {sid}: 1 of 2 trials already succeeded; running the other 1" in r.stderr  # same grid, same sweep
    assert len(fake.started) == 3 and fake.started[2][1] not in ok.values()  # only the failed one, anew
    assert f"* best: trial 1 (lr=0.1), run {ok[1]}" in r.stdout
    trials = {t["trial"]: t for t in cli("--json", "models", "list", "--sweep", sid).json["data"]["trials"]}
    assert trials[1]["run_id"] == ok[1] and trials[1]["status"] == "succeeded"
    assert trials[2]["run_id"] != ok[2] and trials[2]["status"] == "failed"


def test_ctrl_c_detaches_and_the_same_command_reattaches(cli, standin):
    hold = threading.Event()
    fake = FakeSweepVM(standin.gcs, hold=hold)
    standin.on_start = fake.on_start
    args = ("--json", "cloud", "run", "--sweep", "lr=0.1,0.2,0.3", "--parallel", "2", *POLL)

    def ctrl_c_once_both_vms_run() -> None:
        wait_until(lambda: len(fake.started) == 2, what="both VMs started")
        names = [vm for vm, _ in fake.started]
        # the jobs are running and being followed: each VM's serial port read twice
        wait_until(lambda: all(serial_reads(standin, vm) >= 2 for vm in names), what="both jobs being followed")
        _thread.interrupt_main()

    threading.Thread(target=ctrl_c_once_both_vms_run, daemon=True).start()
    r = cli(*args)
    assert r.exit_code == 130, r.stderr
    sid = r.json["data"]["sweep_id"]
    assert r.json["data"]["state"] == "detached"
    assert r.json["errors"][0].startswith(f"Detached from sweep {sid}: 2 trials keep running on their VMs")
    first_runs = [run for _, run in fake.started]
    status = cli("--json", "cloud", "status").json["data"]
    assert status["sweeps"][sid]["active"] == 2 and {v["run_state"] for v in status["vms"]} == {"running"}

    # again: the two running trials are followed where they run (not started twice), then the third
    lists = len(standin.calls("GET", "/aggregated/instances"))

    reads = {vm: serial_reads(standin, vm) for vm, _ in fake.started}

    def release_once_reattached() -> None:
        wait_until(lambda: len(standin.calls("GET", "/aggregated/instances")) > lists, what="the sweep listed again")
        wait_until(lambda: all(serial_reads(standin, vm) > n for vm, n in reads.items()), what="both jobs followed again")
        hold.set()

    threading.Thread(target=release_once_reattached, daemon=True).start()
    again = cli(*args)
    assert again.exit_code == 0, again.stderr
    assert [run for _, run in fake.started[:2]] == first_runs and len(fake.started) == 3
    trials = {t["trial"]: t for t in again.json["data"]["trials"]}
    assert [trials[i]["status"] for i in (1, 2, 3)] == ["succeeded"] * 3
    assert {trials[1]["run_id"], trials[2]["run_id"]} == set(first_runs)
    assert again.json["data"]["best"]["params"] == {"lr": 0.1}


def test_all_trials_failing_exits_non_zero_and_stop_sweep(cli, standin):
    standin.on_start = FakeSweepVM(standin.gcs).on_start
    r = cli("--json", "cloud", "run", "--sweep", "lr=0.5,0.6", "--parallel", "2", *POLL)
    assert r.exit_code == 1
    sid = r.json["data"]["sweep_id"]
    assert r.json["status"] == "error"
    assert r.json["errors"][0].startswith(f"All 2 trials of sweep {sid} failed (trial 1: loss is nan)")
    assert r.stderr.strip().splitlines()[-1].startswith(f"Error: All 2 trials of sweep {sid} failed")

    stop = cli("--json", "cloud", "stop", "--sweep", sid)
    assert stop.exit_code == 0, stop.stderr
    assert [(v["before"], v["after"]) for v in stop.json["data"]["vms"]] == [("TERMINATED", "TERMINATED")] * 2
    gone = cli("--json", "cloud", "stop", "--sweep", sid, "--delete")
    assert gone.exit_code == 1
    assert gone.stderr.strip() == f"Error: Delete 2 VMs of sweep {sid}: pass --yes to confirm"
    gone = cli("--json", "cloud", "stop", "--sweep", sid, "--delete", "--yes")
    assert gone.exit_code == 0 and all(v["deleted"] for v in gone.json["data"]["vms"])
    assert cli("--json", "cloud", "status").json["data"]["vms"] == []


def test_sweep_flags_are_checked_before_any_vm(cli, standin):
    r = cli("cloud", "run", "--parallel", "2")
    assert r.exit_code == 2 and "--parallel runs a sweep's trials on several VMs" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3", "--resume", "20260101-000000-abcdef")
    assert r.exit_code == 2 and "a sweep carries on when you run the same command again" in r.stderr
    r = cli("cloud", "run", "--sweep", "lrr=1e-3")
    assert r.exit_code == 1
    assert r.stderr.startswith("Error: Unknown sweep parameter 'lrr': did you mean lr? (sweepable: lr, batch_size,")
    r = cli("cloud", "run", "--sweep", "lr=1e-3,2e-3", "--", "--lr", "1e-3")
    assert r.exit_code == 2 and "--lr is both swept and given after `--`" in r.stderr
    r = cli("cloud", "run", "--sweep", "lr=1e-3", "--", "--sweep", "lr=1")
    assert r.exit_code == 2 and "give the sweep to `newsclf cloud run` itself" in r.stderr
    assert insert_bodies(standin) == []


# ---------------------------------------------------------------------------------- end to end


def _train_args(model) -> list[str]:
    return ["--model", str(model), "--epochs", "1", "--batch-size", "8", "--max-length", "64",
            "--warmup-ratio", "0", "--max-train-samples", "16"]  # fmt: skip


@pytest.fixture
def bucket_with_data(standin, tiny_data):
    bucket = standin.gcs.bucket(standin.gcs.test_bucket)
    for path in sorted(tiny_data.iterdir()):
        bucket.blob(f"data/processed/{path.name}").upload_from_filename(str(path))
    return bucket


def _sandbox_output(box) -> str:
    return "\n".join(p.read_text() for p in sorted(box.dir.glob("startup-*.out")))


def _check_trials_against_bucket(bucket, data: dict, sid: str) -> None:
    for t in data["trials"]:
        metrics = json.loads(bucket.blob(f"runs/{t['run_id']}/metrics.json").download_as_bytes())
        assert t["objective"] == metrics["best_validation"]["macro_f1"]
        assert t["test"] == metrics["test"]
        config = json.loads(bucket.blob(f"runs/{t['run_id']}/run.json").download_as_bytes())
        assert (config["sweep_id"], config["sweep_params"], config["sweep_trial"]) == (sid, t["params"], t["trial"])
        assert "planned" not in config and config["epochs"] == 1.0  # the run's own run.json, published


@pytest.mark.slow
def test_parallel_sweep_end_to_end(cli, standin, sandbox, bucket_with_data, tiny_model):
    r = cli("--json", "cloud", "run", "--sweep", "lr=3e-3,1e-3", "--parallel", "2", *POLL, "--",
            *_train_args(tiny_model))  # fmt: skip
    assert r.exit_code == 0, r.stderr + _sandbox_output(sandbox)
    data = r.json["data"]
    sid = data["sweep_id"]
    vms = [f"{VM}-{sid.removeprefix('sweep-')}-{i}" for i in (0, 1)]
    assert data["vms"] == vms
    bodies = insert_bodies(standin)
    assert sorted(b["name"] for b in bodies) == vms
    assert all(b["labels"]["newsclf-sweep"] == sid for b in bodies)
    assert [standin.instance(name).status for name in vms] == ["TERMINATED", "TERMINATED"]
    assert data["counts"]["succeeded"] == 2 and data["counts"]["trials"] == 2
    assert sorted(t["params"]["lr"] for t in data["trials"]) == [1e-3, 3e-3]
    assert [t["rank"] for t in data["trials"]] == [1, 2] and data["trials"][0]["best"]
    objectives = [t["objective"] for t in data["trials"]]
    assert objectives == sorted(objectives, reverse=True)
    _check_trials_against_bucket(bucket_with_data, data, sid)
    again = cli("--json", "models", "list", "--sweep", sid)
    assert [t["run_id"] for t in again.json["data"]["trials"]] == [t["run_id"] for t in data["trials"]]


@pytest.mark.slow
def test_sequential_sweep_runs_in_one_job_on_one_vm(cli, standin, sandbox, bucket_with_data, tiny_model):
    r = cli("--json", "cloud", "run", "--sweep", "lr=3e-3,1e-3", *POLL, "--", *_train_args(tiny_model))
    assert r.exit_code == 0, r.stderr + _sandbox_output(sandbox)
    data = r.json["data"]
    sid, job_run = data["sweep_id"], data["job_run_id"]
    assert data["vms"] == [VM]
    [body] = insert_bodies(standin)
    assert body["labels"]["newsclf-sweep"] == sid and body["labels"]["newsclf-run"] == job_run
    assert standin.instance(VM).status == "TERMINATED"
    [run] = [c for c in sandbox.docker_calls() if c["argv"][0] == "run"]  # one container for the whole sweep
    assert "--sweep-runs" in run["job_args"]
    assert data["counts"]["succeeded"] == 2
    _check_trials_against_bucket(bucket_with_data, data, sid)
    status = json.loads(bucket_with_data.blob(f"runs/{job_run}/status.json").download_as_bytes())
    assert status["state"] == "succeeded"
    assert status["trials"] == {t["run_id"]: "succeeded" for t in sorted(data["trials"], key=lambda t: t["trial"])}
    runs = {row["run_id"]: row for row in cli("--json", "models", "list").json["data"]["runs"]}
    assert runs[job_run]["sweep_job"] and runs[job_run]["sweep_id"] == sid  # the job's own record: no model
    assert {rid for rid, row in runs.items() if not row["sweep_job"]} == {t["run_id"] for t in data["trials"]}
