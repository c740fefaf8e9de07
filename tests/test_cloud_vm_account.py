"""The training VMs run as their own service account, and a VM that stops without a final status says why.

The real compute_v1 client against the Compute stand-in; in the last tests the real startup script
runs in the sandbox as a VM whose service account has none of its grants: Cloud Storage (a proxy in
front of fake-gcs-server) refuses its reads and writes with 403, and the registry refuses its pull.
"""

from __future__ import annotations

import json

import pytest

from tests.compute_standin import VMSandbox, standin  # noqa: F401  (fixture)
from tests.faulty_proxy import Fault, FaultyProxy, gcs_error

PROJECT = "test-project"
VM = "newsclf-train"
SA = f"newsclf-vm@{PROJECT}.iam.gserviceaccount.com"
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
POLL = ("--poll-interval", "0.05")
IMAGE = "europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:latest"

# `docker` on a VM whose account may not read the repository: login works, the pull is refused
DENIED_DOCKER = r"""#!/usr/bin/env bash
if [[ "$1" == pull ]]; then
  echo "Error response from daemon: Head \"https://europe-west1-docker.pkg.dev/v2/test-project/newsclf/newsclf-train/manifests/latest\": denied: Permission \"artifactregistry.repositories.downloadArtifacts\" denied on resource \"projects/test-project/locations/europe-west1/repositories/newsclf\" (or it may not exist)" >&2
  exit 1
fi
cat >/dev/null
exit 0
"""
NO_SLEEP = "#!/usr/bin/env bash\nexit 0\n"  # the script's retry pauses, skipped


def insert_bodies(standin):  # noqa: F811
    return [r.body for r in standin.calls("POST", r"/zones/[^/]+/instances$")]


def test_a_new_vm_runs_as_the_newsclf_account(cli, standin):  # noqa: F811
    r = cli("--json", "cloud", "run", "--detach", *POLL)
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert body["serviceAccounts"] == [{"email": SA, "scopes": SCOPES}]


@pytest.mark.parametrize(
    ("setting", "email"),
    [
        ("trainer@shared-infra.iam.gserviceaccount.com", "trainer@shared-infra.iam.gserviceaccount.com"),
        ("trainer-vms", f"trainer-vms@{PROJECT}.iam.gserviceaccount.com"),
        ("default", "default"),  # opting out: Compute Engine's default account
    ],
)
def test_the_account_follows_the_setting(cli, standin, monkeypatch, setting, email):  # noqa: F811
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", setting)
    r = cli("--json", "cloud", "run", "--detach", *POLL)
    assert r.exit_code == 0, r.stderr
    [body] = insert_bodies(standin)
    assert body["serviceAccounts"] == [{"email": email, "scopes": SCOPES}]


def test_a_bad_account_setting_creates_nothing(cli, standin, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "VM")
    r = cli("cloud", "run", "--detach", *POLL)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        "Error: Invalid NEWSCLF_VM_SERVICE_ACCOUNT 'VM': give a service account email, or an account id of 6-30 "
        "lower-case letters, digits and hyphens starting with a letter"
    )
    assert insert_bodies(standin) == []


def test_a_reused_vm_made_as_the_default_account_runs_as_the_newsclf_account(cli, standin, monkeypatch):  # noqa: F811
    """A VM created before NEWSCLF_VM_SERVICE_ACCOUNT existed keeps the default account unless told otherwise."""
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "default")
    assert cli("cloud", "run", "--detach", *POLL).exit_code == 0
    standin.shutdown("europe-west1-b", VM)
    monkeypatch.delenv("NEWSCLF_VM_SERVICE_ACCOUNT")
    r = cli("cloud", "run", "--detach", *POLL)
    assert r.exit_code == 0, r.stderr
    [call] = standin.calls("POST", f"/instances/{VM}/setServiceAccount$")
    assert call.body == {"email": SA, "scopes": SCOPES}
    assert standin.instance(VM).resource["serviceAccounts"] == [{"email": SA, "scopes": SCOPES}]
    verbs = [c.path.rsplit("/", 1)[-1] for c in standin.calls("POST", f"/instances/{VM}/")]
    assert verbs.index("setServiceAccount") < verbs.index("start")


def test_a_reused_vm_with_the_right_account_is_not_changed(cli, standin):  # noqa: F811
    assert cli("cloud", "run", "--detach", *POLL).exit_code == 0
    standin.shutdown("europe-west1-b", VM)
    assert cli("cloud", "run", "--detach", *POLL).exit_code == 0
    assert standin.calls("POST", "/setServiceAccount$") == []


# --- a VM whose account has no grants -------------------------------------------------------------


@pytest.fixture
def ungranted_vm(standin, fake_gcs, tmp_path):  # noqa: F811
    """Started instances run the real startup script; their storage calls get Cloud Storage's 403 for an
    account without roles on the bucket, and their `docker pull` the registry's `denied`."""
    bucket = standin.gcs.test_bucket
    denied = gcs_error(
        403,
        f"{SA} does not have storage.objects.get access to the Google Cloud Storage object. Permission "
        "'storage.objects.get' denied on resource (or it may not exist).",
        "forbidden",
    )
    faults = [Fault("status", methods=None, path=f"/b/{bucket}/o", status=403, body=denied)]
    with FaultyProxy(fake_gcs.url, faults) as proxy:
        box = VMSandbox(tmp_path / "sandbox", proxy.url)
        (box.bin / "docker").write_text(DENIED_DOCKER)
        (box.bin / "sleep").write_text(NO_SLEEP)
        (box.bin / "sleep").chmod(0o755)
        standin.on_start = box.on_start
        standin.on_stop = box.on_stop
        yield box, proxy
        box.close()


def _cause(bucket: str) -> str:
    return (
        f"it could not pull the training image: its service account {SA} may lack roles/artifactregistry.reader on "
        "the repository (or the image is missing: `newsclf cloud build`); it could not write to "
        f"gs://{bucket}: its service account {SA} may lack roles/storage.objectUser on the bucket; run `newsclf "
        "cloud setup` to create the account and its grants (it names any it cannot make)"
    )


def test_cloud_run_names_the_likely_cause(cli, standin, ungranted_vm, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NEWSCLF_IMAGE", IMAGE)
    standin.registry.add_image(IMAGE)  # `cloud run` checks the image exists before any VM
    bucket = standin.gcs.test_bucket
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 1, r.stderr
    data = r.json["data"]
    run_id = data["run_id"]
    assert data["state"] == "interrupted" and data["vm_status"] == "TERMINATED"
    assert data["vm_lines"] == [
        f"starting run {run_id} with {IMAGE}",
        "logging docker in to europe-west1-docker.pkg.dev",
        f"pulling {IMAGE}",
        f"could not pull {IMAGE}",
        "startup failed (exit 1) before the job finished",
        f"could not write runs/{run_id}/status.json",
        "could not upload the log",
        "powering off",
    ]
    message = f"run {run_id} interrupted: VM {VM} stopped before run {run_id} finished: {_cause(bucket)}"
    assert r.json["errors"] == [message]
    assert r.stderr.splitlines()[-1] == f"Error: {message}"
    assert "spot preemption" not in r.stderr
    # the VM really was refused: its uploads went to the proxy and got 403, nothing reached the bucket
    proxy = ungranted_vm[1]
    assert [s.status for s in proxy.requests("POST")] and {s.status for s in proxy.requests("POST")} == {403}
    assert list(standin.gcs.bucket(bucket).list_blobs(prefix=f"runs/{run_id}/")) == []


def test_human_output_shows_the_vm_lines(cli, standin, ungranted_vm, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NEWSCLF_IMAGE", IMAGE)
    standin.registry.add_image(IMAGE)  # `cloud run` checks the image exists before any VM
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 1
    out = r.stdout.splitlines()
    i = out.index(f"Last lines of VM {VM}:")
    assert f"  could not pull {IMAGE}" in out[i + 1 :]
    assert out[-1].startswith("Log     newsclf cloud logs ")


def test_cloud_logs_names_the_likely_cause(cli, standin, ungranted_vm, monkeypatch):  # noqa: F811
    monkeypatch.setenv("NEWSCLF_IMAGE", IMAGE)
    standin.registry.add_image(IMAGE)  # `cloud run` checks the image exists before any VM
    bucket = standin.gcs.test_bucket
    r = cli("--json", "cloud", "run", "--detach", *POLL)
    run_id = r.json["data"]["run_id"]
    ungranted_vm[0].wait_all(timeout=60)
    r = cli("--json", "cloud", "logs", run_id)
    assert r.exit_code == 0, r.stderr  # before: "No run ... in gs://BUCKET/runs/" (nothing was ever written)
    data = r.json["data"]
    assert data["source"] == "bucket" and data["lines"] == [] and data["state"] is None
    assert f"could not pull {IMAGE}" in data["vm_lines"]
    assert data["cause"] == _cause(bucket)
    assert f"VM {VM} stopped before run {run_id} finished: {_cause(bucket)}" in r.stderr


def test_a_preempted_vm_keeps_the_usual_message(cli, standin, monkeypatch):  # noqa: F811
    """No line of the VM names a cause: the message stays the generic one."""

    def boot(server, inst):
        run_id = inst.metadata()["newsclf-run-id"]
        with open(inst.serial, "a") as f:
            f.write(f"newsclf-vm[{run_id}]: pulling {IMAGE}\n")
            f.write(
                f"newsclf-vm[{run_id}]: the VM is stopping; the run resumes from its checkpoints when the VM starts again\n"
            )
        server.shutdown(inst.zone, inst.name)

    standin.on_start = boot
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 1
    run_id = r.json["data"]["run_id"]
    assert r.json["errors"] == [
        f"run {run_id} interrupted: VM {VM} stopped before run {run_id} finished (spot preemption, --max-hours, or "
        "`cloud stop`)"
    ]
    assert r.json["data"]["vm_lines"][0] == f"pulling {IMAGE}"
    assert json.dumps(r.json).count("newsclf cloud setup") == 0


def test_an_account_you_may_not_use_names_setup(cli, standin, monkeypatch):  # noqa: F811
    """Compute Engine's answer when the account is missing or you lack actAs on it (it does not say which)."""
    message = (
        f"Invalid value for field 'resource.serviceAccounts[0].email': '{SA}'. The user does not have access to "
        f"service account '{SA}'.  User: 'me@example.com'.  Ask a project owner to grant you the "
        "iam.serviceAccountUser role on the service account"
    )
    refused = {
        "error": {
            "code": 400,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": "invalid"}],
        }
    }
    with FaultyProxy(
        standin.url, [Fault("status", methods=("POST",), path="/instances", status=400, body=refused)]
    ) as proxy:
        monkeypatch.setenv("NEWSCLF_COMPUTE_API_ENDPOINT", proxy.url)
        r = cli("cloud", "run", "--detach", *POLL)
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: Could not create the VM: {message}; run `newsclf cloud setup`, which creates the VMs' service "
        "account (NEWSCLF_VM_SERVICE_ACCOUNT) and checks that you may use it (roles/iam.serviceAccountUser)"
    )
    assert standin.instances == {}
