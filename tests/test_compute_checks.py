"""What `cloud run` checks before any Compute Engine request: names and labels within Compute Engine's
rules, a GPU the image's torch supports on a machine type that takes it, and a run limit Compute Engine accepts."""

from __future__ import annotations

import pytest

from tests.compute_standin import VM, ZONE, insert_bodies, last_line, meta_items, standin  # noqa: F401  (fixtures)

PROJECT = "test-project"
CHOICES = (
    "--gpu nvidia-tesla-t4:1 (on n1-*), or a machine type with GPUs built in and no --gpu: g2-standard-8 (L4), "
    "a2-highgpu-1g (A100), a3-highgpu-8g (H100), a3-ultragpu-8g (H200), a4-highgpu-8g (B200)"
)


def test_label_value_keeps_run_ids_as_users_write_them_valid():
    from newsclf.cloud.compute.request import label_value

    assert label_value("My.Run_2") == "my-run_2"
    assert label_value("20261130-174500-ab12") == "20261130-174500-ab12"
    assert label_value("Sweep-1A2B3C4D") == "sweep-1a2b3c4d"
    assert len(label_value("R" * 100)) == 63


def test_resume_with_an_upper_case_run_id_labels_the_vm_validly(cli, standin):
    r = cli("--json", "cloud", "run", "--detach", "--resume", "My.Run_2")
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert body["labels"] == {"newsclf": "train", "newsclf-run": "my-run_2"}
    assert meta_items(body)["newsclf-run-id"] == "My.Run_2"  # the exact id, for the VM and `cloud logs`
    assert r.json["data"]["run_id"] == "My.Run_2"
    # and again on the stopped VM: setLabels carries a valid value too (the stand-in rejects any other)
    standin.shutdown(ZONE, VM)
    r = cli("cloud", "run", "--detach", "--resume", "Other.RUN")
    assert r.exit_code == 0, r.stderr
    [set_labels] = standin.calls("POST", "/setLabels$")
    assert set_labels.body["labels"]["newsclf-run"] == "other-run"


def test_a_bad_vm_name_is_refused_before_any_request(cli, standin, monkeypatch):
    monkeypatch.setenv("NEWSCLF_VM_NAME", "My_Training_VM")
    r = cli("cloud", "run", "--detach")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        "Error: Bad VM name 'My_Training_VM': Compute Engine names are 1-63 lowercase letters, digits and '-', "
        "starting with a letter and not ending with '-' (set NEWSCLF_VM_NAME, e.g. newsclf-train)"
    )
    assert standin.requests == []


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (("--gpu", "nvidia-tesla-v100:1"),
         f"--gpu nvidia-tesla-v100 (sm_70) is too old for the training image's torch, which needs sm_75 or newer: "
         f"use {CHOICES}"),
        (("--gpu", "nvidia-tesla-p100:1"), "--gpu nvidia-tesla-p100 (sm_60) is too old"),
        (("--gpu", "nvidia-tesla-p4:1"), "--gpu nvidia-tesla-p4 (sm_61) is too old"),
        (("--machine-type", "g2-standard-8", "--gpu", "nvidia-l4:1"),
         "g2-standard-8 comes with 1 x nvidia-l4 built in: drop --gpu (for more GPUs pick a larger G2 machine type)"),
        (("--gpu", "nvidia-l4:1"),
         "nvidia-l4 comes built into machine types, it does not attach: use --machine-type g2-standard-8 and drop --gpu"),
        (("--gpu", "nvidia-h100-80gb:8"),
         "nvidia-h100-80gb comes built into machine types, it does not attach: use --machine-type a3-highgpu-8g"),
        (("--gpu", "nvidia-tesla-t5:1"), f"Unknown GPU type 'nvidia-tesla-t5': use {CHOICES}"),
        (("--machine-type", "e2-standard-8", "--gpu", "nvidia-tesla-t4:1"),
         "nvidia-tesla-t4 attaches only to N1 machine types, not e2-standard-8: use --machine-type n1-standard-8"),
        (("--gpu", "nvidia-tesla-t4:3"), "nvidia-tesla-t4 comes 1, 2 or 4 to a VM, not 3: use --gpu nvidia-tesla-t4:4"),
        (("--machine-type", "n1-standard-64", "--gpu", "nvidia-tesla-t4:2"),
         "n1-standard-64 has 64 vCPUs, more than a VM with 2 x nvidia-tesla-t4 may have (48): pick a smaller machine "
         "type or --gpu nvidia-tesla-t4:4"),
        (("--max-hours", "0.005"),
         "Bad --max-hours 0.005: Compute Engine stops a VM after 30 seconds to 120 days, so use 0.0084 to 2880"),
        (("--max-hours", "2881"), "Bad --max-hours 2881:"),
        (("--max-hours", "0"), "Bad --max-hours 0:"),
        (("--max-hours", "inf"), "Bad --max-hours inf:"),
        (("--max-hours", "nan"), "Bad --max-hours nan:"),
    ],
)  # fmt: skip
def test_what_compute_engine_or_the_image_would_refuse_starts_nothing(cli, standin, flags, error):
    r = cli("cloud", "run", "--detach", *flags)
    assert r.exit_code == 1
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("Error: " + error), r.stderr
    assert standin.requests == []


def test_builtin_gpu_machine_types_send_no_guest_accelerators(cli, standin):
    r = cli("cloud", "run", "--detach", "--machine-type", "g2-standard-8", "--max-hours", "2880")
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert "guestAccelerators" not in body
    assert body["scheduling"] == {"maxRunDuration": {"seconds": str(120 * 86400)}, "instanceTerminationAction": "STOP",
                                  "onHostMaintenance": "TERMINATE"}  # fmt: skip
    assert body["disks"][0]["initializeParams"]["diskType"] == f"zones/{ZONE}/diskTypes/pd-balanced"
    items = meta_items(body)
    assert items["newsclf-gpus"] == "1" and items["install-nvidia-driver"] == "True"
    said = " ".join(r.stderr.split())  # rich wraps long lines
    assert "(g2-standard-8 (1 x nvidia-l4 built in), est. $0.87/h" in said, said


def test_a3_machine_types_boot_from_hyperdisk(cli, standin):
    r = cli("cloud", "run", "--detach", "--machine-type", "a3-highgpu-8g", "--zone", "us-central1-a")
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert body["disks"][0]["initializeParams"]["diskType"] == "zones/us-central1-a/diskTypes/hyperdisk-balanced"
    assert meta_items(body)["newsclf-gpus"] == "8"
