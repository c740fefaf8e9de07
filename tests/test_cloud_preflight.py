"""`newsclf cloud run` checks what it can before a VM is paid for: the train options (parsed by the job's
own parser) and the image (in Artifact Registry, built for this newsclf version); `cloud status` prices a
stopped VM's disk. The real compute_v1 and artifactregistry_v1 clients against the local stand-ins."""

from __future__ import annotations

import json

import pytest
import requests

from newsclf import __version__
from tests.artifactregistry_standin import ArtifactRegistryStandIn, permission_denied, service_disabled
from tests.compute_standin import standin  # noqa: F401  (fixture; its `.registry` is the Artifact Registry stand-in)

PROJECT = "test-project"
REPO = "europe-west1-docker.pkg.dev/test-project/newsclf"
IMAGE = f"{REPO}/newsclf-train"
PACKAGE = f"projects/{PROJECT}/locations/europe-west1/repositories/newsclf/packages/newsclf-train"
POLL = ("--poll-interval", "0.05")


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def inserts(standin) -> list:
    return standin.calls("POST", r"/instances$")


# --- train options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochz", "2"], "No such option: --epochz (Possible options: --epochs)"),
        (["--epochs", "2", "--lr", "banana"], "Invalid value for '--lr': "),
        (
            ["--demo"],
            "--demo trains on the built-in demo corpus, which a cloud job does not have: run `newsclf train "
            "--demo` here, or push a dataset with `newsclf data push` and drop --demo",
        ),
        (["--lr", "-1"], "--lr must be > 0: fix the flag or its NEWSCLF_* setting"),
        (
            ["--data", "data/processed"],
            "Invalid value: --data cannot be used in a job: the job takes data and run from the bucket",
        ),
    ],
    ids=["unknown-option", "bad-value", "demo", "out-of-range", "not-in-a-job"],
)
def test_bad_train_options_fail_before_anything_is_asked_or_created(cli, standin, args, message):
    r = cli("cloud", "run", *POLL, "--", *args)
    assert r.exit_code == 2, r.stderr
    assert last_line(r.stderr).startswith(f"Error: Train options after `--`: {message}")
    assert "Usage: newsclf cloud run" in r.stderr
    assert standin.requests == []  # no Compute Engine request at all, let alone a VM
    assert standin.registry.requests == []


def test_bad_train_options_in_json_mode_and_in_a_sweep(cli, standin):
    r = cli("--json", "cloud", "run", "--", "--epochz", "2")
    assert r.exit_code == 2
    assert r.json["status"] == "error"
    assert r.json["errors"] == ["Train options after `--`: No such option: --epochz (Possible options: --epochs)"]
    r = cli("cloud", "run", "--sweep", "lr=1e-5,2e-5", *POLL, "--", "--lr", "banana")
    assert r.exit_code == 2
    assert standin.requests == []


def test_good_train_options_reach_the_vm_unchanged(cli, standin):
    r = cli("--json", "cloud", "run", "--detach", *POLL, "--", "--epochs", "2", "--lr=3e-5", "--model", "my model")
    assert r.exit_code == 0, r.stderr
    [insert] = inserts(standin)
    items = {i["key"]: i["value"] for i in insert.body["metadata"]["items"]}
    assert items["newsclf-train-args"] == "--epochs\n2\n--lr=3e-5\n--model\nmy model"


# --- the image ---------------------------------------------------------------------------------------


def test_the_vm_pulls_the_image_built_for_this_version(cli, standin):
    r = cli("cloud", "run", "--detach", *POLL)
    assert r.exit_code == 0, r.stderr
    [insert] = inserts(standin)
    items = {i["key"]: i["value"] for i in insert.body["metadata"]["items"]}
    assert items["newsclf-image"] == f"{IMAGE}:{__version__}"
    [asked] = standin.registry.calls("GET")
    assert asked.path == f"/v1/{PACKAGE}/tags/{__version__}"


def test_a_missing_image_fails_before_any_vm_naming_cloud_build(cli, standin):
    standin.registry.tags.clear()  # the repository exists, nothing was ever pushed
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: No training image for newsclf {__version__} in {REPO} ({IMAGE}:{__version__}): "
        "build it with `newsclf cloud build`"
    )
    assert standin.requests == []


def test_an_image_of_an_older_newsclf_fails_before_any_vm(cli, standin):
    registry = standin.registry
    registry.tags.clear()
    # what `cloud build` of newsclf 0.0.9 pushed: one image, tagged with its source hash, version and latest
    digest = "sha256:" + "ab" * 32
    for tag in ("c0ffee" * 10 + "c0ff", "0.0.9", "latest"):
        registry.add_image(f"{IMAGE}:{tag}", digest=digest)
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: The training image in {REPO} is for newsclf 0.0.9, and this is newsclf {__version__}: build "
        f"the image for this version with `newsclf cloud build` (it pushes {IMAGE}:{__version__})"
    )
    assert standin.requests == []
    # the version was read from the tags of the image `latest` points at
    assert [c.path for c in registry.calls("GET")][-1] == f"/v1/{PACKAGE}/versions/{digest}"


def test_an_explicit_image_is_checked_as_given(cli, standin):
    r = cli("cloud", "run", "--image", f"{IMAGE}:mine", *POLL)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: No image {IMAGE}:mine in Artifact Registry: build it with `newsclf cloud build`, or fix "
        "--image/NEWSCLF_IMAGE"
    )
    assert standin.requests == []

    version = standin.registry.add_image(f"{IMAGE}:mine")
    digest = version.rsplit("/", 1)[1]
    r = cli("cloud", "run", "--detach", "--image", f"{IMAGE}@{digest}", *POLL)
    assert r.exit_code == 0, r.stderr
    assert standin.registry.calls("GET")[-1].path == f"/v1/{PACKAGE}/versions/{digest}"


def test_an_untagged_newsclf_image_gets_the_version_tag(cli, standin, monkeypatch):
    other = "europe-west1-docker.pkg.dev/test-project/team/trainer"
    monkeypatch.setenv("NEWSCLF_IMAGE", other)  # `cloud build` pushes there, tagged with the version
    standin.registry.add_image(f"{other}:{__version__}")
    r = cli("cloud", "run", "--detach", *POLL)
    assert r.exit_code == 0, r.stderr
    items = {i["key"]: i["value"] for i in inserts(standin)[0].body["metadata"]["items"]}
    assert items["newsclf-image"] == f"{other}:{__version__}"


def test_an_image_outside_artifact_registry_is_not_checked(cli, standin):
    r = cli("cloud", "run", "--detach", "--image", "ghcr.io/me/newsclf:1", *POLL)
    assert r.exit_code == 0, r.stderr
    assert "Image ghcr.io/me/newsclf:1 is not in Artifact Registry: not checked before the VM pulls it" in r.stderr
    assert standin.registry.requests == [] and len(inserts(standin)) == 1


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            permission_denied("artifactregistry.tags.get", f"{PACKAGE}/tags/{__version__}"),
            f"No permission to read the image {IMAGE}:{__version__} in project {PROJECT}: grant "
            f"roles/artifactregistry.reader (`gcloud projects add-iam-policy-binding {PROJECT} "
            "--member=user:YOU@example.com --role=roles/artifactregistry.reader`)",
        ),
        (
            service_disabled("artifactregistry.googleapis.com", "Artifact Registry API"),
            f"The Artifact Registry API is disabled in project {PROJECT}: enable it at "
            f"https://console.cloud.google.com/apis/library/artifactregistry.googleapis.com?project={PROJECT} "
            "and rerun `newsclf cloud setup`",
        ),
    ],
    ids=["permission-denied", "api-disabled"],
)
def test_registry_errors_are_one_line_and_start_no_vm(cli, standin, answer, message):
    standin.registry.fail("GET", "/tags/", answer)
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {message}"
    assert standin.requests == []


# --- the stand-in holds the code to Google's contract ------------------------------------------------


def test_the_registry_standin_answers_400_for_what_artifact_registry_rejects():
    registry = ArtifactRegistryStandIn()
    repos = f"{registry.url}/v1/projects/{PROJECT}/locations/europe-west1/repositories"
    r = requests.post(f"{repos}?repositoryId=newsclf", json={"format": "DOCKR", "labelz": {}}, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    r = requests.get(f"{registry.url}/v1/{PACKAGE}/versions/sha256:{'0' * 64}?view=EVERYTHING", timeout=10)
    assert r.status_code == 400
    create, get = registry.violations
    assert "format: invalid value 'DOCKR'" in create and 'Unknown name "labelz"' in create
    assert get.startswith(f"GET /v1/{PACKAGE}/versions/") and "view: invalid value 'EVERYTHING'" in get
    assert registry.repositories == {}
    # what the REST client sends is accepted: enums as numbers (`$alt=json;enum-encoding=int`)
    r = requests.post(f"{repos}?repositoryId=newsclf&%24alt=json%3Benum-encoding%3Dint", json={"format": 1}, timeout=10)
    assert r.status_code == 200, r.text
    with pytest.raises(AssertionError, match="requests Artifact Registry would reject with 400"):
        registry.close()


# --- cloud status: a stopped VM still bills for its disk ---------------------------------------------


def test_status_prices_a_stopped_vms_disk(cli, standin):
    r = cli("cloud", "run", "--detach", "--disk-gb", "200", *POLL)
    assert r.exit_code == 0, r.stderr
    assert cli("cloud", "stop", "--yes", *POLL).exit_code == 0  # waits for TERMINATED
    r = cli("--json", "cloud", "status")
    assert r.exit_code == 0, r.stderr
    [row] = r.json["data"]["vms"]
    assert row["state"] == "TERMINATED"
    # pd-balanced, $0.10 per GB-month (https://cloud.google.com/compute/disks-image-pricing), 730 h a month
    assert row["est_usd_per_hour"] == pytest.approx(200 * 0.10 / 730, abs=1e-4)
    assert (row["disk_gb"], row["est_disk_usd_per_month"]) == (200, 20.0)
    human = cli("cloud", "status")
    assert "$0.03" in human.stdout.split("newsclf-train", 1)[1].splitlines()[0]  # est. $/h, not $0.00
    assert (
        "Stopped VMs still bill for their disks: est. $20.00/month for 200 GB; `newsclf cloud stop --delete` "
        "deletes a VM with its disk."
    ) in human.stdout
    assert json.dumps(row)  # the JSON row stays serialisable with the new fields
