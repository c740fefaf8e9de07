"""`newsclf cloud setup`: the real storage client against fake-gcs-server, the real artifactregistry_v1,
cloudbuild_v1 and compute_v1 REST clients against local stand-ins; every row and fix checked to the letter."""

from __future__ import annotations

import uuid

import pytest

from tests import cloudbuild_standin
from tests.artifactregistry_standin import ArtifactRegistryStandIn, permission_denied, service_disabled
from tests.batch_standin import BatchStandIn
from tests.cloudbuild_standin import CloudBuildStandIn
from tests.compute_standin import ComputeStandIn
from tests.faulty_proxy import Fault, FaultyProxy, gcs_error
from tests.iam_standin import IamStandIn

PROJECT = "test-project"
REGION = "europe-west1"
REPO_PATH = f"/v1/projects/{PROJECT}/locations/{REGION}/repositories"
REPO_NAME = f"projects/{PROJECT}/locations/{REGION}/repositories/newsclf"
GRANT = "`gcloud projects add-iam-policy-binding test-project --member=user:YOU@example.com --role={role}`"
RERUN_ALL = "do what each row says, then rerun `newsclf cloud setup`"
VM_SA = f"newsclf-vm@{PROJECT}.iam.gserviceaccount.com"


@pytest.fixture
def services(fake_gcs, tmp_path, monkeypatch):
    """The REST stand-ins, each service's endpoint setting pointing at its own (IAM, Resource Manager
    and Secret Manager share one)."""
    from concurrent.futures import ThreadPoolExecutor

    registry = ArtifactRegistryStandIn(op_polls=1)
    builds = CloudBuildStandIn(fake_gcs.url)
    compute = ComputeStandIn(tmp_path / "compute", op_polls=0)
    iam = IamStandIn()
    batch = BatchStandIn(tmp_path / "batch")
    monkeypatch.setenv("NEWSCLF_BATCH_API_ENDPOINT", batch.url)
    monkeypatch.setenv("NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT", registry.url)
    monkeypatch.setenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT", builds.url)
    monkeypatch.setenv("NEWSCLF_COMPUTE_API_ENDPOINT", compute.url)
    for api in ("IAM", "RESOURCEMANAGER", "SECRETMANAGER"):
        monkeypatch.setenv(f"NEWSCLF_{api}_API_ENDPOINT", iam.url)
    yield registry, builds, compute, iam, batch
    with ThreadPoolExecutor(4) as pool:  # each shutdown waits out its server's poll interval: at once
        list(pool.map(lambda stop: stop(), (registry.close, builds.stop, compute.close, iam.close, batch.close)))


@pytest.fixture
def registry(services):
    return services[0]


@pytest.fixture
def builds(services):
    return services[1]


@pytest.fixture
def compute(services):
    return services[2]


@pytest.fixture
def cloud(gcs, services, monkeypatch):
    """Every service local; NEWSCLF_BUCKET names a bucket that does not exist yet."""
    name = f"new-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("NEWSCLF_BUCKET", name)
    gcs.new_bucket = name  # type: ignore[attr-defined]
    return gcs


def rows(result) -> dict[str, tuple[str, str]]:
    return {s["step"]: (s["status"], s["detail"]) for s in result.json["data"]["steps"]}


def skipped_note(url: str) -> str:
    return f"not checked: the storage endpoint {url} does not support testIamPermissions"


# --- from nothing to ready ----------------------------------------------------------------------


def test_creates_the_bucket_and_the_repository(cli, cloud, registry, builds, compute, services, fake_gcs):
    name = cloud.new_bucket
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["status"] == "ok" and r.json["errors"] == []
    data = r.json["data"]
    assert (data["project"], data["bucket"], data["ok"]) == (PROJECT, name, True)
    assert [s["step"] for s in data["steps"]] == [
        "project",
        "bucket",
        "bucket-access",
        "repository",
        "cloudbuild-api",
        "compute-api",
        "batch-api",
        "vm-account",
        "vm-bucket",
        "vm-repository",
        "vm-secret",
        "vm-logging",
        "vm-batch",
        "vm-act-as",
    ]
    assert rows(r) == {
        "project": ("ok", PROJECT),
        "bucket": (
            "created",
            f"gs://{name} created in {REGION} (uniform bucket-level access, public access prevented)",
        ),
        "bucket-access": ("skipped", skipped_note(fake_gcs.url)),
        "repository": ("created", f"{REGION}-docker.pkg.dev/{PROJECT}/newsclf created (Docker, {REGION})"),
        "cloudbuild-api": ("ok", "enabled"),
        "compute-api": ("ok", "enabled; zone europe-west1-b is UP"),
        "batch-api": ("ok", f"enabled; sweeps run as Batch jobs in {REGION}"),
        "vm-account": ("created", f"{VM_SA} created (the training VMs run as it)"),
        "vm-bucket": (
            "skipped",
            f"not checked: the storage endpoint {fake_gcs.url} does not support bucket IAM policies",
        ),
        "vm-repository": ("created", f"granted roles/artifactregistry.reader on repository newsclf ({REGION})"),
        "vm-secret": ("skipped", "NEWSCLF_WANDB_SECRET is not set: no W&B key for the VMs to read"),
        "vm-logging": ("created", f"granted roles/logging.logWriter on project {PROJECT}"),
        "vm-batch": ("created", f"granted roles/batch.agentReporter on project {PROJECT}"),
        "vm-act-as": ("ok", f"you may create VMs that run as {VM_SA} (iam.serviceAccounts.actAs)"),
    }
    assert cloud.lookup_bucket(name) is not None

    # the repository: looked up, then created with the id, the location and the DOCKER format
    creates = registry.calls("POST", "/repositories$")
    assert [(c.path, c.query["repositoryId"]) for c in creates] == [(REPO_PATH, "newsclf")]
    assert creates[0].body == {
        "format": 1,
        "description": "newsclf training images (newsclf cloud build)",
    }  # 1 = DOCKER
    assert registry.repositories[REPO_NAME]["format"] == "DOCKER"
    assert [c.path for c in registry.calls("GET")][0] == f"{REPO_PATH}/newsclf"
    assert registry.calls("GET", "/operations/"), "the create operation was polled to its end"
    # the API checks: one cheap read each
    assert [(q["method"], q["path"]) for q in builds.requests] == [("GET", f"/v1/projects/{PROJECT}/builds")]
    assert [c.path for c in compute.calls()] == [f"/compute/v1/projects/{PROJECT}/zones/europe-west1-b"]
    assert [(c.method, c.path) for c in services[4].requests] == [
        ("GET", f"/v1/projects/{PROJECT}/locations/{REGION}/jobs")
    ]


def test_a_second_run_creates_nothing(cli, cloud, registry):
    assert cli("cloud", "setup").exit_code == 0
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0
    got = rows(r)
    assert got["bucket"][0] == "ok" and got["bucket"][1].startswith(f"gs://{cloud.new_bucket} exists (")
    assert got["repository"] == ("ok", f"{REGION}-docker.pkg.dev/{PROJECT}/newsclf exists (Docker)")
    assert len(registry.calls("POST", "/repositories$")) == 1


def test_human_output_is_one_row_per_step(cli, cloud, fake_gcs):
    r = cli("cloud", "setup")
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ok       Project             {PROJECT}"
    assert lines[1].startswith(f"created  Bucket              gs://{cloud.new_bucket} created in {REGION}")
    assert lines[2] == f"skipped  Bucket access       {skipped_note(fake_gcs.url)}"
    assert [line.split()[0] for line in lines[3:6]] == ["created", "ok", "ok"]
    assert lines[-1] == "Ready: newsclf data push, then newsclf cloud build, then newsclf cloud run"
    assert r.stderr == ""


def test_bucket_is_created_in_the_region_with_uniform_access(cloud, registry, builds, compute, monkeypatch):
    """The create request itself, seen by a response hook on the real client's session."""
    import requests
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from newsclf.cloud.setup.context import SetupClients
    from newsclf.cloud.setup.run import run_setup
    from newsclf.config import get_settings

    monkeypatch.setenv("NEWSCLF_REGION", "europe-west4")
    sent = []
    session = requests.Session()
    session.hooks["response"].append(lambda resp, *a, **k: sent.append(resp.request))
    client = storage.Client(project=PROJECT, credentials=AnonymousCredentials(), _http=session)
    report = run_setup(get_settings(), clients=SetupClients(storage=client))
    assert report.steps[1].status == "created"
    post = [q for q in sent if q.method == "POST"]
    assert len(post) == 1
    assert "project=test-project" in post[0].url
    import json

    body = json.loads(post[0].body)
    assert body["name"] == cloud.new_bucket
    assert body["location"] == "europe-west4"
    assert body["iamConfiguration"] == {
        "uniformBucketLevelAccess": {"enabled": True},
        "publicAccessPrevention": "enforced",
    }
    # the repository follows NEWSCLF_REGION too
    assert registry.calls("POST")[0].path == f"/v1/projects/{PROJECT}/locations/europe-west4/repositories"


def test_no_create_only_checks(cli, cloud, registry, services):
    name = cloud.new_bucket
    r = cli("cloud", "setup", "--no-create", "--json")
    assert r.exit_code == 1
    assert rows(r)["bucket"] == (
        "missing",
        f"gs://{name} does not exist: rerun without --no-create, or `gcloud storage buckets create gs://{name} "
        f"--location={REGION} --uniform-bucket-level-access`",
    )
    assert rows(r)["bucket-access"] == ("skipped", "needs the bucket (see above)")
    assert rows(r)["repository"] == (
        "missing",
        f"Repository newsclf not found in {REGION}: rerun without --no-create, or `gcloud artifacts repositories "
        f"create newsclf --repository-format=docker --location={REGION} --project={PROJECT}`",
    )
    assert rows(r)["vm-account"] == (
        "missing",
        f"{VM_SA} does not exist: rerun without --no-create, or `gcloud iam service-accounts create newsclf-vm "
        f'--project={PROJECT} --display-name="newsclf training VMs"`',
    )
    assert {rows(r)[k] for k in ("vm-bucket", "vm-repository", "vm-secret", "vm-logging", "vm-batch", "vm-act-as")} == {
        ("skipped", "needs the VM service account (see above)")
    }
    summary = f"3 setup steps need fixing (Bucket, Artifact Registry, VM service account): {RERUN_ALL}"
    assert r.json["status"] == "error" and r.json["errors"] == [summary]
    assert r.stderr.splitlines()[-1] == f"Error: {summary}"
    assert cloud.lookup_bucket(name) is None
    assert registry.calls("POST") == [] and registry.repositories == {}
    assert services[3].accounts == {} and services[3].calls("POST", "serviceAccounts$") == []


def test_existing_bucket_and_repository_are_found(cli, cloud, registry, services, monkeypatch):
    monkeypatch.setenv("NEWSCLF_BUCKET", cloud.test_bucket)  # made by the gcs fixture
    registry.add_repository(PROJECT, REGION, "newsclf")
    iam = services[3]
    iam.add_account(VM_SA)  # and its grants, as an admin may have made them
    registry.policies.seed(
        REPO_NAME, [{"role": "roles/artifactregistry.reader", "members": [f"serviceAccount:{VM_SA}"]}]
    )
    project_policy = f"projects/{PROJECT}"
    iam.policies.seed(
        project_policy,
        [
            *iam.policies.bindings(project_policy),
            {"role": "roles/logging.logWriter", "members": [f"serviceAccount:{VM_SA}"]},
            {"role": "roles/batch.agentReporter", "members": [f"serviceAccount:{VM_SA}"]},
        ],
    )
    r = cli("cloud", "setup", "--no-create", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["bucket"][0] == "ok"
    assert rows(r)["repository"][0] == "ok"


def test_project_and_bucket_flags(cli, cloud, registry, builds, monkeypatch, tmp_path):
    monkeypatch.delenv("NEWSCLF_GCP_PROJECT")
    monkeypatch.delenv("NEWSCLF_BUCKET")
    other = ComputeStandIn(tmp_path / "other", project="other-project", op_polls=0)
    monkeypatch.setenv("NEWSCLF_COMPUTE_API_ENDPOINT", other.url)
    try:
        r = cli("cloud", "setup", "--project", "other-project", "--bucket", f"gs://{cloud.new_bucket}", "--json")
    finally:
        other.close()
    assert r.exit_code == 0, r.stderr
    assert (r.json["data"]["project"], r.json["data"]["bucket"]) == ("other-project", cloud.new_bucket)
    assert cloud.lookup_bucket(cloud.new_bucket) is not None
    assert registry.calls("POST")[0].path == f"/v1/projects/other-project/locations/{REGION}/repositories"
    assert [q["path"] for q in builds.requests] == ["/v1/projects/other-project/builds"]
    assert [c.path for c in other.calls()] == ["/compute/v1/projects/other-project/zones/europe-west1-b"]


# --- what is missing, and the fix ---------------------------------------------------------------


def test_disabled_apis_name_the_page_that_enables_them(cli, cloud, registry, builds, compute):
    registry.fail("GET", "/repositories/", service_disabled("artifactregistry.googleapis.com", "Artifact Registry API"))
    builds.error = cloudbuild_standin.service_disabled(PROJECT)
    compute.fail("GET", "/zones/europe-west1-b$", "service_disabled")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    enable = "The {title} is disabled in project test-project: enable it at https://console.cloud.google.com/apis/library/{service}?project=test-project and rerun `newsclf cloud setup`"  # noqa: E501
    got = rows(r)
    assert got["repository"] == (
        "missing",
        enable.format(title="Artifact Registry API", service="artifactregistry.googleapis.com"),
    )
    assert got["cloudbuild-api"] == (
        "missing",
        enable.format(title="Cloud Build API", service="cloudbuild.googleapis.com"),
    )
    assert got["compute-api"] == (
        "missing",
        enable.format(title="Compute Engine API", service="compute.googleapis.com"),
    )
    assert got["bucket"][0] == "created"  # the other steps still ran
    summary = f"3 setup steps need fixing (Artifact Registry, Cloud Build API, Compute Engine API): {RERUN_ALL}"
    assert r.json["errors"] == [summary]
    assert r.stderr.splitlines()[-1] == f"Error: {summary}"


def test_a_disabled_batch_api_is_named_with_its_page(cli, cloud, services):
    from tests.google_errors import service_disabled as disabled

    services[4].fail("GET", "/jobs$", disabled("batch.googleapis.com", "Batch API"))
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["batch-api"] == (
        "missing",
        "The Cloud Batch API is disabled in project test-project: enable it at "
        "https://console.cloud.google.com/apis/library/batch.googleapis.com?project=test-project and rerun "
        "`newsclf cloud setup`",
    )
    assert r.json["errors"] == [f"Cloud Batch API: {rows(r)['batch-api'][1]}"]


def test_one_failure_is_the_error_line(cli, cloud, builds):
    builds.error = cloudbuild_standin.service_disabled(PROJECT)
    r = cli("cloud", "setup")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: Cloud Build API: The Cloud Build API is disabled in project test-project: enable it at "
        "https://console.cloud.google.com/apis/library/cloudbuild.googleapis.com?project=test-project and rerun "
        "`newsclf cloud setup`"
    )
    lines = r.stdout.splitlines()
    assert len(lines) == 14  # every row, and no "Ready" line
    assert lines[4].startswith("missing  Cloud Build API     The Cloud Build API is disabled in project test-project")


def test_missing_roles_are_named(cli, cloud, registry, builds, compute):
    registry.fail("GET", "/repositories/", permission_denied("artifactregistry.repositories.get", REPO_NAME))
    builds.error = cloudbuild_standin.permission_denied(PROJECT)
    compute.fail("GET", "/zones/", "forbidden")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got["repository"] == (
        "missing",
        "No permission to read Artifact Registry repository newsclf in project test-project: grant "
        f"roles/artifactregistry.admin ({GRANT.format(role='roles/artifactregistry.admin')})",
    )
    assert got["cloudbuild-api"] == (
        "missing",
        "No permission to use Cloud Build in project test-project: grant roles/cloudbuild.builds.editor "
        f"({GRANT.format(role='roles/cloudbuild.builds.editor')})",
    )
    assert got["compute-api"] == (
        "missing",
        "No permission to use Compute Engine in project test-project: grant roles/compute.instanceAdmin.v1 "
        f"({GRANT.format(role='roles/compute.instanceAdmin.v1')})",
    )


def test_no_permission_to_create_the_repository(cli, cloud, registry):
    registry.fail(
        "POST", "/repositories$", permission_denied("artifactregistry.repositories.create", f"projects/{PROJECT}")
    )
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["repository"] == (
        "missing",
        "No permission to create Artifact Registry repository newsclf in project test-project: grant "
        f"roles/artifactregistry.admin ({GRANT.format(role='roles/artifactregistry.admin')}), or have an admin run "
        f"`gcloud artifacts repositories create newsclf --repository-format=docker --location={REGION} "
        f"--project={PROJECT}`",
    )
    assert registry.repositories == {}


def test_a_repository_of_another_format_is_an_error(cli, cloud, registry):
    registry.add_repository(PROJECT, REGION, "newsclf", fmt="MAVEN")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["repository"] == (
        "error",
        f"Repository newsclf in {REGION} holds MAVEN packages, not Docker images: set NEWSCLF_ARTIFACT_REPO to "
        "another name and rerun `newsclf cloud setup`",
    )
    assert registry.calls("POST") == []


def test_an_image_outside_artifact_registry_needs_no_repository(cli, cloud, registry, monkeypatch):
    monkeypatch.setenv("NEWSCLF_IMAGE", "ghcr.io/me/newsclf-train:v1")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["repository"] == (
        "skipped",
        "NEWSCLF_IMAGE (ghcr.io/me/newsclf-train:v1) is not in Artifact Registry: no repository to check",
    )
    assert registry.requests == []


def test_an_unknown_zone(cli, cloud, monkeypatch):
    monkeypatch.setenv("NEWSCLF_ZONE", "europe-west1-z")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["compute-api"] == (
        "error",
        "Zone europe-west1-z not found in project test-project: set NEWSCLF_ZONE to a zone of NEWSCLF_REGION "
        "(europe-west1-b, for example; `gcloud compute zones list` shows them)",
    )


def test_unreachable_artifact_registry(cli, cloud, monkeypatch):
    from tests.gcs_emulator import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT", endpoint)
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["repository"] == (
        "error",
        f"Cannot reach the Artifact Registry API at {endpoint}: check the network or NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT",
    )
    assert r.stderr.splitlines()[-1] == (
        f"Error: Artifact Registry: Cannot reach the Artifact Registry API at {endpoint}: check the network or "
        "NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT"
    )


def test_no_bucket_configured(cli, cloud, monkeypatch):
    monkeypatch.delenv("NEWSCLF_BUCKET")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got["bucket"] == ("missing", "No bucket configured: set NEWSCLF_BUCKET or pass --bucket")
    assert got["bucket-access"] == ("skipped", "needs the bucket (see above)")
    assert got["repository"][0] == "created"
    assert r.stderr.splitlines()[-1] == "Error: Bucket: No bucket configured: set NEWSCLF_BUCKET or pass --bucket"


def test_no_project_skips_the_rest(cli, cloud, registry, builds, compute, monkeypatch):
    monkeypatch.delenv("NEWSCLF_GCP_PROJECT")
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got.pop("project") == ("missing", "No Google Cloud project set: set NEWSCLF_GCP_PROJECT or pass --project")
    assert set(got.values()) == {("skipped", "needs the project (see above)")}
    assert r.json["data"]["project"] is None
    assert r.stderr.splitlines()[-1] == (
        "Error: Project: No Google Cloud project set: set NEWSCLF_GCP_PROJECT or pass --project"
    )
    assert registry.requests == [] and builds.requests == [] and compute.requests == []
    assert cloud.lookup_bucket(cloud.new_bucket) is None


def test_no_credentials(cli, cloud, monkeypatch, tmp_path):
    monkeypatch.delenv("NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT")  # the real endpoint: credentials needed
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    message = (
        f"No Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS points at {missing}, which does not exist; "
        "fix the path or unset it and run `gcloud auth application-default login`"
    )
    assert rows(r)["project"] == ("missing", message)
    assert r.stderr.splitlines()[-1] == f"Error: Project: {message}"


# --- bucket access, through a proxy that answers testIamPermissions as Cloud Storage does ----------


def _permissions(*granted: str) -> Fault:
    body = {"kind": "storage#testIamPermissionsResponse", "permissions": list(granted)}
    return Fault("status", methods=("GET",), path="/iam/testPermissions", status=200, body=body)


def test_bucket_access_granted(cli, cloud, fake_gcs, monkeypatch):
    from newsclf.cloud.setup.checks import BUCKET_PERMISSIONS

    with FaultyProxy(fake_gcs.url, [_permissions(*BUCKET_PERMISSIONS)]) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        r = cli("cloud", "setup", "--json")
    assert r.exit_code == 0, r.stderr
    assert rows(r)["bucket-access"] == ("ok", f"can read, list and write objects in gs://{cloud.new_bucket}")
    asked = [s.target for s in proxy.seen if "/iam/testPermissions" in s.target]
    assert len(asked) == 1
    for perm in BUCKET_PERMISSIONS:
        assert f"permissions={perm}" in asked[0]


def test_bucket_access_missing_names_the_role(cli, cloud, fake_gcs, monkeypatch):
    name = cloud.new_bucket
    with FaultyProxy(fake_gcs.url, [_permissions("storage.objects.get", "storage.objects.list")]) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    detail = (
        f"Missing storage.objects.create, storage.objects.delete on gs://{name}: grant roles/storage.objectAdmin "
        f"on the bucket (`gcloud storage buckets add-iam-policy-binding gs://{name} --member=user:YOU@example.com "
        "--role=roles/storage.objectAdmin`)"
    )
    assert rows(r)["bucket-access"] == ("missing", detail)
    assert r.stderr.splitlines()[-1] == f"Error: Bucket access: {detail}"


def test_someone_elses_bucket(cli, cloud, fake_gcs, monkeypatch):
    """403 on the bucket itself: it exists; with no object access either, the fix mentions another name."""
    name = cloud.new_bucket
    forbidden = gcs_error(
        403,
        f"anonymous caller does not have storage.buckets.get access to the Google Cloud Storage bucket {name}.",
        "forbidden",
    )
    faults = [
        Fault("status", methods=("GET",), path=f"/storage/v1/b/{name}?", status=403, body=forbidden),
        _permissions(),
    ]
    with FaultyProxy(fake_gcs.url, faults) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    got = rows(r)
    assert got["bucket"] == (
        "ok",
        f"gs://{name} exists (no permission to read its settings; object access is checked below)",
    )
    assert got["bucket-access"][1].endswith(", or set NEWSCLF_BUCKET to a bucket of your own if it is not yours")
    assert not [s for s in proxy.seen if s.method == "POST"], "nothing created"


def test_a_bucket_name_taken_elsewhere(cli, cloud, fake_gcs, monkeypatch):
    name = cloud.new_bucket
    taken = gcs_error(409, "The requested bucket name is not available.", "conflict")
    faults = [Fault("status", methods=("POST",), path="/storage/v1/b?", status=409, body=taken)]
    with FaultyProxy(fake_gcs.url, faults) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        r = cli("cloud", "setup", "--json")
    assert r.exit_code == 1
    assert rows(r)["bucket"] == (
        "error",
        f"The bucket name {name} is taken (bucket names are global): set NEWSCLF_BUCKET to another name",
    )
    assert rows(r)["bucket-access"] == ("skipped", "needs the bucket (see above)")
