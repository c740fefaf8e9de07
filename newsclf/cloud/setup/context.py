"""What the setup steps share: the settings, the clients (built on first use), what earlier steps found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from newsclf.cloud.google.endpoints import client_kwargs

if TYPE_CHECKING:
    from newsclf.config import Settings

CALL_TIMEOUT_S = 60.0  # per API call: setup checks, it does not wait out outages


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


def projects_client(settings: Settings, credentials: Any = None) -> Any:
    """A resourcemanager_v3.ProjectsClient over REST; NEWSCLF_RESOURCEMANAGER_API_ENDPOINT points it elsewhere."""
    from google.cloud import resourcemanager_v3

    kwargs = client_kwargs(settings.resourcemanager_api_endpoint, credentials)
    return resourcemanager_v3.ProjectsClient(transport="rest", **kwargs)


def secrets_client(settings: Settings, credentials: Any = None) -> Any:
    """A secretmanager_v1.SecretManagerServiceClient over REST; NEWSCLF_SECRETMANAGER_API_ENDPOINT points it elsewhere."""
    from google.cloud import secretmanager_v1

    kwargs = client_kwargs(settings.secretmanager_api_endpoint, credentials)
    return secretmanager_v1.SecretManagerServiceClient(transport="rest", **kwargs)


def member_of(credentials: Any) -> str:
    email = getattr(credentials, "service_account_email", None)
    if isinstance(email, str) and "@" in email:
        return f"serviceAccount:{email}"
    return "user:YOU@example.com"


@dataclass
class Context:
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


def storage_of(ctx: Context) -> Any:
    if ctx.clients.storage is None:
        from newsclf.cloud.storage.client import storage_client

        ctx.clients.storage = storage_client(ctx.settings.model_copy(update={"gcp_project": ctx.project}))
    return ctx.clients.storage


def api_answer(
    ctx: Context,
    e: BaseException,
    service: Any,
    *,
    what: str,
    role: str,
    endpoint: str | None,
    project: str | None = None,
) -> tuple[str, str] | None:
    """api_failure() for a setup step: the caller is who `ctx`'s credentials are; the project is ctx's unless given."""
    from newsclf.cloud.google.errors import api_failure

    return api_failure(
        e,
        service,
        project=(ctx.project or "") if project is None else project,
        what=what,
        role=role,
        member=member_of(ctx.credentials),
        endpoint=endpoint,
    )
