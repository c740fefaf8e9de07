"""`newsclf cloud setup`: the training VMs' service account and its least-privilege grants.

The real clients against tests/iam_standin.py (IAM service accounts through AuthorizedSession,
resourcemanager_v3 and secretmanager_v1 over REST, and Cloud Storage bucket policies in front of
fake-gcs-server, which has none) and tests/artifactregistry_standin.py; every IAM, Resource
Manager, Secret Manager and bucket-policy request is checked against Google's discovery documents.
"""

from __future__ import annotations

import base64
import uuid

import pytest

from tests.artifactregistry_standin import ArtifactRegistryStandIn
from tests.batch_standin import BatchStandIn
from tests.cloudbuild_standin import CloudBuildStandIn
from tests.compute_standin import ComputeStandIn
from tests.iam_standin import IamStandIn, permission_denied, service_disabled

PROJECT = "test-project"
REGION = "europe-west1"
SA = f"newsclf-vm@{PROJECT}.iam.gserviceaccount.com"
MEMBER = f"serviceAccount:{SA}"
REPO = f"projects/{PROJECT}/locations/{REGION}/repositories/newsclf"
SECRET = f"projects/{PROJECT}/secrets/wandb-key"
VM_STEPS = ("vm-account", "vm-bucket", "vm-repository", "vm-secret", "vm-logging", "vm-batch", "vm-act-as")
BATCH_AGENT = {"role": "roles/batch.agentReporter", "members": [MEMBER]}
OWNER = {"role": "roles/owner", "members": ["user:owner@example.com"]}
DEFAULT_EDITOR = {
    "role": "roles/editor",
    "members": ["serviceAccount:123456789012-compute@developer.gserviceaccount.com"],
}


@pytest.fixture
def stand_ins(fake_gcs, tmp_path, monkeypatch):
    """Every service local: storage through the IAM stand-in (bucket policies) onto fake-gcs-server;
    NEWSCLF_BUCKET names a bucket that does not exist yet; a W&B secret exists."""
    from concurrent.futures import ThreadPoolExecutor

    registry = ArtifactRegistryStandIn(op_polls=0)
    builds = CloudBuildStandIn(fake_gcs.url)
    compute = ComputeStandIn(tmp_path / "compute", op_polls=0)
    iam = IamStandIn(storage_upstream=fake_gcs.url)
    iam.add_secret(PROJECT, "wandb-key")
    batch = BatchStandIn(tmp_path / "batch")
    monkeypatch.setenv("NEWSCLF_BATCH_API_ENDPOINT", batch.url)
    monkeypatch.setenv("NEWSCLF_GCP_PROJECT", PROJECT)
    monkeypatch.setenv("NEWSCLF_BUCKET", f"my-newsclf-bucket-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("NEWSCLF_WANDB_SECRET", "wandb-key")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", iam.url)
    monkeypatch.setenv("NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT", registry.url)
    monkeypatch.setenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT", builds.url)
    monkeypatch.setenv("NEWSCLF_COMPUTE_API_ENDPOINT", compute.url)
    for api in ("IAM", "RESOURCEMANAGER", "SECRETMANAGER"):
        monkeypatch.setenv(f"NEWSCLF_{api}_API_ENDPOINT", iam.url)
    yield iam, registry
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda stop: stop(), (registry.close, builds.stop, compute.close, iam.close, batch.close)))


@pytest.fixture
def iam(stand_ins):
    return stand_ins[0]


@pytest.fixture
def registry(stand_ins):
    return stand_ins[1]


def rows(result) -> dict[str, tuple[str, str]]:
    return {s["step"]: (s["status"], s["detail"]) for s in result.json["data"]["steps"]}


def bucket_policy(bucket: str) -> str:
    return f"projects/_/buckets/{bucket}"


# --- from nothing to ready, and again -----------------------------------------------------------


def test_creates_the_account_and_grants_only_what_the_vm_needs(cli, iam, registry, monkeypatch):
    import os

    bucket = os.environ["NEWSCLF_BUCKET"]
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    got = rows(r)
    assert {k: got[k] for k in VM_STEPS} == {
        "vm-account": ("created", f"{SA} created (the training VMs run as it)"),
        "vm-bucket": ("created", f"granted roles/storage.objectUser on gs://{bucket}"),
        "vm-repository": ("created", f"granted roles/artifactregistry.reader on repository newsclf ({REGION})"),
        "vm-secret": ("created", "granted roles/secretmanager.secretAccessor on secret wandb-key"),
        "vm-logging": ("created", f"granted roles/logging.logWriter on project {PROJECT}"),
        "vm-batch": ("created", f"granted roles/batch.agentReporter on project {PROJECT}"),
        "vm-act-as": ("ok", f"you may create VMs that run as {SA} (iam.serviceAccounts.actAs)"),
    }

    # the account: looked up by email, then created in the project with its id and a description
    assert [(c.method, c.path) for c in iam.calls(path="serviceAccounts")][:2] == [
        ("GET", f"/v1/projects/-/serviceAccounts/{SA}"),
        ("POST", f"/v1/projects/{PROJECT}/serviceAccounts"),
    ]
    create = iam.calls("POST", "serviceAccounts$")[0].body
    assert create == {
        "accountId": "newsclf-vm",
        "serviceAccount": {
            "displayName": "newsclf training VMs",
            "description": "Runs newsclf's training VMs (newsclf cloud setup manages its roles)",
        },
    }
    assert iam.accounts[SA]["displayName"] == "newsclf training VMs"
    # each role on its own resource only, every binding that was there kept
    assert iam.policies.members(bucket_policy(bucket), "roles/storage.objectUser") == {MEMBER}
    assert {b["role"] for b in iam.policies.bindings(bucket_policy(bucket))} == {
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketReader",
        "roles/storage.objectUser",
    }
    assert registry.policies.members(REPO, "roles/artifactregistry.reader") == {MEMBER}
    assert iam.policies.members(SECRET, "roles/secretmanager.secretAccessor") == {MEMBER}
    assert iam.policies.bindings(f"projects/{PROJECT}") == [
        OWNER,
        DEFAULT_EDITOR,
        {"role": "roles/logging.logWriter", "members": [MEMBER]},
        BATCH_AGENT,
    ]
    # nothing broader anywhere: the project policy holds only the log writer and Batch reporter roles for the account
    project_roles = {b["role"] for b in iam.policies.bindings(f"projects/{PROJECT}") if MEMBER in b["members"]}
    assert project_roles == {"roles/logging.logWriter", "roles/batch.agentReporter"}
    # the user may use the account: asked with testIamPermissions, for actAs only
    tested = iam.calls("POST", ":testIamPermissions$")
    assert [c.body for c in tested] == [{"permissions": ["iam.serviceAccounts.actAs"]}]


def test_writes_carry_the_etag_they_read(cli, iam, registry):
    assert cli("cloud", "setup").exit_code == 0
    project_set = iam.calls("POST", f"/v3/projects/{PROJECT}:setIamPolicy$")
    assert len(project_set) == 2  # the log writer, then the Batch reporter
    sent = project_set[0].body["policy"]
    assert base64.b64decode(sent["etag"]).startswith(b"BwY")  # the etag read, sent back unchanged
    assert sent["bindings"][:2] == [OWNER, DEFAULT_EDITOR]
    bucket_put = iam.calls("PUT", "/iam$")
    assert len(bucket_put) == 1 and bucket_put[0].body["etag"]
    secret_set = iam.calls("POST", f"/v1/{SECRET}:setIamPolicy$")
    assert len(secret_set) == 1 and secret_set[0].body["policy"]["etag"]
    assert registry.calls("POST", ":setIamPolicy$")[0].body["policy"]["etag"]


def test_a_second_run_is_all_ok_and_writes_no_policy(cli, iam, registry):
    assert cli("cloud", "setup").exit_code == 0
    writes = len(iam.policy_sets()) + len(registry.calls("POST", ":setIamPolicy$"))
    assert writes == 5  # bucket, secret, project (twice), repository
    creates = len(iam.calls("POST", "serviceAccounts$"))

    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    got = rows(r)
    assert {got[k][0] for k in VM_STEPS} == {"ok"}
    assert got["vm-account"] == ("ok", f"{SA} exists")
    assert got["vm-logging"] == ("ok", f"roles/logging.logWriter on project {PROJECT}")
    assert len(iam.policy_sets()) + len(registry.calls("POST", ":setIamPolicy$")) == writes
    assert len(iam.calls("POST", "serviceAccounts$")) == creates == 1


def test_human_rows(cli, iam):
    r = cli("cloud", "setup")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[7] == f"created  VM service account  {SA} created (the training VMs run as it)"
    assert lines[13] == f"ok       Run VMs as it       you may create VMs that run as {SA} (iam.serviceAccounts.actAs)"
    assert lines[-1] == "Ready: newsclf data push, then newsclf cloud build, then newsclf cloud run"


# --- read-modify-write ----------------------------------------------------------------------------


def test_a_change_made_in_between_is_kept(cli, iam):
    """Someone grants a role between our read and our write: our stale etag is refused, we read again,
    and both grants end up in the policy."""
    project = f"projects/{PROJECT}"
    colleague = {"role": "roles/viewer", "members": ["user:colleague@example.com"]}

    def meanwhile(resource: str) -> None:
        if resource == project and colleague not in iam.policies.bindings(project):
            iam.policies.seed(project, [*iam.policies.bindings(project), colleague])

    iam.after_get = meanwhile
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["vm-logging"] == ("created", f"granted roles/logging.logWriter on project {PROJECT}")
    assert len(iam.calls("POST", f"/v3/{project}:setIamPolicy$")) == 3  # the first was refused (ABORTED); then Batch's
    assert iam.policies.bindings(project) == [
        OWNER,
        DEFAULT_EDITOR,
        colleague,
        {"role": "roles/logging.logWriter", "members": [MEMBER]},
        BATCH_AGENT,
    ]


def test_conditional_bindings_are_kept_and_do_not_count(cli, iam):
    project = f"projects/{PROJECT}"
    until = {"title": "until 2030", "expression": "request.time < timestamp('2030-01-01T00:00:00Z')"}
    conditional = {"role": "roles/logging.logWriter", "members": [MEMBER], "condition": until}
    iam.policies.seed(project, [OWNER, conditional], version=3)
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    sent = iam.calls("POST", f"/v3/{project}:setIamPolicy$")[0].body["policy"]
    assert sent["version"] == 3  # a policy with conditions is written back as version 3
    assert sent["bindings"] == [OWNER, conditional, {"role": "roles/logging.logWriter", "members": [MEMBER]}]
    asked = iam.calls("POST", f"/v3/{project}:getIamPolicy$")[0].body
    assert asked == {"options": {"requestedPolicyVersion": 3}}


def test_grants_wait_for_a_new_account_to_propagate(cli, iam, monkeypatch):
    from newsclf.cloud.setup import grants

    monkeypatch.setattr(grants, "PROPAGATION_STEP_S", 0.01)
    iam.propagation_sets = 2  # the new account is unknown to its first two grants
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["vm-bucket"][0] == "created"  # the first grant waited for the account
    bucket_puts = iam.calls("PUT", "/iam$")
    assert len(bucket_puts) == 3
    assert rows(r)["vm-logging"][0] == "created"


def test_the_act_as_check_waits_for_a_new_account(cli, iam, monkeypatch):
    from newsclf.cloud.setup import grants
    from tests.google_errors import google_error

    monkeypatch.setattr(grants, "PROPAGATION_STEP_S", 0.01)
    iam.fail(
        "POST", ":testIamPermissions$", (404, google_error(404, "NOT_FOUND", f"Unknown service account {SA}")), times=2
    )
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["vm-act-as"][0] == "ok"
    assert len(iam.calls("POST", ":testIamPermissions$")) == 3


# --- only checking, and what is missing -----------------------------------------------------------


def test_no_create_names_each_missing_grant(cli, iam, registry, monkeypatch):
    import os

    bucket = os.environ["NEWSCLF_BUCKET"]
    assert cli("cloud", "setup").exit_code == 0  # bucket, repository, account and grants
    for resource in (bucket_policy(bucket), SECRET, f"projects/{PROJECT}"):  # an admin took the grants away
        iam.policies.seed(resource, [b for b in iam.policies.bindings(resource) if MEMBER not in b["members"]])
    registry.policies.seed(REPO, [])
    writes = len(iam.policy_sets())

    r = cli("cloud", "setup", "--no-create", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got["vm-account"] == ("ok", f"{SA} exists")
    assert got["vm-bucket"] == (
        "missing",
        f"{SA} lacks roles/storage.objectUser on gs://{bucket}: rerun without --no-create, or `gcloud storage buckets "
        f"add-iam-policy-binding gs://{bucket} --member={MEMBER} --role=roles/storage.objectUser`",
    )
    assert got["vm-repository"] == (
        "missing",
        f"{SA} lacks roles/artifactregistry.reader on repository newsclf ({REGION}): rerun without --no-create, or "
        f"`gcloud artifacts repositories add-iam-policy-binding newsclf --location={REGION} --project={PROJECT} "
        f"--member={MEMBER} --role=roles/artifactregistry.reader`",
    )
    assert got["vm-secret"] == (
        "missing",
        f"{SA} lacks roles/secretmanager.secretAccessor on secret wandb-key: rerun without --no-create, or `gcloud "
        f"secrets add-iam-policy-binding wandb-key --project={PROJECT} --member={MEMBER} "
        "--role=roles/secretmanager.secretAccessor`",
    )
    assert got["vm-logging"] == (
        "missing",
        f"{SA} lacks roles/logging.logWriter on project {PROJECT}: rerun without --no-create, or `gcloud projects "
        f"add-iam-policy-binding {PROJECT} --member={MEMBER} --role=roles/logging.logWriter`",
    )
    assert got["vm-batch"] == (
        "missing",
        f"{SA} lacks roles/batch.agentReporter on project {PROJECT}: rerun without --no-create, or `gcloud projects "
        f"add-iam-policy-binding {PROJECT} --member={MEMBER} --role=roles/batch.agentReporter`",
    )
    summary = (
        "5 setup steps need fixing (VM bucket access, VM image access, VM W&B secret, VM log writing, VM Batch "
        "reporting): do what each row says, then rerun `newsclf cloud setup`"
    )
    assert r.json["errors"] == [summary]
    assert (
        len(iam.policy_sets()) == writes and registry.policies.members(REPO, "roles/artifactregistry.reader") == set()
    )


def test_you_may_not_act_as_the_account(cli, iam):
    iam.caller_permissions = set()
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    detail = (
        f"You may not create VMs that run as {SA} (no iam.serviceAccounts.actAs): grant roles/iam.serviceAccountUser "
        f"on it (`gcloud iam service-accounts add-iam-policy-binding {SA} --member=user:YOU@example.com "
        "--role=roles/iam.serviceAccountUser`)"
    )
    assert rows(r)["vm-act-as"] == ("missing", detail)
    assert r.stderr.splitlines()[-1] == f"Error: Run VMs as it: {detail}"


def test_no_permission_to_grant_names_both_fixes(cli, iam):
    iam.fail(
        "POST",
        "^/v3/.*:setIamPolicy$",
        permission_denied("resourcemanager.projects.setIamPolicy", f"projects/{PROJECT}"),
    )
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["vm-logging"] == (
        "missing",
        f"No permission to change the project's IAM policy in project {PROJECT}: grant "
        f"roles/resourcemanager.projectIamAdmin (`gcloud projects add-iam-policy-binding {PROJECT} "
        "--member=user:YOU@example.com --role=roles/resourcemanager.projectIamAdmin`), or have an admin run "
        f"`gcloud projects add-iam-policy-binding {PROJECT} --member={MEMBER} --role=roles/logging.logWriter`",
    )
    assert iam.policies.members(f"projects/{PROJECT}", "roles/logging.logWriter") == set()


def test_no_permission_to_create_the_account(cli, iam):
    iam.fail("POST", "serviceAccounts$", permission_denied("iam.serviceAccounts.create", f"projects/{PROJECT}"))
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got["vm-account"] == (
        "missing",
        f"No permission to create service account {SA} in project {PROJECT}: grant roles/iam.serviceAccountAdmin "
        f"(`gcloud projects add-iam-policy-binding {PROJECT} --member=user:YOU@example.com "
        "--role=roles/iam.serviceAccountAdmin`), or have an admin run `gcloud iam service-accounts create newsclf-vm "
        f'--project={PROJECT} --display-name="newsclf training VMs"`',
    )
    assert {got[k] for k in VM_STEPS[1:]} == {("skipped", "needs the VM service account (see above)")}
    assert iam.accounts == {}


def test_iam_api_disabled(cli, iam):
    iam.fail(
        "GET", "serviceAccounts/", service_disabled("iam.googleapis.com", "Identity and Access Management (IAM) API")
    )
    r = cli("cloud", "setup", "--json")
    assert rows(r)["vm-account"] == (
        "missing",
        f"The IAM API is disabled in project {PROJECT}: enable it at "
        f"https://console.cloud.google.com/apis/library/iam.googleapis.com?project={PROJECT} and rerun `newsclf cloud setup`",
    )


def test_unreachable_iam(cli, iam, monkeypatch):
    from tests.gcs_emulator import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NEWSCLF_IAM_API_ENDPOINT", endpoint)
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["vm-account"] == (
        "error",
        f"Cannot reach the IAM API at {endpoint}: check the network or NEWSCLF_IAM_API_ENDPOINT",
    )


def test_a_missing_secret(cli, iam, monkeypatch):
    monkeypatch.setenv("NEWSCLF_WANDB_SECRET", f"projects/{PROJECT}/secrets/wandb-team/versions/latest")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["vm-secret"] == (
        "missing",
        f"Secret wandb-team not found in project {PROJECT}: create it with your W&B key (`gcloud secrets create "
        f"wandb-team --project={PROJECT} --data-file=-`, the key on stdin) or fix NEWSCLF_WANDB_SECRET",
    )
    assert iam.calls("GET", f"/v1/projects/{PROJECT}/secrets/wandb-team:getIamPolicy$")


def test_no_secret_configured_is_skipped(cli, iam, monkeypatch):
    monkeypatch.delenv("NEWSCLF_WANDB_SECRET")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["vm-secret"] == ("skipped", "NEWSCLF_WANDB_SECRET is not set: no W&B key for the VMs to read")
    assert iam.calls(path="/secrets/") == []


def test_an_account_of_your_choosing(cli, iam, monkeypatch):
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "trainer-vms")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    email = f"trainer-vms@{PROJECT}.iam.gserviceaccount.com"
    assert rows(r)["vm-account"] == ("created", f"{email} created (the training VMs run as it)")
    assert iam.calls("POST", "serviceAccounts$")[0].body["accountId"] == "trainer-vms"


def test_an_account_of_another_project_is_not_created(cli, iam, monkeypatch):
    email = "trainer@shared-infra.iam.gserviceaccount.com"
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", email)
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["vm-account"] == (
        "missing",
        f"{email} does not exist, and newsclf creates service accounts only in project {PROJECT}: create it in its "
        "own project, or unset NEWSCLF_VM_SERVICE_ACCOUNT",
    )
    assert iam.calls("POST", "serviceAccounts$") == []


def test_the_default_compute_account_is_left_alone(cli, iam, monkeypatch):
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "default")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["vm-account"][0] == "skipped"
    assert iam.requests == []


def test_a_bad_account_id(cli, iam, monkeypatch):
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "VM")
    r = cli("cloud", "setup", "--json")
    assert rows(r)["vm-account"] == (
        "missing",
        "Invalid NEWSCLF_VM_SERVICE_ACCOUNT 'VM': give a service account email, or an account id of 6-30 lower-case "
        "letters, digits and hyphens starting with a letter",
    )


# --- the stand-in holds requests to Google's contract -------------------------------------------


def test_the_stand_in_refuses_what_google_refuses(iam):
    import requests

    bad_field = requests.post(
        f"{iam.url}/v1/projects/{PROJECT}/serviceAccounts",
        json={"accountId": "newsclf-vm", "displayName": "x"},
        timeout=10,
    )
    assert bad_field.status_code == 400 and 'Unknown name "displayName"' in bad_field.json()["error"]["message"]
    bad_type = requests.post(
        f"{iam.url}/v3/projects/{PROJECT}:setIamPolicy", json={"policy": {"version": "three"}}, timeout=10
    )
    assert bad_type.status_code == 400 and "expected an integer" in bad_type.json()["error"]["message"]
    wrong_verb = requests.put(f"{iam.url}/v1/projects/{PROJECT}/secrets/wandb-key:setIamPolicy", json={}, timeout=10)
    assert (
        wrong_verb.status_code == 400
        and "no secretmanager.v1 method answers PUT" in wrong_verb.json()["error"]["message"]
    )
    assert iam.accounts == {} and iam.policies.sets == []


def test_config_show_lists_the_setting(cli, monkeypatch):
    monkeypatch.setenv("NEWSCLF_VM_SERVICE_ACCOUNT", "trainer@my-project.iam.gserviceaccount.com")
    r = cli("config", "show", "--json")
    assert r.exit_code == 0
    found = [s for s in r.json["data"]["settings"] if s["name"] == "vm_service_account"]
    assert found == [
        {
            "name": "vm_service_account",
            "variable": "NEWSCLF_VM_SERVICE_ACCOUNT",
            "value": "trainer@my-project.iam.gserviceaccount.com",
            "source": "env NEWSCLF_VM_SERVICE_ACCOUNT",
        }
    ]
