"""`newsclf cloud setup`: check, and create where missing, what `cloud build` and `cloud run` need,
including the training VMs' own service account and its least-privilege grants.

Each step is checked and reported as a row (ok / created / missing / error / skipped) whose detail
names the fix; one failing step never hides the others. Idempotent: a second run creates nothing.
google.cloud is imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from newsclf.errors import CloudError

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger(__name__)

OK, CREATED, MISSING, ERROR, SKIPPED = "ok", "created", "missing", "error", "skipped"
FAILED = frozenset({MISSING, ERROR})  # what makes `cloud setup` exit 1

TITLES = {
    "project": "Project",
    "bucket": "Bucket",
    "bucket-access": "Bucket access",
    "repository": "Artifact Registry",
    "cloudbuild-api": "Cloud Build API",
    "compute-api": "Compute Engine API",
    "batch-api": "Cloud Batch API",
    "vm-account": "VM service account",
    "vm-bucket": "VM bucket access",
    "vm-repository": "VM image access",
    "vm-secret": "VM W&B secret",
    "vm-logging": "VM log writing",
    "vm-batch": "VM Batch reporting",
    "vm-act-as": "Run VMs as it",
}
# what newsclf does in the bucket: read, list, write, and overwrite (status.json, resumed uploads)
BUCKET_PERMISSIONS = ("storage.objects.create", "storage.objects.delete", "storage.objects.get", "storage.objects.list")
BUCKET_ROLE = "roles/storage.objectAdmin"  # holds all of BUCKET_PERMISSIONS
CALL_TIMEOUT_S = 60.0  # per API call: setup checks, it does not wait out outages
CREATE_TIMEOUT_S = 300.0  # creating a repository is a long-running operation (seconds, usually)
# A new service account takes a while to be known to the services that grant roles on resources
# ("Service account ... does not exist"): grants to a just-created account are retried this long.
PROPAGATION_S = 120.0
PROPAGATION_STEP_S = 2.0  # first wait; doubles up to 15 s
POLICY_ATTEMPTS = 3  # read-modify-write rounds when someone else changed the policy in between (etag)
_AR_IMAGE = re.compile(r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/")


@dataclass
class Step:
    step: str  # a key of TITLES
    status: str  # ok | created | missing | error | skipped
    detail: str  # what was found or done; for missing/error, the fix

    @property
    def title(self) -> str:
        return TITLES.get(self.step, self.step)

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "title": self.title, "status": self.status, "detail": self.detail}


@dataclass
class SetupReport:
    project: str | None
    bucket: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.failed for s in self.steps)

    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.failed]

    def summary(self) -> str | None:
        """One line naming what to fix, or None when every step passed."""
        failed = self.failures()
        if not failed:
            return None
        if len(failed) == 1:
            return f"{failed[0].title}: {failed[0].detail}"
        names = ", ".join(s.title for s in failed)
        return f"{len(failed)} setup steps need fixing ({names}): do what each row says, then rerun `newsclf cloud setup`"

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "bucket": self.bucket,
            "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
        }


@dataclass
class SetupClients:
    """The API clients setup uses; None = built from settings on first use (tests may pass real
    clients pointed at local stand-ins)."""

    storage: Any = None  # google.cloud.storage.Client
    artifactregistry: Any = None  # artifactregistry_v1.ArtifactRegistryClient
    cloudbuild: Any = None  # cloudbuild_v1.CloudBuildClient
    zones: Any = None  # compute_v1.ZonesClient
    iam: Any = None  # newsclf.cloud.iam.IamClient (IAM's REST API)
    projects: Any = None  # resourcemanager_v3.ProjectsClient
    secrets: Any = None  # secretmanager_v1.SecretManagerServiceClient
    batch: Any = None  # batch_v1.BatchServiceClient (cloud sweeps)


# --- clients ------------------------------------------------------------------------------------


def _is_local(endpoint: str | None) -> bool:
    from newsclf.cloud.build import is_local_endpoint

    return is_local_endpoint(endpoint)


def _client_options(endpoint: str | None, credentials: Any) -> dict[str, Any]:
    from google.api_core.client_options import ClientOptions

    kwargs: dict[str, Any] = {"credentials": credentials}
    if endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)  # keeps an http:// scheme
        if _is_local(endpoint):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    return kwargs


def artifactregistry_client(settings: Settings, credentials: Any = None) -> Any:
    """An ArtifactRegistryClient over REST; NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT points it elsewhere."""
    from google.cloud import artifactregistry_v1

    kwargs = _client_options(settings.artifactregistry_api_endpoint, credentials)
    return artifactregistry_v1.ArtifactRegistryClient(transport="rest", **kwargs)


def zones_client(settings: Settings, credentials: Any = None) -> Any:
    """A compute_v1.ZonesClient honouring NEWSCLF_COMPUTE_API_ENDPOINT."""
    from google.cloud import compute_v1

    return compute_v1.ZonesClient(**_client_options(settings.compute_api_endpoint, credentials))


def projects_client(settings: Settings, credentials: Any = None) -> Any:
    """A resourcemanager_v3.ProjectsClient over REST; NEWSCLF_RESOURCEMANAGER_API_ENDPOINT points it elsewhere."""
    from google.cloud import resourcemanager_v3

    kwargs = _client_options(settings.resourcemanager_api_endpoint, credentials)
    return resourcemanager_v3.ProjectsClient(transport="rest", **kwargs)


def secrets_client(settings: Settings, credentials: Any = None) -> Any:
    """A secretmanager_v1.SecretManagerServiceClient over REST; NEWSCLF_SECRETMANAGER_API_ENDPOINT points it elsewhere."""
    from google.cloud import secretmanager_v1

    kwargs = _client_options(settings.secretmanager_api_endpoint, credentials)
    return secretmanager_v1.SecretManagerServiceClient(transport="rest", **kwargs)


def batch_client(settings: Settings, credentials: Any = None) -> Any:
    """A batch_v1.BatchServiceClient over REST; NEWSCLF_BATCH_API_ENDPOINT points it elsewhere."""
    from google.cloud import batch_v1

    return batch_v1.BatchServiceClient(transport="rest", **_client_options(settings.batch_api_endpoint, credentials))


def _needs_credentials(settings: Settings) -> bool:
    """False when every service is a local emulator or stand-in (they take anonymous calls)."""
    return not (
        os.environ.get("STORAGE_EMULATOR_HOST")
        and _is_local(settings.artifactregistry_api_endpoint)
        and _is_local(settings.cloudbuild_api_endpoint)
        and _is_local(settings.compute_api_endpoint)
        and _is_local(settings.batch_api_endpoint)
        and _is_local(settings.iam_api_endpoint)
        and _is_local(settings.resourcemanager_api_endpoint)
        and _is_local(settings.secretmanager_api_endpoint)
    )


# --- messages -----------------------------------------------------------------------------------


def _short(e: BaseException) -> str:
    message = (getattr(e, "message", None) or str(e)).strip()
    message = re.sub(r"^\d{3} (GET|POST|PUT|PATCH|DELETE) \S+: ", "", message)  # the REST transport's prefix
    message = re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", message)
    first = message.splitlines()[0] if message else type(e).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def _reasons(e: BaseException) -> set[str]:
    reasons = {str(getattr(e, "reason", None) or "")}
    for item in getattr(e, "errors", None) or []:
        if isinstance(item, dict):
            reasons.add(str(item.get("reason") or ""))
    return reasons - {""}


def _member(credentials: Any) -> str:
    email = getattr(credentials, "service_account_email", None)
    if isinstance(email, str) and "@" in email:
        return f"serviceAccount:{email}"
    return "user:YOU@example.com"


def api_disabled_message(title: str, service: str, project: str) -> str:
    return (
        f"The {title} is disabled in project {project}: enable it at "
        f"https://console.cloud.google.com/apis/library/{service}?project={project} and rerun `newsclf cloud setup`"
    )


def _grant(project: str, role: str, member: str) -> str:
    return f"`gcloud projects add-iam-policy-binding {project} --member={member} --role={role}`"


def _api_failure(
    e: BaseException, *, title: str, service: str, project: str, what: str, role: str, member: str,
    endpoint: str | None, endpoint_setting: str,
) -> tuple[str, str] | None:
    """(status, detail naming the fix) for the failures of an API call people can fix; None for others."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    if isinstance(e, CloudError):
        return ERROR, str(e)
    if isinstance(e, (auth_exc.DefaultCredentialsError, auth_exc.RefreshError, gexc.Unauthorized)):
        from newsclf.cloud.storage import translate

        return ERROR, str(translate(e, "") or _short(e))
    if isinstance(e, gexc.Forbidden):  # PermissionDenied is a Forbidden
        text = _short(e)
        reasons = _reasons(e)
        if reasons & {"SERVICE_DISABLED", "accessNotConfigured"} or "has not been used in project" in text:
            return MISSING, api_disabled_message(title, service, project)
        if reasons & {"BILLING_DISABLED", "billingNotEnabled", "accountDisabled"} or "billing" in text.lower():
            return MISSING, (
                f"Billing is disabled for project {project}: link a billing account at "
                f"https://console.cloud.google.com/billing/linkedaccount?project={project}"
            )
        return MISSING, f"No permission to {what} in project {project}: grant {role} ({_grant(project, role, member)})"
    if isinstance(e, (requests.exceptions.ConnectionError, ConnectionError)):
        where = endpoint or f"{service}"
        return ERROR, f"Cannot reach the {title} at {where}: check the network or {endpoint_setting}"
    return None


# --- the steps ----------------------------------------------------------------------------------


@dataclass
class _Context:
    settings: Settings
    create: bool
    clients: SetupClients
    project: str | None = None
    credentials: Any = None
    bucket: str | None = None
    bucket_forbidden: bool = False  # the bucket exists but we may not read it (maybe not ours)
    repository: str | None = None  # the Artifact Registry repository's resource name, once found or created
    account: str | None = None  # the VMs' service account email, once found or created
    account_created: bool = False  # created in this run: grants may need to wait for it to propagate


def _project(ctx: _Context) -> tuple[str, str]:
    settings = ctx.settings
    project, source = settings.gcp_project, ""
    if _needs_credentials(settings):
        from newsclf.cloud.storage import default_credentials

        try:
            ctx.credentials, adc_project = default_credentials(["https://www.googleapis.com/auth/cloud-platform"])
        except CloudError as e:  # none, or a broken key file (named, never quoted)
            return MISSING, str(e)
        if not project and adc_project:
            project, source = adc_project, " (from Application Default Credentials)"
        if not project:
            return MISSING, "No Google Cloud project: set NEWSCLF_GCP_PROJECT, pass --project, or run `gcloud config set project PROJECT`"
    elif not project:
        return MISSING, "No Google Cloud project set: set NEWSCLF_GCP_PROJECT or pass --project"
    ctx.project = project
    return OK, f"{project}{source}"


def _storage(ctx: _Context) -> Any:
    if ctx.clients.storage is None:
        from newsclf.cloud.storage import storage_client

        ctx.clients.storage = storage_client(ctx.settings.model_copy(update={"gcp_project": ctx.project}))
    return ctx.clients.storage


def _bucket(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import storage
    from newsclf.errors import ConfigError

    try:
        name = storage.require_bucket(ctx.settings)
    except ConfigError as e:
        return MISSING, str(e)
    ctx.bucket = name
    region = ctx.settings.region
    client = _storage(ctx)
    retry = storage.retry_policy(CALL_TIMEOUT_S)
    try:
        found = client.get_bucket(name, retry=retry, timeout=CALL_TIMEOUT_S)
        where = f" ({found.location.lower()})" if found.location else ""
        return OK, f"gs://{name} exists{where}"
    except gexc.NotFound:
        pass
    except gexc.Forbidden as e:
        if _reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(storage.translate(e, name))
        # exists, but we may not read its settings (storage.buckets.get): object access decides
        ctx.bucket_forbidden = True
        return OK, f"gs://{name} exists (no permission to read its settings; object access is checked below)"
    except Exception as e:
        err = storage.translate(e, name)
        return ERROR, str(err) if err is not None else _short(e)

    if not ctx.create:
        return MISSING, (
            f"gs://{name} does not exist: rerun without --no-create, or `gcloud storage buckets create gs://{name} "
            f"--location={region} --uniform-bucket-level-access`"
        )
    bucket = client.bucket(name)
    bucket.iam_configuration.uniform_bucket_level_access_enabled = True  # IAM only, no per-object ACLs
    bucket.iam_configuration.public_access_prevention = "enforced"  # models and data are never public
    try:
        client.create_bucket(bucket, project=ctx.project, location=region, retry=retry, timeout=CALL_TIMEOUT_S)
    except gexc.Conflict:
        try:  # a retried create that had gone through: ours; else the (global) name is someone else's
            client.get_bucket(name, retry=retry, timeout=CALL_TIMEOUT_S)
            return OK, f"gs://{name} exists"
        except gexc.GoogleAPICallError:
            return ERROR, f"The bucket name {name} is taken (bucket names are global): set NEWSCLF_BUCKET to another name"
    except gexc.Forbidden as e:
        if _reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(storage.translate(e, name))
        role = "roles/storage.admin"
        return MISSING, (
            f"No permission to create gs://{name} in project {ctx.project}: grant {role} "
            f"({_grant(ctx.project or 'PROJECT', role, _member(ctx.credentials))}) or have an admin create it"
        )
    except gexc.BadRequest as e:
        return ERROR, f"Cloud Storage refused to create gs://{name} in {region} ({_short(e)}): check NEWSCLF_BUCKET and NEWSCLF_REGION"
    except Exception as e:
        err = storage.translate(e, name, "upload")
        return ERROR, str(err) if err is not None else _short(e)
    return CREATED, f"gs://{name} created in {region} (uniform bucket-level access, public access prevented)"


def _bucket_access(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import storage

    name = ctx.bucket
    client = _storage(ctx)
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        granted = set(
            client.bucket(name).test_iam_permissions(
                list(BUCKET_PERMISSIONS), retry=storage.retry_policy(CALL_TIMEOUT_S), timeout=CALL_TIMEOUT_S
            )
        )
    except (gexc.NotFound, gexc.MethodNotImplemented) as e:
        if emulator:  # fake-gcs-server has no testIamPermissions: nothing to check there
            return SKIPPED, f"not checked: the storage endpoint {emulator} does not support testIamPermissions"
        err = storage.translate(e, name)
        return ERROR, str(err) if err is not None else _short(e)
    except Exception as e:
        err = storage.translate(e, name)
        return ERROR, str(err) if err is not None else _short(e)
    lacking = [p for p in BUCKET_PERMISSIONS if p not in granted]
    if not lacking:
        return OK, f"can read, list and write objects in gs://{name}"
    member = _member(ctx.credentials)
    fix = (
        f"grant {BUCKET_ROLE} on the bucket (`gcloud storage buckets add-iam-policy-binding gs://{name} "
        f"--member={member} --role={BUCKET_ROLE}`)"
    )
    if ctx.bucket_forbidden and not granted:
        fix += ", or set NEWSCLF_BUCKET to a bucket of your own if it is not yours"
    return MISSING, f"Missing {', '.join(lacking)} on gs://{name}: {fix}"


def _repository(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.build import image_repository

    settings, project = ctx.settings, ctx.project or ""
    image = image_repository(settings, project)
    m = _AR_IMAGE.match(image + "/")
    if m is None:
        return SKIPPED, f"NEWSCLF_IMAGE ({settings.image}) is not in Artifact Registry: no repository to check"
    location, repo_project, repo = m.group("location"), m.group("project"), m.group("repo")
    host = f"{location}-docker.pkg.dev/{repo_project}/{repo}"
    parent = f"projects/{repo_project}/locations/{location}"
    name = f"{parent}/repositories/{repo}"
    ctx.repository = name
    create_cmd = (
        f"`gcloud artifacts repositories create {repo} --repository-format=docker --location={location} "
        f"--project={repo_project}`"
    )
    failure: Callable[[BaseException, str], tuple[str, str] | None] = lambda e, what: _api_failure(  # noqa: E731
        e, title="Artifact Registry API", service="artifactregistry.googleapis.com", project=repo_project,
        what=what, role="roles/artifactregistry.admin", member=_member(ctx.credentials),
        endpoint=settings.artifactregistry_api_endpoint, endpoint_setting="NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT",
    )
    try:
        if ctx.clients.artifactregistry is None:
            ctx.clients.artifactregistry = artifactregistry_client(settings, ctx.credentials)
        client = ctx.clients.artifactregistry
        found = client.get_repository(name=name, timeout=CALL_TIMEOUT_S)
        return _check_format(found, repo, location, host)
    except gexc.NotFound:
        pass
    except Exception as e:
        answer = failure(e, f"read Artifact Registry repository {repo}")
        if answer is None:
            raise
        return answer

    if not ctx.create:
        return MISSING, f"Repository {repo} not found in {location}: rerun without --no-create, or {create_cmd}"
    from google.cloud import artifactregistry_v1

    try:
        op = client.create_repository(
            parent=parent,
            repository_id=repo,
            repository=artifactregistry_v1.Repository(
                format_=artifactregistry_v1.Repository.Format.DOCKER,
                description="newsclf training images (newsclf cloud build)",
            ),
            timeout=CALL_TIMEOUT_S,
        )
        created = op.result(timeout=CREATE_TIMEOUT_S)
    except gexc.AlreadyExists:  # created in between: check what is there
        found = client.get_repository(name=name, timeout=CALL_TIMEOUT_S)
        return _check_format(found, repo, location, host)
    except gexc.InvalidArgument as e:
        return ERROR, (
            f"Artifact Registry refused to create repository {repo} in {location} ({_short(e)}): check "
            "NEWSCLF_ARTIFACT_REPO (lower-case letters, digits, hyphens) and NEWSCLF_REGION"
        )
    except Exception as e:
        answer = failure(e, f"create Artifact Registry repository {repo}")
        if answer is None and isinstance(e, (gexc.GoogleAPICallError, TimeoutError)):  # the operation failed
            answer = ERROR, f"Creating repository {repo} in {location} failed ({_short(e)}): rerun, or {create_cmd}"
        if answer is None:
            raise
        status, detail = answer
        if detail.startswith("No permission"):
            detail += f", or have an admin run {create_cmd}"
        return status, detail
    log.debug("created %s", getattr(created, "name", name))
    return CREATED, f"{host} created (Docker, {location})"


def _check_format(found: Any, repo: str, location: str, host: str) -> tuple[str, str]:
    fmt = found.format_.name if hasattr(found.format_, "name") else str(found.format_)
    if fmt != "DOCKER":
        return ERROR, (
            f"Repository {repo} in {location} holds {fmt} packages, not Docker images: set "
            "NEWSCLF_ARTIFACT_REPO to another name and rerun `newsclf cloud setup`"
        )
    return OK, f"{host} exists (Docker)"


def _cloudbuild_api(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.build import cloudbuild_client

    settings, project = ctx.settings, ctx.project or ""
    try:
        if ctx.clients.cloudbuild is None:
            ctx.clients.cloudbuild = cloudbuild_client(settings)
        # the cheapest call: one page of at most one build
        ctx.clients.cloudbuild.list_builds(request={"project_id": project, "page_size": 1}, timeout=CALL_TIMEOUT_S)
    except gexc.NotFound:
        return ERROR, f"Project {project} not found by Cloud Build: check NEWSCLF_GCP_PROJECT or --project"
    except Exception as e:
        answer = _api_failure(
            e, title="Cloud Build API", service="cloudbuild.googleapis.com", project=project,
            what="use Cloud Build", role="roles/cloudbuild.builds.editor", member=_member(ctx.credentials),
            endpoint=settings.cloudbuild_api_endpoint, endpoint_setting="NEWSCLF_CLOUDBUILD_API_ENDPOINT",
        )
        if answer is None:
            raise
        return answer
    return OK, "enabled"


def _compute_api(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    settings, project, zone = ctx.settings, ctx.project or "", ctx.settings.zone
    try:
        if ctx.clients.zones is None:
            ctx.clients.zones = zones_client(settings, ctx.credentials)
        found = ctx.clients.zones.get(project=project, zone=zone, timeout=CALL_TIMEOUT_S)
    except gexc.NotFound:
        return ERROR, (
            f"Zone {zone} not found in project {project}: set NEWSCLF_ZONE to a zone of NEWSCLF_REGION "
            f"({settings.region}-b, for example; `gcloud compute zones list` shows them)"
        )
    except Exception as e:
        answer = _api_failure(
            e, title="Compute Engine API", service="compute.googleapis.com", project=project,
            what="use Compute Engine", role="roles/compute.instanceAdmin.v1", member=_member(ctx.credentials),
            endpoint=settings.compute_api_endpoint, endpoint_setting="NEWSCLF_COMPUTE_API_ENDPOINT",
        )
        if answer is None:
            raise
        return answer
    status = getattr(found, "status", "") or "?"
    return OK, f"enabled; zone {zone} is {status}"

def _batch_api(ctx: _Context) -> tuple[str, str]:
    """Cloud sweeps run as Batch jobs in NEWSCLF_REGION: list them once to see the API answers."""
    settings, project = ctx.settings, ctx.project or ""
    try:
        if ctx.clients.batch is None:
            ctx.clients.batch = batch_client(settings, ctx.credentials)
        parent = f"projects/{project}/locations/{settings.region}"
        ctx.clients.batch.list_jobs(request={"parent": parent, "page_size": 1}, timeout=CALL_TIMEOUT_S)
    except Exception as e:
        answer = _api_failure(
            e, title="Cloud Batch API", service="batch.googleapis.com", project=project,
            what="run sweeps on Cloud Batch", role="roles/batch.jobsEditor", member=_member(ctx.credentials),
            endpoint=settings.batch_api_endpoint, endpoint_setting="NEWSCLF_BATCH_API_ENDPOINT",
        )  # fmt: skip
        if answer is None:
            raise
        return answer
    return OK, f"enabled; sweeps run as Batch jobs in {settings.region}"


# --- the VMs' service account and its grants ----------------------------------------------------


def _iam_failure(ctx: _Context, e: BaseException, what: str, role: str) -> tuple[str, str] | None:
    settings = ctx.settings
    return _api_failure(
        e, title="IAM API", service="iam.googleapis.com", project=ctx.project or "", what=what, role=role,
        member=_member(ctx.credentials), endpoint=settings.iam_api_endpoint, endpoint_setting="NEWSCLF_IAM_API_ENDPOINT",
    )


def _vm_account(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam
    from newsclf.errors import ConfigError

    project = ctx.project or ""
    try:
        email = iam.vm_service_account(ctx.settings, project)
    except ConfigError as e:
        return MISSING, str(e)
    if email == iam.DEFAULT_SA:
        return SKIPPED, (
            "NEWSCLF_VM_SERVICE_ACCOUNT=default: VMs run as Compute Engine's default service account, whose roles "
            "newsclf neither checks nor grants"
        )
    aid = iam.account_id(email, project)
    create_cmd = (
        f"`gcloud iam service-accounts create {aid} --project={project} --display-name=\"newsclf training VMs\"`"
    )
    try:
        if ctx.clients.iam is None:
            ctx.clients.iam = iam.IamClient(ctx.settings, ctx.credentials, timeout=CALL_TIMEOUT_S)
        found = ctx.clients.iam.get_account(email)
    except Exception as e:
        answer = _iam_failure(ctx, e, f"read service account {email}", "roles/iam.serviceAccountViewer")
        if answer is None:
            raise
        return answer
    if found is not None:
        if found.get("disabled"):
            return ERROR, f"{email} is disabled: enable it (`gcloud iam service-accounts enable {email}`)"
        ctx.account = email
        return OK, f"{email} exists"
    if aid is None:
        return MISSING, (
            f"{email} does not exist, and newsclf creates service accounts only in project {project}: create it "
            "in its own project, or unset NEWSCLF_VM_SERVICE_ACCOUNT"
        )
    if not ctx.create:
        return MISSING, f"{email} does not exist: rerun without --no-create, or {create_cmd}"
    try:
        ctx.clients.iam.create_account(
            project, aid, "newsclf training VMs", "Runs newsclf's training VMs (newsclf cloud setup manages its roles)"
        )
    except gexc.Conflict:  # created in between (or by a retried request): it is there
        pass
    except Exception as e:
        answer = _iam_failure(ctx, e, f"create service account {email}", "roles/iam.serviceAccountAdmin")
        if answer is None:
            raise
        status, detail = answer
        if detail.startswith("No permission"):
            detail += f", or have an admin run {create_cmd}"
        return status, detail
    else:
        ctx.account_created = True
    ctx.account = email
    return CREATED, f"{email} created (the training VMs run as it)"


def _proto_binding(role: str, who: str) -> tuple[Callable[[Any], bool], Callable[[Any], None]]:
    """has/add for a google.iam.v1 Policy message (Artifact Registry, Secret Manager, Resource Manager)."""

    def has(policy: Any) -> bool:
        return any(b.role == role and who in b.members and not b.condition.expression for b in policy.bindings)

    def add(policy: Any) -> None:
        for b in policy.bindings:
            if b.role == role and not b.condition.expression:
                b.members.append(who)
                return
        policy.bindings.add(role=role, members=[who])

    return has, add


def _storage_binding(role: str, who: str) -> tuple[Callable[[Any], bool], Callable[[Any], None]]:
    """has/add for a google.api_core.iam.Policy (Cloud Storage's bucket policy)."""

    def has(policy: Any) -> bool:
        return any(b["role"] == role and who in b.get("members", ()) and not b.get("condition") for b in policy.bindings)

    def add(policy: Any) -> None:
        for b in policy.bindings:
            if b["role"] == role and not b.get("condition"):
                b["members"] = set(b.get("members", ())) | {who}
                return
        policy.bindings.append({"role": role, "members": {who}})

    return has, add


def _not_propagated(e: BaseException) -> bool:
    """The answer a grant to a just-created service account gets until IAM has propagated it
    ("Service account ... does not exist."; Cloud Storage says only "Invalid argument.")."""
    from google.api_core import exceptions as gexc

    text = _short(e).lower()
    return isinstance(e, gexc.BadRequest) and any(m in text for m in ("does not exist", "not found", "invalid argument"))


def _ensure_binding(
    ctx: _Context, *, get: Callable[[], Any], put: Callable[[Any], Any],
    binding: tuple[Callable[[Any], bool], Callable[[Any], None]], role: str, where: str, grant_cmd: str,
) -> tuple[str, str]:
    """Grant `role` to the VMs' account in a resource's IAM policy: read, add, write back with the etag
    read (so a concurrent change is refused, not overwritten; then read again), every other binding kept."""
    import time

    from google.api_core import exceptions as gexc

    has, add = binding
    waited, step = 0.0, PROPAGATION_STEP_S
    attempts = 0
    while True:
        policy = get()
        if has(policy):
            return OK, f"{role} on {where}"
        if not ctx.create:
            return MISSING, f"{ctx.account} lacks {role} on {where}: rerun without --no-create, or {grant_cmd}"
        add(policy)
        try:
            put(policy)
        except (gexc.Conflict, gexc.PreconditionFailed):  # the etag is stale: someone changed the policy
            attempts += 1
            if attempts >= POLICY_ATTEMPTS:
                return ERROR, f"The IAM policy of {where} kept changing while granting {role}: rerun `newsclf cloud setup`"
            continue
        except gexc.BadRequest as e:
            if not (ctx.account_created and _not_propagated(e)) or waited >= PROPAGATION_S:
                raise
            log.debug("%s not visible to %s yet; retrying in %.0f s", ctx.account, where, step)
            time.sleep(step)
            waited, step = waited + step, min(step * 2, 15.0)
            continue
        return CREATED, f"granted {role} on {where}"


def _grant_failure(e: BaseException, answer: tuple[str, str] | None, grant_cmd: str) -> tuple[str, str]:
    if answer is None:
        from google.api_core import exceptions as gexc

        if isinstance(e, gexc.BadRequest):
            return ERROR, f"{_short(e)}: rerun `newsclf cloud setup`, or {grant_cmd}"
        raise e
    status, detail = answer
    if detail.startswith("No permission"):
        detail += f", or have an admin run {grant_cmd}"
    return status, detail


def _vm_bucket(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam, storage

    name, account = ctx.bucket or "", ctx.account or ""
    grant_cmd = (
        f"`gcloud storage buckets add-iam-policy-binding gs://{name} --member={iam.member(account)} "
        f"--role={iam.BUCKET_ROLE}`"
    )
    bucket = _storage(ctx).bucket(name)
    retry = storage.retry_policy(CALL_TIMEOUT_S)
    try:
        return _ensure_binding(
            ctx,
            get=lambda: bucket.get_iam_policy(requested_policy_version=3, retry=retry, timeout=CALL_TIMEOUT_S),
            put=lambda policy: bucket.set_iam_policy(policy, timeout=CALL_TIMEOUT_S),
            binding=_storage_binding(iam.BUCKET_ROLE, iam.member(account)), role=iam.BUCKET_ROLE,
            where=f"gs://{name}", grant_cmd=grant_cmd,
        )
    except (gexc.NotFound, gexc.MethodNotImplemented) as e:
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        if emulator:  # fake-gcs-server has no bucket IAM policies
            return SKIPPED, f"not checked: the storage endpoint {emulator} does not support bucket IAM policies"
        err = storage.translate(e, name)
        return ERROR, str(err) if err is not None else _short(e)
    except gexc.Forbidden as e:
        if _reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(storage.translate(e, name))
        role = "roles/storage.admin"
        return MISSING, (
            f"No permission to change who may use gs://{name}: grant {role} on the bucket "
            f"(`gcloud storage buckets add-iam-policy-binding gs://{name} --member={_member(ctx.credentials)} "
            f"--role={role}`), or have an admin run {grant_cmd}"
        )
    except Exception as e:
        err = storage.translate(e, name)
        if err is not None:
            return ERROR, str(err)
        return _grant_failure(e, None, grant_cmd)


def _vm_repository(ctx: _Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    name, account = ctx.repository or "", ctx.account or ""
    _, project, _, location, _, repo = name.split("/")
    grant_cmd = (
        f"`gcloud artifacts repositories add-iam-policy-binding {repo} --location={location} --project={project} "
        f"--member={iam.member(account)} --role={iam.REPOSITORY_ROLE}`"
    )
    client = ctx.clients.artifactregistry
    try:
        return _ensure_binding(
            ctx,
            get=lambda: client.get_iam_policy(
                request={"resource": name, "options": {"requested_policy_version": 3}}, timeout=CALL_TIMEOUT_S
            ),
            put=lambda policy: client.set_iam_policy(request={"resource": name, "policy": policy}, timeout=CALL_TIMEOUT_S),
            binding=_proto_binding(iam.REPOSITORY_ROLE, iam.member(account)), role=iam.REPOSITORY_ROLE,
            where=f"repository {repo} ({location})", grant_cmd=grant_cmd,
        )
    except Exception as e:
        answer = _api_failure(
            e, title="Artifact Registry API", service="artifactregistry.googleapis.com", project=project,
            what=f"change who may read repository {repo}", role="roles/artifactregistry.admin",
            member=_member(ctx.credentials), endpoint=ctx.settings.artifactregistry_api_endpoint,
            endpoint_setting="NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT",
        )
        return _grant_failure(e, answer, grant_cmd)


def secret_name(value: str, project: str) -> str:
    """NEWSCLF_WANDB_SECRET (a name, `projects/P/secrets/NAME`, or a version of it) as a secret's resource name."""
    value = value.strip().strip("/")
    if not value.startswith("projects/"):
        value = f"projects/{project}/secrets/{value}"
    return "/".join(value.split("/")[:4])  # without /versions/...


def _vm_secret(ctx: _Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud import iam

    settings, account = ctx.settings, ctx.account or ""
    if not settings.wandb_secret:
        return SKIPPED, "NEWSCLF_WANDB_SECRET is not set: no W&B key for the VMs to read"
    name = secret_name(settings.wandb_secret, ctx.project or "")
    _, project, _, secret = name.split("/")
    grant_cmd = (
        f"`gcloud secrets add-iam-policy-binding {secret} --project={project} --member={iam.member(account)} "
        f"--role={iam.SECRET_ROLE}`"
    )
    try:
        if ctx.clients.secrets is None:
            ctx.clients.secrets = secrets_client(settings, ctx.credentials)
        client = ctx.clients.secrets
        return _ensure_binding(
            ctx,
            get=lambda: client.get_iam_policy(
                request={"resource": name, "options": {"requested_policy_version": 3}}, timeout=CALL_TIMEOUT_S
            ),
            put=lambda policy: client.set_iam_policy(request={"resource": name, "policy": policy}, timeout=CALL_TIMEOUT_S),
            binding=_proto_binding(iam.SECRET_ROLE, iam.member(account)), role=iam.SECRET_ROLE,
            where=f"secret {secret}", grant_cmd=grant_cmd,
        )
    except gexc.NotFound:
        return MISSING, (
            f"Secret {secret} not found in project {project}: create it with your W&B key "
            f"(`gcloud secrets create {secret} --project={project} --data-file=-`, the key on stdin) or fix "
            "NEWSCLF_WANDB_SECRET"
        )
    except Exception as e:
        answer = _api_failure(
            e, title="Secret Manager API", service="secretmanager.googleapis.com", project=project,
            what=f"change who may read secret {secret}", role="roles/secretmanager.admin",
            member=_member(ctx.credentials), endpoint=settings.secretmanager_api_endpoint,
            endpoint_setting="NEWSCLF_SECRETMANAGER_API_ENDPOINT",
        )
        return _grant_failure(e, answer, grant_cmd)


def _vm_logging(ctx: _Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    return _project_grant(ctx, iam.LOGGING_ROLE)


def _vm_batch(ctx: _Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    return _project_grant(ctx, iam.BATCH_AGENT_ROLE)


def _project_grant(ctx: _Context, role: str) -> tuple[str, str]:
    """`role` on the project for the VMs' account (roles that have no narrower resource to go on)."""
    from newsclf.cloud import iam

    settings, project, account = ctx.settings, ctx.project or "", ctx.account or ""
    resource = f"projects/{project}"
    grant_cmd = _grant(project, role, iam.member(account))
    try:
        if ctx.clients.projects is None:
            ctx.clients.projects = projects_client(settings, ctx.credentials)
        client = ctx.clients.projects
        return _ensure_binding(
            ctx,
            get=lambda: client.get_iam_policy(
                request={"resource": resource, "options": {"requested_policy_version": 3}}, timeout=CALL_TIMEOUT_S
            ),
            put=lambda policy: client.set_iam_policy(request={"resource": resource, "policy": policy}, timeout=CALL_TIMEOUT_S),
            binding=_proto_binding(role, iam.member(account)), role=role,
            where=f"project {project}", grant_cmd=grant_cmd,
        )
    except Exception as e:
        answer = _api_failure(
            e, title="Resource Manager API", service="cloudresourcemanager.googleapis.com", project=project,
            what="change the project's IAM policy", role="roles/resourcemanager.projectIamAdmin",
            member=_member(ctx.credentials), endpoint=settings.resourcemanager_api_endpoint,
            endpoint_setting="NEWSCLF_RESOURCEMANAGER_API_ENDPOINT",
        )
        return _grant_failure(e, answer, grant_cmd)


def _vm_act_as(ctx: _Context) -> tuple[str, str]:
    from newsclf.cloud import iam

    import time

    from google.api_core import exceptions as gexc

    account, you = ctx.account or "", _member(ctx.credentials)
    waited, step = 0.0, PROPAGATION_STEP_S
    while True:
        try:
            granted = ctx.clients.iam.test_permissions(account, [iam.ACT_AS])
            break
        except gexc.NotFound:  # a just-created account IAM does not know everywhere yet
            if not ctx.account_created or waited >= PROPAGATION_S:
                return ERROR, f"IAM does not find {account} yet: rerun `newsclf cloud setup` in a minute"
            time.sleep(step)
            waited, step = waited + step, min(step * 2, 15.0)
        except Exception as e:
            answer = _iam_failure(ctx, e, f"check your access to {account}", iam.ACT_AS_ROLE)
            if answer is None:
                raise
            return answer
    if iam.ACT_AS in granted:
        return OK, f"you may create VMs that run as {account} ({iam.ACT_AS})"
    return MISSING, (
        f"You may not create VMs that run as {account} (no {iam.ACT_AS}): grant {iam.ACT_AS_ROLE} on it "
        f"(`gcloud iam service-accounts add-iam-policy-binding {account} --member={you} --role={iam.ACT_AS_ROLE}`)"
    )


def run_setup(settings: Settings, *, create: bool = True, clients: SetupClients | None = None) -> SetupReport:
    """Check every step (creating the bucket and the repository when missing, unless `create` is
    False) and return the rows; never raises for what a row can report."""
    ctx = _Context(settings=settings, create=create, clients=clients or SetupClients())
    report = SetupReport(project=None, bucket=None)

    def run(step: str, fn: Callable[[_Context], tuple[str, str]], needs: str | None = None) -> Step:
        if needs is not None:
            report.steps.append(Step(step, SKIPPED, f"needs the {needs} (see above)"))
            return report.steps[-1]
        try:
            status, detail = fn(ctx)
        except CloudError as e:
            status, detail = ERROR, str(e)
        except Exception as e:  # an unforeseen failure: reported in its row, the other steps still run
            log.debug("cloud setup: %s failed", step, exc_info=True)
            status, detail = ERROR, f"{type(e).__name__}: {_short(e)} (unexpected; please report it)"
        report.steps.append(Step(step, status, detail))
        return report.steps[-1]

    project_ok = not run("project", _project).failed
    report.project = ctx.project
    no_project = None if project_ok else "project"
    bucket = run("bucket", _bucket, no_project)
    report.bucket = ctx.bucket
    run("bucket-access", _bucket_access, no_project or (None if bucket.status in (OK, CREATED) else "bucket"))
    repository = run("repository", _repository, no_project)
    run("cloudbuild-api", _cloudbuild_api, no_project)
    run("compute-api", _compute_api, no_project)
    run("batch-api", _batch_api, no_project)
    account = run("vm-account", _vm_account, no_project)
    no_account = no_project or (None if account.status in (OK, CREATED) else "VM service account")
    run("vm-bucket", _vm_bucket, no_account or (None if bucket.status in (OK, CREATED) else "bucket"))
    if repository.status == SKIPPED and not no_project:  # the image is not in Artifact Registry
        report.steps.append(Step("vm-repository", SKIPPED, "the image is not in Artifact Registry: nothing to grant"))
    else:
        run("vm-repository", _vm_repository, no_account or (None if repository.status in (OK, CREATED) else "Artifact Registry repository"))
    run("vm-secret", _vm_secret, no_account)
    run("vm-logging", _vm_logging, no_account)
    run("vm-batch", _vm_batch, no_account)
    run("vm-act-as", _vm_act_as, no_account)
    return report
