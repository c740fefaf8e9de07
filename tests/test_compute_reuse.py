"""A second `cloud run` reuses the stopped VM: new run, and the hardware, disk and run limit it asks for."""

from __future__ import annotations

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
    standin,
)

PROJECT = "test-project"
POLL = ("--poll-interval", "0.05")


def test_busy_vm_is_refused_and_force_restarts_it(cli, standin):
    standin.on_start = FakeVM(standin.gcs, hold=threading.Event()).on_start
    first = cli("--json", "cloud", "run", "--detach").json["data"]["run_id"]
    deadline = time.time() + 10
    while standin.gcs.bucket(standin.gcs.test_bucket).get_blob(f"runs/{first}/status.json") is None:
        assert time.time() < deadline
        time.sleep(0.05)
    r = cli("cloud", "run", "--detach")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: VM {VM} is busy with run {first} (running): follow it with `newsclf cloud logs {first} --follow`, "
        "stop it with `newsclf cloud stop`, or pass --force to stop it and start this run"
    )
    standin.on_start = None
    r = cli("--json", "cloud", "run", "--detach", "--force", *POLL)
    assert r.exit_code == 0, r.stderr
    second = r.json["data"]["run_id"]
    verbs = [c.path.rsplit("/", 1)[-1] for c in standin.calls("POST", f"/instances/{VM}/")]
    assert verbs == ["stop", "setMetadata", "setLabels", "start"]
    assert standin.instance(VM).metadata()["newsclf-run-id"] == second


def test_second_run_reuses_the_stopped_vm(cli, standin):
    standin.op_polls = 2
    standin.on_start = FakeVM(standin.gcs).on_start
    r1 = cli("--json", "cloud", "run", *POLL)
    assert r1.exit_code == 0, r1.stderr
    inst = standin.instance(VM)
    fingerprint = inst.resource["metadata"]["fingerprint"]
    labels_fp = inst.resource["labelFingerprint"]
    assert inst.status == "TERMINATED"

    r2 = cli("--json", "cloud", "run", *POLL, "--", "--epochs", "2")
    assert r2.exit_code == 0, r2.stderr
    second = r2.json["data"]["run_id"]
    assert second != r1.json["data"]["run_id"]
    assert len(insert_bodies(standin)) == 1
    verbs = [c.path.rsplit("/", 1)[-1] for c in standin.calls("POST", f"/instances/{VM}/")]
    assert verbs == ["setMetadata", "setLabels", "start"]
    set_meta = standin.calls("POST", "/setMetadata$")[0].body
    assert set_meta["fingerprint"] == fingerprint
    items = meta_items(set_meta)
    assert items["newsclf-run-id"] == second and items["newsclf-train-args"] == "--epochs\n2"
    assert items["startup-script"] == SCRIPT
    set_labels = standin.calls("POST", "/setLabels$")[0].body
    assert set_labels == {"labelFingerprint": labels_fp, "labels": {"newsclf": "train", "newsclf-run": second}}
    assert r2.json["data"]["state"] == "succeeded"
    # each operation was waited for until DONE (op_polls=2: two waits each; 4 operations)
    assert len(standin.calls("POST", r"/operations/[^/]+/wait$")) == 2 * 4


def vm_verbs(standin):
    return [c.path.rsplit("/", 1)[-1] for c in standin.calls("POST", f"/instances/{VM}/")]


def one_body(standin, verb):
    [call] = standin.calls("POST", f"/{verb}$")
    return call.body


def test_reuse_applies_max_hours_disk_machine_type_and_gpu(cli, standin):
    assert cli("cloud", "run", "--detach").exit_code == 0  # n1-standard-8, 100 GB, 6 h
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", "--max-hours", "1", "--disk-gb", "200", "--machine-type", "n1-standard-4",
            "--gpu", "nvidia-tesla-t4:1")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert vm_verbs(standin) == ["setScheduling", "setMachineType", "setMachineResources", "setMetadata", "setLabels",
                                 "start"]  # fmt: skip
    assert one_body(standin, "setScheduling") == {
        "maxRunDuration": {"seconds": "3600"}, "instanceTerminationAction": "STOP", "onHostMaintenance": "TERMINATE",
    }  # fmt: skip
    assert one_body(standin, "setMachineType") == {"machineType": f"zones/{ZONE}/machineTypes/n1-standard-4"}
    assert one_body(standin, "setMachineResources") == {"guestAccelerators": [
        {"acceleratorType": f"projects/{PROJECT}/zones/{ZONE}/acceleratorTypes/nvidia-tesla-t4", "acceleratorCount": 1}
    ]}  # fmt: skip
    [resize] = standin.calls("POST", f"/zones/{ZONE}/disks/{VM}/resize$")
    assert resize.body == {"sizeGb": "200"}
    items = meta_items(one_body(standin, "setMetadata"))
    assert items["newsclf-gpus"] == "1" and items["install-nvidia-driver"] == "True"
    # what `cloud run` says is what the VM now is
    inst = standin.instance(VM).resource
    assert inst["scheduling"]["maxRunDuration"] == {"seconds": "3600"}
    assert inst["disks"][0]["diskSizeGb"] == "200"
    assert "n1-standard-4 + 1 x nvidia-tesla-t4" in r.stderr and "stops itself after 1 h" in r.stderr


def test_reuse_of_a_spot_vm_keeps_its_scheduling_and_sets_the_new_limit(cli, standin):
    assert cli("cloud", "run", "--detach", "--spot", "--gpu", "nvidia-tesla-t4:1").exit_code == 0
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", "--max-hours", "0.5")
    assert r.exit_code == 0, r.stderr
    assert vm_verbs(standin) == ["setScheduling", "setMetadata", "setLabels", "start"]
    assert one_body(standin, "setScheduling") == {
        "maxRunDuration": {"seconds": "1800"}, "instanceTerminationAction": "STOP", "provisioningModel": "SPOT",
        "automaticRestart": False, "onHostMaintenance": "TERMINATE",
    }  # fmt: skip
    assert "n1-standard-8 + 1 x nvidia-tesla-t4 (spot)" in r.stderr and "stops itself after 0.5 h" in r.stderr


def test_reuse_with_the_same_flags_changes_nothing_but_the_run(cli, standin):
    assert cli("cloud", "run", "--detach", "--max-hours", "2").exit_code == 0
    standin.shutdown(ZONE, VM)
    assert cli("cloud", "run", "--detach", "--max-hours", "2", "--disk-gb", "100").exit_code == 0
    assert vm_verbs(standin) == ["setMetadata", "setLabels", "start"]
    assert standin.calls("POST", "/resize$") == []


def test_reuse_drops_attached_gpus_before_a_machine_type_that_takes_none(cli, standin):
    assert cli("cloud", "run", "--detach", "--gpu", "nvidia-tesla-t4:1").exit_code == 0
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", "--machine-type", "e2-standard-8")
    assert r.exit_code == 0, r.stderr
    assert vm_verbs(standin) == ["setMachineResources", "setMachineType", "setMetadata", "setLabels", "start"]
    assert one_body(standin, "setMachineResources") == {}  # no accelerators
    assert meta_items(one_body(standin, "setMetadata"))["newsclf-gpus"] == "0"
    assert (
        "guestAccelerators" not in standin.instance(VM).resource
        or not standin.instance(VM).resource["guestAccelerators"]
    )


def test_a_disk_cannot_shrink(cli, standin):
    assert cli("cloud", "run", "--detach", "--disk-gb", "200").exit_code == 0
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", "--disk-gb", "100")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: VM {VM} has a 200 GB boot disk and a disk cannot shrink: drop --disk-gb 100 (or ask for 200 or "
        "more), or delete the VM with `newsclf cloud stop --delete` and rerun to create a new one"
    )
    assert vm_verbs(standin) == []
    # the setting's default (100) is not a request to shrink: the bigger disk stays
    assert cli("cloud", "run", "--detach").exit_code == 0
    assert standin.calls("POST", "/resize$") == []


@pytest.mark.parametrize(
    ("first", "second", "error"),
    [
        (("--machine-type", "g2-standard-8"), ("--machine-type", "n1-standard-8"),
         f"Error: VM {VM} is a g2-standard-8, and a n1-standard-8 needs a new VM: delete the VM with "
         "`newsclf cloud stop --delete` and rerun to create a new one"),
        ((), ("--spot",),
         f"Error: VM {VM} already exists with not spot: use it without those flags, or delete it with "
         "`newsclf cloud stop --delete` and rerun to create a new one"),
    ],
)  # fmt: skip
def test_what_a_stopped_vm_cannot_become_is_refused_before_any_change(cli, standin, first, second, error):
    assert cli("cloud", "run", "--detach", *first).exit_code == 0
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", *second)
    assert r.exit_code == 1
    assert last_line(r.stderr) == error
    assert vm_verbs(standin) == []
