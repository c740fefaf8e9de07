"""The one translator core for Google client errors: what happened (credentials, API disabled,
billing, unreachable), in one short line, with each service's hints (its API, endpoint setting, role).

Every service module (storage, compute, build, setup, the image check) classifies through these
functions and words the fix for its own command; the shared cases read the same everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from newsclf.errors import CloudError


@dataclass(frozen=True)
class Service:
    """What an error message needs to know about one Google API."""

    title: str  # "Cloud Build API"
    api: str  # "cloudbuild.googleapis.com": what `gcloud services enable` takes
    endpoint_setting: str  # the NEWSCLF_* setting that points its client elsewhere


STORAGE = Service("Cloud Storage API", "storage.googleapis.com", "STORAGE_EMULATOR_HOST")
COMPUTE = Service("Compute Engine API", "compute.googleapis.com", "NEWSCLF_COMPUTE_API_ENDPOINT")
CLOUDBUILD = Service("Cloud Build API", "cloudbuild.googleapis.com", "NEWSCLF_CLOUDBUILD_API_ENDPOINT")
ARTIFACTREGISTRY = Service(
    "Artifact Registry API", "artifactregistry.googleapis.com", "NEWSCLF_ARTIFACTREGISTRY_API_ENDPOINT"
)
IAM = Service("IAM API", "iam.googleapis.com", "NEWSCLF_IAM_API_ENDPOINT")
RESOURCEMANAGER = Service(
    "Resource Manager API", "cloudresourcemanager.googleapis.com", "NEWSCLF_RESOURCEMANAGER_API_ENDPOINT"
)
SECRETMANAGER = Service("Secret Manager API", "secretmanager.googleapis.com", "NEWSCLF_SECRETMANAGER_API_ENDPOINT")
BATCH = Service("Cloud Batch API", "batch.googleapis.com", "NEWSCLF_BATCH_API_ENDPOINT")

API_DISABLED_REASONS = frozenset({"SERVICE_DISABLED", "accessNotConfigured"})
BILLING_REASONS = frozenset({"BILLING_DISABLED", "billingNotEnabled", "accountDisabled", "userProjectAccountProblem"})


def short(e: BaseException | None, limit: int | None = 200, *, request: bool = False) -> str:
    """The first line of an error, cut at `limit` characters (None: whole, where it is the last thing
    said); without the REST transport's `403 GET https://...: ` prefix unless `request` (Cloud Storage
    keeps it: which object a transfer failed on is worth saying)."""
    if e is None:
        return "unknown"
    text = str(e)
    if "Connection refused" in text or isinstance(e, ConnectionRefusedError):  # requests buries it deep
        m = re.search(r"host='([^']+)', port=(\d+)", text)
        return f"connection refused by {m.group(1)}:{m.group(2)}" if m else "connection refused"
    if not request:
        text = (getattr(e, "message", None) or text).strip()
        text = re.sub(r"^(\d{3} )?(GET|POST|PUT|PATCH|DELETE) \S+: ", "", text)
    first = text.splitlines()[0] if text else type(e).__name__
    return first if limit is None or len(first) <= limit else first[: limit - 3] + "..."


def reasons(e: BaseException) -> set[str]:
    """The `reason` codes of a google.api_core exception (its own and its errors' list)."""
    found = {str(getattr(e, "reason", None) or "")}
    for item in getattr(e, "errors", None) or []:
        if isinstance(item, dict):
            found.add(str(item.get("reason") or ""))
    return found - {""}


def _text(e: BaseException) -> str:
    return str(getattr(e, "message", "") or e)


def api_disabled(e: BaseException) -> bool:
    """A 403 saying the API is not enabled in the project."""
    return bool(reasons(e) & API_DISABLED_REASONS) or "has not been used in project" in _text(e)


def billing_disabled(e: BaseException) -> bool:
    """A 403 saying the project (or the bucket's owner) has no billing."""
    return bool(reasons(e) & BILLING_REASONS) or "billing" in _text(e).lower()


def project_in(e: BaseException, default: str) -> str:
    """The project an "API disabled" message names (its number or id), else `default`."""
    m = re.search(r"project (\d+|[a-z][a-z0-9-]+)", _text(e))
    return m.group(1) if m else default


def credentials_error(e: BaseException) -> CloudError | None:
    """The same words, whatever the service, for missing, broken, expired or rejected credentials."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth

    from newsclf.cloud.google.credentials import REJECTED, no_credentials_message

    if isinstance(e, auth.DefaultCredentialsError):
        return CloudError(no_credentials_message())
    if isinstance(e, (auth.RefreshError, gexc.Unauthorized)):  # Unauthenticated is an Unauthorized
        return CloudError(REJECTED)
    return None


def unreachable(e: BaseException) -> bool:
    """The endpoint did not answer (refused, reset, DNS): the network or an endpoint setting."""
    import requests

    return isinstance(e, (requests.exceptions.ConnectionError, ConnectionError))


def api_disabled_message(service: Service, project: str, *, then: str = "rerun `newsclf cloud setup`") -> str:
    return (
        f"The {service.title} is disabled in project {project}: enable it at "
        f"https://console.cloud.google.com/apis/library/{service.api}?project={project} and {then}"
    )


def unreachable_message(service: Service, endpoint: str | None) -> str:
    return f"Cannot reach the {service.title} at {endpoint or service.api}: check the network or {service.endpoint_setting}"


def grant_command(project: str, role: str, member: str) -> str:
    return f"`gcloud projects add-iam-policy-binding {project} --member={member} --role={role}`"


def api_failure(
    e: BaseException, service: Service, *, project: str, what: str, role: str, member: str, endpoint: str | None
) -> tuple[str, str] | None:
    """("missing" or "error", one line naming the fix) for the failures of a call to `service` that
    people can fix: credentials, the API or billing disabled, no permission (`role` grants it), an
    endpoint that does not answer; None for the others. `what` completes "No permission to ..."."""
    from google.api_core import exceptions as gexc

    if isinstance(e, CloudError):
        return "error", str(e)
    credentials = credentials_error(e)
    if credentials is not None:
        return "error", str(credentials)
    if isinstance(e, gexc.Forbidden):  # PermissionDenied is a Forbidden
        if api_disabled(e):
            return "missing", api_disabled_message(service, project)
        if billing_disabled(e):
            return "missing", (
                f"Billing is disabled for project {project}: link a billing account at "
                f"https://console.cloud.google.com/billing/linkedaccount?project={project}"
            )
        return (
            "missing",
            f"No permission to {what} in project {project}: grant {role} ({grant_command(project, role, member)})",
        )
    if unreachable(e):
        return "error", unreachable_message(service, endpoint)
    return None
