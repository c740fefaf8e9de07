"""The setup steps before the VMs' account: the project, the bucket and its access, the Artifact Registry
repository, and whether the Cloud Build and Compute Engine APIs answer."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from typing import Any

from newsclf.cloud.google.endpoints import all_local
from newsclf.cloud.google.errors import (
    ARTIFACTREGISTRY,
    BATCH,
    CLOUDBUILD,
    COMPUTE,
    grant_command,
    reasons,
    short,
)
from newsclf.cloud.google.project import missing_project_message
from newsclf.cloud.setup.context import CALL_TIMEOUT_S, Context, api_answer, member_of, storage_of
from newsclf.cloud.setup.report import CREATED, ERROR, MISSING, OK, SKIPPED
from newsclf.errors import CloudError

log = logging.getLogger(__name__)

BUCKET_PERMISSIONS = ("storage.objects.create", "storage.objects.delete", "storage.objects.get", "storage.objects.list")
BUCKET_ROLE = "roles/storage.objectAdmin"  # holds all of BUCKET_PERMISSIONS
CREATE_TIMEOUT_S = 300.0  # creating a repository is a long-running operation (seconds, usually)
_AR_IMAGE = re.compile(r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repo>[^/]+)/")


def check_project(ctx: Context) -> tuple[str, str]:
    settings = ctx.settings
    project, source = settings.gcp_project, ""
    if not all_local(settings):
        from newsclf.cloud.google.credentials import (
            CLOUD_PLATFORM_SCOPE,
            default_credentials,
        )

        try:
            ctx.credentials, adc_project = default_credentials([CLOUD_PLATFORM_SCOPE])
        except CloudError as e:  # none, or a broken key file (named, never quoted)
            return MISSING, str(e)
        if not project and adc_project:
            project, source = adc_project, " (from Application Default Credentials)"
        if not project:
            return MISSING, missing_project_message(flag=True, adc=True)
    elif not project:
        return MISSING, missing_project_message(flag=True, adc=False)
    ctx.project = project
    return OK, f"{project}{source}"


def check_bucket(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.storage.client import require_bucket
    from newsclf.cloud.storage.errors import translate
    from newsclf.cloud.storage.retry import retry_policy
    from newsclf.errors import ConfigError

    try:
        name = require_bucket(ctx.settings)
    except ConfigError as e:
        return MISSING, str(e)
    ctx.bucket = name
    region = ctx.settings.region
    client = storage_of(ctx)
    retry = retry_policy(CALL_TIMEOUT_S)
    try:
        found = client.get_bucket(name, retry=retry, timeout=CALL_TIMEOUT_S)
        where = f" ({found.location.lower()})" if found.location else ""
        return OK, f"gs://{name} exists{where}"
    except gexc.NotFound:
        pass
    except gexc.Forbidden as e:
        if reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(translate(e, name))
        # exists, but we may not read its settings (storage.buckets.get): object access decides
        ctx.bucket_forbidden = True
        return OK, f"gs://{name} exists (no permission to read its settings; object access is checked below)"
    except Exception as e:
        err = translate(e, name)
        return ERROR, str(err) if err is not None else short(e)

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
            return (
                ERROR,
                f"The bucket name {name} is taken (bucket names are global): set NEWSCLF_BUCKET to another name",
            )
    except gexc.Forbidden as e:
        if reasons(e) & {"accessNotConfigured", "SERVICE_DISABLED", "accountDisabled", "userProjectAccountProblem"}:
            return MISSING, str(translate(e, name))
        role = "roles/storage.admin"
        return MISSING, (
            f"No permission to create gs://{name} in project {ctx.project}: grant {role} "
            f"({grant_command(ctx.project or 'PROJECT', role, member_of(ctx.credentials))}) or have an admin create it"
        )
    except gexc.BadRequest as e:
        return (
            ERROR,
            f"Cloud Storage refused to create gs://{name} in {region} ({short(e)}): check NEWSCLF_BUCKET and NEWSCLF_REGION",
        )
    except Exception as e:
        err = translate(e, name, "upload")
        return ERROR, str(err) if err is not None else short(e)
    return CREATED, f"gs://{name} created in {region} (uniform bucket-level access, public access prevented)"


def check_bucket_access(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.storage.errors import translate
    from newsclf.cloud.storage.retry import retry_policy

    name = ctx.bucket
    client = storage_of(ctx)
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        granted = set(
            client.bucket(name).test_iam_permissions(
                list(BUCKET_PERMISSIONS), retry=retry_policy(CALL_TIMEOUT_S), timeout=CALL_TIMEOUT_S
            )
        )
    except (gexc.NotFound, gexc.MethodNotImplemented) as e:
        if emulator:  # fake-gcs-server has no testIamPermissions: nothing to check there
            return SKIPPED, f"not checked: the storage endpoint {emulator} does not support testIamPermissions"
        err = translate(e, name)
        return ERROR, str(err) if err is not None else short(e)
    except Exception as e:
        err = translate(e, name)
        return ERROR, str(err) if err is not None else short(e)
    lacking = [p for p in BUCKET_PERMISSIONS if p not in granted]
    if not lacking:
        return OK, f"can read, list and write objects in gs://{name}"
    member = member_of(ctx.credentials)
    fix = (
        f"grant {BUCKET_ROLE} on the bucket (`gcloud storage buckets add-iam-policy-binding gs://{name} "
        f"--member={member} --role={BUCKET_ROLE}`)"
    )
    if ctx.bucket_forbidden and not granted:
        fix += ", or set NEWSCLF_BUCKET to a bucket of your own if it is not yours"
    return MISSING, f"Missing {', '.join(lacking)} on gs://{name}: {fix}"


def check_repository(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.cloudbuild.image import artifactregistry_client, image_repository

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
    failure: Callable[[BaseException, str], tuple[str, str] | None] = lambda e, what: api_answer(  # noqa: E731
        ctx,
        e,
        ARTIFACTREGISTRY,
        project=repo_project,
        what=what,
        role="roles/artifactregistry.admin",
        endpoint=settings.artifactregistry_api_endpoint,
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
            f"Artifact Registry refused to create repository {repo} in {location} ({short(e)}): check "
            "NEWSCLF_ARTIFACT_REPO (lower-case letters, digits, hyphens) and NEWSCLF_REGION"
        )
    except Exception as e:
        answer = failure(e, f"create Artifact Registry repository {repo}")
        if answer is None and isinstance(e, (gexc.GoogleAPICallError, TimeoutError)):  # the operation failed
            answer = ERROR, f"Creating repository {repo} in {location} failed ({short(e)}): rerun, or {create_cmd}"
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


def check_cloudbuild_api(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    from newsclf.cloud.cloudbuild.submit import cloudbuild_client

    settings, project = ctx.settings, ctx.project or ""
    try:
        if ctx.clients.cloudbuild is None:
            ctx.clients.cloudbuild = cloudbuild_client(settings)
        # the cheapest call: one page of at most one build
        ctx.clients.cloudbuild.list_builds(request={"project_id": project, "page_size": 1}, timeout=CALL_TIMEOUT_S)
    except gexc.NotFound:
        return ERROR, f"Project {project} not found by Cloud Build: check NEWSCLF_GCP_PROJECT or --project"
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            CLOUDBUILD,
            project=project,
            what="use Cloud Build",
            role="roles/cloudbuild.builds.editor",
            endpoint=settings.cloudbuild_api_endpoint,
        )
        if answer is None:
            raise
        return answer
    return OK, "enabled"


def check_compute_api(ctx: Context) -> tuple[str, str]:
    from google.api_core import exceptions as gexc

    settings, project, zone = ctx.settings, ctx.project or "", ctx.settings.zone
    try:
        if ctx.clients.zones is None:
            from newsclf.cloud.compute.clients import zones_client

            ctx.clients.zones = zones_client(settings, ctx.credentials)
        found = ctx.clients.zones.get(project=project, zone=zone, timeout=CALL_TIMEOUT_S)
    except gexc.NotFound:
        return ERROR, (
            f"Zone {zone} not found in project {project}: set NEWSCLF_ZONE to a zone of NEWSCLF_REGION "
            f"({settings.region}-b, for example; `gcloud compute zones list` shows them)"
        )
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            COMPUTE,
            project=project,
            what="use Compute Engine",
            role="roles/compute.instanceAdmin.v1",
            endpoint=settings.compute_api_endpoint,
        )
        if answer is None:
            raise
        return answer
    status = getattr(found, "status", "") or "?"
    return OK, f"enabled; zone {zone} is {status}"


def check_batch_api(ctx: Context) -> tuple[str, str]:
    """Cloud sweeps run as Batch jobs in NEWSCLF_REGION: list them once to see that the API answers."""
    settings, project = ctx.settings, ctx.project or ""
    try:
        if ctx.clients.batch is None:
            from newsclf.cloud.batch import make_client

            ctx.clients.batch = make_client(settings, ctx.credentials)
        parent = f"projects/{project}/locations/{settings.region}"
        ctx.clients.batch.list_jobs(request={"parent": parent, "page_size": 1}, timeout=CALL_TIMEOUT_S)
    except Exception as e:
        answer = api_answer(
            ctx,
            e,
            BATCH,
            project=project,
            what="run sweeps on Cloud Batch",
            role="roles/batch.jobsEditor",
            endpoint=settings.batch_api_endpoint,
        )
        if answer is None:
            raise
        return answer
    return OK, f"enabled; sweeps run as Batch jobs in {settings.region}"
