"""The VM startup script: it runs the job, records its status and powers off, also on what a real first boot
can bring: an old driver family, no docker, no NVIDIA
Container Toolkit, a metadata server that does not answer. `newsclf cloud run` against the Compute
stand-in runs the real script in the sandbox (tests/compute_standin.py VMSandbox)."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from tests.compute_standin import ZONE, VMSandbox, sandbox, standin  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = (REPO / "newsclf" / "cloud" / "startup.sh").read_text()
VM = "newsclf-train"
PROJECT = "test-project"
FAKE = "registry.example/newsclf:fake"
POLL = ("--poll-interval", "0.05")
T4 = ("--gpu", "nvidia-tesla-t4:1")

# `apt-get` on the sandboxed VM: `install` puts the package's command on PATH (from $SANDBOX/packages/),
# or fails like an unreachable archive when $SANDBOX/apt-broken exists
APT_GET_SHIM = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$NEWSCLF_SANDBOX_DIR/apt-calls"
[[ -e "$NEWSCLF_SANDBOX_DIR/apt-broken" ]] && { echo "E: Unable to locate package" >&2; exit 100; }
[[ " $* " == *" install "* ]] || exit 0
for arg in "$@"; do
  case "$arg" in
    docker.io) cp "$NEWSCLF_SANDBOX_DIR/packages/docker" "$NEWSCLF_SANDBOX_DIR/bin/docker" ;;
    nvidia-container-toolkit) cp "$NEWSCLF_SANDBOX_DIR/packages/nvidia-ctk" "$NEWSCLF_SANDBOX_DIR/bin/nvidia-ctk" ;;
  esac
done
"""

SYSTEMCTL_SHIM = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >>"$NEWSCLF_SANDBOX_DIR/systemctl-calls"
"""


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def calls(box: VMSandbox, name: str) -> list[str]:
    path = box.dir / f"{name}-calls"
    return path.read_text().splitlines() if path.exists() else []


def bare_image(box: VMSandbox, *, missing: tuple[str, ...]) -> None:
    """The VM image lacks `missing` (docker, nvidia-ctk); apt-get can install them. PATH holds only the
    sandbox's shims and /usr/bin:/bin, so a docker CLI elsewhere on this machine does not count."""
    box._base_path = "/usr/bin:/bin"
    assert not any(Path(d, "docker").exists() for d in ("/usr/bin", "/bin"))
    packages = box.dir / "packages"
    packages.mkdir(exist_ok=True)
    for name in missing:
        (box.bin / name).rename(packages / name)
    for name, text in (("apt-get", APT_GET_SHIM), ("systemctl", SYSTEMCTL_SHIM)):
        (box.bin / name).write_text(text)
        (box.bin / name).chmod(0o755)


def with_env(box: VMSandbox, monkeypatch, **extra: str) -> None:
    env = box.env
    monkeypatch.setattr(box, "env", lambda server, inst: {**env(server, inst), **extra})


def status_of(server, run_id: str) -> dict:
    bucket = server.gcs.bucket(server.gcs.test_bucket)
    return json.loads(bucket.blob(f"runs/{run_id}/status.json").download_as_bytes())


def sandbox_output(box: VMSandbox) -> str:
    return "\n".join(p.read_text() for p in sorted(box.dir.glob("startup-*.out")))


# ---------------------------------------------------------------------------------- image family


def test_default_vm_image_family_has_the_driver_the_image_needs():
    from newsclf.config import Settings

    min_driver = int(re.search(r"^MIN_DRIVER=(\d+)", SCRIPT, re.MULTILINE).group(1))
    family = Settings().vm_image_family
    m = re.fullmatch(r"common-cu\d+-ubuntu-\d{4}-nvidia-(\d+)", family)
    assert m, f"{family} is not a Deep Learning VM family name with its driver branch"
    assert int(m.group(1)) >= min_driver
    example = (REPO / ".env.example").read_text()
    assert re.search(rf"^NEWSCLF_VM_IMAGE_FAMILY={re.escape(family)}\s", example, re.MULTILINE)


# ---------------------------------------------------------------------------------- docker, toolkit


def test_missing_docker_and_toolkit_are_installed(cli, standin, sandbox):
    bare_image(sandbox, missing=("docker", "nvidia-ctk"))
    r = cli("--json", "cloud", "run", "--image", FAKE, *T4, *POLL, "--", "--epochs", "1")
    assert r.exit_code == 0, r.stderr + sandbox_output(sandbox)
    assert r.json["data"]["state"] == "succeeded"
    sandbox.wait_all()
    apt = calls(sandbox, "apt")
    assert [a.split()[-1] for a in apt if " install " in f" {a} "] == ["docker.io", "nvidia-container-toolkit"]
    assert len([a for a in apt if a.endswith(" update")]) == 2
    assert calls(sandbox, "nvidia-ctk") == ["runtime configure --runtime=docker"]
    assert calls(sandbox, "systemctl") == ["enable --now docker", "restart docker"]
    pull, _rm, run = sandbox.docker_calls()
    assert pull["argv"] == ["pull", "--quiet", FAKE] and run["argv"][8:10] == ["--gpus", "all"]
    serial = standin.instance(VM).serial.read_text()
    assert "docker is not installed on this VM image: installing docker.io" in serial
    assert (
        "the NVIDIA Container Toolkit is not installed on this VM image: installing nvidia-container-toolkit" in serial
    )
    assert calls(sandbox, "shutdown") == ["-h now"]


def test_docker_that_cannot_be_installed_fails_the_run_and_powers_off(cli, standin, sandbox):
    bare_image(sandbox, missing=("docker",))
    (sandbox.dir / "apt-broken").touch()
    r = cli("--json", "cloud", "run", "--image", FAKE, *POLL)
    assert r.exit_code == 1, r.stderr + sandbox_output(sandbox)
    run_id = r.json["data"]["run_id"]
    status = status_of(standin, run_id)
    assert status["state"] == "failed" and status["exit_code"] == 1
    assert status["error"] == (
        f"docker is missing on the VM and installing docker.io with apt-get failed (see runs/{run_id}/logs/): "
        "set NEWSCLF_VM_IMAGE_FAMILY to an image with docker, or let the VM reach the Ubuntu archive"
    )
    assert status["error"] in r.stderr
    assert standin.instance(VM).status == "TERMINATED"
    sandbox.wait_all()
    assert calls(sandbox, "shutdown") == ["-h now"]
    assert sandbox.docker_calls() == []
    logs = list(standin.gcs.list_blobs(standin.gcs.test_bucket, prefix=f"runs/{run_id}/logs/"))
    assert "E: Unable to locate package" in logs[0].download_as_text()


def test_toolkit_that_cannot_be_installed_fails_the_run_and_powers_off(cli, standin, sandbox, monkeypatch):
    bare_image(sandbox, missing=("nvidia-ctk",))
    (sandbox.dir / "apt-broken").touch()
    repo = closed_port_url()  # NVIDIA's repository, unreachable
    with_env(sandbox, monkeypatch, NEWSCLF_NVIDIA_REPO_URL=repo)
    r = cli("--json", "cloud", "run", "--image", FAKE, *T4, *POLL)
    assert r.exit_code == 1, r.stderr + sandbox_output(sandbox)
    run_id = r.json["data"]["run_id"]
    error = status_of(standin, run_id)["error"]
    assert error == (
        "the NVIDIA Container Toolkit is missing on the VM and installing nvidia-container-toolkit failed "
        f"(see runs/{run_id}/logs/): set NEWSCLF_VM_IMAGE_FAMILY to an image with it, or let the VM reach {repo}"
    )
    assert "adding NVIDIA's repository" in standin.instance(VM).serial.read_text()
    assert standin.instance(VM).status == "TERMINATED"
    sandbox.wait_all()
    assert calls(sandbox, "shutdown") == ["-h now"]
    assert sandbox.docker_calls() == []


# ---------------------------------------------------------------------------------- every path powers off


def test_unreachable_metadata_server_at_boot_powers_off(cli, standin, sandbox, monkeypatch):
    dead = closed_port_url()
    with_env(sandbox, monkeypatch, NEWSCLF_METADATA_URL=f"{dead}/computeMetadata/v1", NEWSCLF_METADATA_WAIT_S="0")
    r = cli("--json", "cloud", "run", "--detach", "--image", FAKE)
    assert r.exit_code == 0, r.stderr
    sandbox.wait_all(timeout=120)
    assert calls(sandbox, "shutdown") == ["-h now"], sandbox_output(sandbox)
    assert standin.instance(VM).status in ("STOPPING", "TERMINATED")
    serial = standin.instance(VM).serial.read_text()
    assert (f"newsclf-vm[?]: the metadata server ({dead}/computeMetadata/v1) did not answer for 0s: "
            "cannot tell which run to start") in serial  # fmt: skip
    assert "newsclf-vm[?]: powering off" in serial
    assert sandbox.docker_calls() == []


@pytest.mark.parametrize("keep_vm", [False, True])
def test_a_vm_without_a_run_id_powers_off_unless_kept(cli, standin, sandbox, keep_vm):
    start = sandbox.on_start

    def without_run_id(server, inst):  # e.g. a VM made by hand from a newsclf VM's metadata
        meta = inst.resource["metadata"]
        meta["items"] = [i for i in meta["items"] if i["key"] != "newsclf-run-id"]
        return start(server, inst)

    standin.on_start = without_run_id
    r = cli("--json", "cloud", "run", "--detach", "--image", FAKE, *(["--keep-vm"] if keep_vm else []))
    assert r.exit_code == 0, r.stderr
    sandbox.wait_all()
    serial = standin.instance(VM).serial.read_text()
    assert "newsclf-vm[?]: no valid newsclf-run-id in the instance metadata: nothing to do" in serial
    if keep_vm:
        assert calls(sandbox, "shutdown") == [] and standin.instance(VM).status == "RUNNING"
        assert "keep-vm is set: the VM stays up" in serial
    else:
        assert calls(sandbox, "shutdown") == ["-h now"], sandbox_output(sandbox)


# ---------------------------------------------------------------------------------- the job, its status, power off


def test_startup_script_runs_the_job_and_powers_off(cli, standin, sandbox, monkeypatch):
    monkeypatch.setenv("NEWSCLF_WANDB_SECRET", "newsclf-wandb")
    standin.secrets["newsclf-wandb"] = "wandb-secret-from-sm"
    image = "europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:fake"
    standin.registry.add_image(image)
    r = cli("cloud", "run", "--image", image, "--gpu", "nvidia-tesla-t4:1", *POLL, "--", "--epochs", "1")
    assert r.exit_code == 0, r.stderr + sandbox_output(sandbox)
    run_id = standin.instance(VM).metadata()["newsclf-run-id"]
    assert "progress 100%" in r.stderr and "progress 50%" not in r.stderr  # \r progress: last state only
    assert "wandb key present: True" in r.stderr
    assert standin.instance(VM).status == "TERMINATED"
    sandbox.wait_all()

    login, pull, rm, run = sandbox.docker_calls()
    token = "ya29.standin-token-SECRET"
    assert login == {
        "argv": ["login", "-u", "oauth2accesstoken", "--password-stdin", "https://europe-west1-docker.pkg.dev"],
        "password_from_stdin": token,
    }
    assert pull["argv"] == ["pull", "--quiet", image]
    assert run["image"] == image
    assert run["argv"][:10] == [
        "run",
        "--rm",
        "--name",
        "newsclf-job",
        "--network",
        "host",
        "--ipc",
        "host",
        "--gpus",
        "all",
    ]
    assert run["job_args"] == ["--bucket", standin.gcs.test_bucket, "--run-id", run_id, "--epochs", "1"]
    assert "WANDB_API_KEY=wandb-secret-from-sm" in run["env_file"]
    assert all(
        token not in " ".join(c["argv"]) and "wandb-secret-from-sm" not in " ".join(c["argv"])
        for c in sandbox.docker_calls()
    )
    serial = standin.instance(VM).serial.read_text()
    assert "wandb-secret-from-sm" not in serial and token not in serial
    assert f"newsclf-job[{run_id}]: fake job: done" in serial
    assert (sandbox.dir / "shutdown-calls").read_text() == "-h now\n"
    blobs = [b.name for b in standin.gcs.list_blobs(standin.gcs.test_bucket, prefix=f"runs/{run_id}/logs/")]
    assert len(blobs) == 1
    log = standin.gcs.bucket(standin.gcs.test_bucket).blob(blobs[0]).download_as_text()
    assert "fake job: done" in log and "wandb-secret-from-sm" not in log
    assert not (sandbox.dir / f"vm-{ZONE}-{VM}" / "var-lib-newsclf" / "job.env").exists()


def test_startup_script_marks_a_crashed_container_failed(cli, standin, sandbox):
    r = cli("--json", "cloud", "run", "--image", "registry.example/newsclf:crash", *POLL)
    assert r.exit_code == 3, r.stderr + sandbox_output(sandbox)
    run_id = r.json["data"]["run_id"]
    status = json.loads(
        standin.gcs.bucket(standin.gcs.test_bucket).blob(f"runs/{run_id}/status.json").download_as_bytes()
    )
    assert status["state"] == "failed" and status["exit_code"] == 3
    assert status["error"] == "the job exited (3) without writing a final status.json"
    assert status["started_at"] and status["finished_at"]
    assert standin.instance(VM).status == "TERMINATED"
    assert "RuntimeError: the container crashed" in r.stderr
    sandbox.wait_all()
    assert [c["argv"][0] for c in sandbox.docker_calls()] == ["pull", "rm", "run"]  # no login outside GCP registries


def test_startup_script_refuses_a_driver_too_old_for_the_image(cli, standin, sandbox):
    sandbox.driver = "570.133.20"  # e.g. a common-cu128-...-nvidia-570 image: torch would see no GPU
    r = cli("--json", "cloud", "run", "--image", "registry.example/newsclf:fake", "--gpu", "nvidia-tesla-t4:1", *POLL)
    assert r.exit_code == 1, r.stderr + sandbox_output(sandbox)
    error = ("NVIDIA driver 570.133.20 is older than 580, which the image's CUDA 13 torch needs: set "
             "NEWSCLF_VM_IMAGE_FAMILY to a Deep Learning VM image family with driver 580 or newer")  # fmt: skip
    assert error in r.stderr
    status = json.loads(
        standin.gcs.bucket(standin.gcs.test_bucket)
        .blob(f"runs/{r.json['data']['run_id']}/status.json")
        .download_as_bytes()
    )
    assert status["state"] == "failed" and status["exit_code"] == 1 and status["error"] == error
    assert standin.instance(VM).status == "TERMINATED"  # nothing left billing
    sandbox.wait_all()
    assert sandbox.docker_calls() == []  # stopped before pulling the image


def test_startup_script_does_not_rerun_a_finished_run(cli, standin, sandbox):
    r = cli("--json", "cloud", "run", "--image", "registry.example/newsclf:fake", *POLL)
    assert r.exit_code == 0, r.stderr + sandbox_output(sandbox)
    sandbox.wait_all()
    runs_before = [c for c in sandbox.docker_calls() if c["argv"][0] == "run"]
    # the VM boots again with the same run (a reboot, or someone starting it): nothing is re-run
    from newsclf.cloud.compute.clients import make_clients
    from newsclf.cloud.compute.vm import get_vm, wait_status
    from newsclf.config import get_settings

    clients = make_clients(get_settings())
    op = clients.instances.start_unary(project=PROJECT, zone=ZONE, instance=VM)
    clients.operations.wait(project=PROJECT, zone=ZONE, operation=op.name)
    assert len(sandbox.procs) == 2
    sandbox.procs[-1].wait(timeout=30)
    vm = wait_status(clients, PROJECT, get_vm(clients, PROJECT, ZONE, VM), {"TERMINATED"}, poll_s=0.05, timeout_s=10)
    assert vm.status == "TERMINATED"
    assert [c for c in sandbox.docker_calls() if c["argv"][0] == "run"] == runs_before
    out = sorted(sandbox.dir.glob("startup-*.out"))[-1].read_text()
    assert "already finished (succeeded): not running it again" in out
    assert (sandbox.dir / "shutdown-calls").read_text() == "-h now\n-h now\n"


def test_stopping_the_vm_mid_job_does_not_fail_the_run(cli, standin, sandbox):
    r = cli("--json", "cloud", "run", "--detach", "--image", "registry.example/newsclf:fake", "--", "--patience", "30")
    run_id = r.json["data"]["run_id"]
    deadline = time.time() + 30
    bucket = standin.gcs.bucket(standin.gcs.test_bucket)
    while "fake job" not in standin.instance(VM).serial.read_text():
        assert time.time() < deadline, sandbox_output(sandbox)
        time.sleep(0.1)
    r = cli("cloud", "stop", "--yes", *POLL)
    assert r.exit_code == 0, r.stderr
    sandbox.procs[-1].wait(timeout=30)
    status = json.loads(bucket.blob(f"runs/{run_id}/status.json").download_as_bytes())
    assert status["state"] == "running"  # resumable, not failed
    serial = standin.instance(VM).serial.read_text()
    assert f"newsclf-vm[{run_id}]: the VM is stopping; the run resumes from its checkpoints" in serial
