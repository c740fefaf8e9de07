"""The training VMs' service account: its name, IAM's REST API for it, and what a VM's last lines say.

google-cloud-iam offers no REST transport, so service accounts go through IAM's REST API with
google-auth's AuthorizedSession; errors come back as google.api_core exceptions, as from the
other clients. Importing this module stays cheap: google imports happen inside functions.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from newsclf.errors import ConfigError

if TYPE_CHECKING:
    from newsclf.config import Settings

DEFAULT_ACCOUNT_ID = "newsclf-vm"
DEFAULT_SA = "default"  # NEWSCLF_VM_SERVICE_ACCOUNT=default: Compute Engine's default account, roles unmanaged
IAM_API = "https://iam.googleapis.com"
ACT_AS = "iam.serviceAccounts.actAs"  # what creating a VM that runs as the account takes
ACT_AS_ROLE = "roles/iam.serviceAccountUser"
# What the VM does, and the least role for each (granted on the resource, not the project, where it can be)
BUCKET_ROLE = "roles/storage.objectUser"  # read, list, write and overwrite objects; no bucket settings
REPOSITORY_ROLE = "roles/artifactregistry.reader"  # pull the training image
SECRET_ROLE = "roles/secretmanager.secretAccessor"  # read the W&B key
LOGGING_ROLE = "roles/logging.logWriter"  # the VM's agents write its logs
BATCH_AGENT_ROLE = "roles/batch.agentReporter"  # a sweep's Batch VMs report their tasks' state to Batch
_ACCOUNT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")  # IAM: 6-30 characters
_EMAIL = re.compile(
    r"(?P<id>[a-z][a-z0-9-]{4,28}[a-z0-9])@(?P<project>[a-z][a-z0-9-]{4,28}[a-z0-9])\.iam\.gserviceaccount\.com"
)


def vm_service_account(settings: Settings, project: str) -> str:
    """The email the VMs run as: NEWSCLF_VM_SERVICE_ACCOUNT (an email, or an account id in `project`),
    else newsclf-vm@PROJECT.iam.gserviceaccount.com; "default" keeps Compute Engine's default account."""
    value = (settings.vm_service_account or "").strip()
    if value == DEFAULT_SA:
        return DEFAULT_SA
    if not value:
        value = DEFAULT_ACCOUNT_ID
    if "@" in value:
        return value
    if not _ACCOUNT_ID.fullmatch(value):
        raise ConfigError(
            f"Invalid NEWSCLF_VM_SERVICE_ACCOUNT {value!r}: give a service account email, or an account id of "
            "6-30 lower-case letters, digits and hyphens starting with a letter"
        )
    return f"{value}@{project}.iam.gserviceaccount.com"


def account_id(email: str, project: str) -> str | None:
    """The id to create `email` with in `project`, or None when newsclf cannot create it there
    (another project's account, or a Google-managed one)."""
    m = _EMAIL.fullmatch(email)
    return m.group("id") if m and m.group("project") == project else None


def member(email: str) -> str:
    return f"serviceAccount:{email}"


# --- IAM's REST API ------------------------------------------------------------------------------


class IamClient:
    """The few IAM v1 calls `cloud setup` makes; raises google.api_core exceptions like the other clients."""

    def __init__(self, settings: Settings, credentials: Any = None, *, timeout: float = 60.0) -> None:
        from google.auth.transport.requests import AuthorizedSession

        from newsclf.cloud.google.credentials import (
            CLOUD_PLATFORM_SCOPE,
            default_credentials,
        )
        from newsclf.cloud.google.endpoints import is_local_endpoint

        endpoint = settings.iam_api_endpoint
        if is_local_endpoint(endpoint):
            from google.auth.credentials import AnonymousCredentials

            credentials = AnonymousCredentials()
        elif credentials is None:
            credentials, _ = default_credentials([CLOUD_PLATFORM_SCOPE])
        self.base = (endpoint or IAM_API).rstrip("/")
        self.session = AuthorizedSession(credentials)
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        from google.api_core import exceptions as gexc

        response = self.session.request(method, f"{self.base}/v1/{path}", json=body, timeout=self.timeout)
        if response.status_code >= 400:
            raise gexc.from_http_response(response)
        return response.json() if response.content else {}

    def get_account(self, email: str) -> dict | None:
        """The service account, or None when it does not exist."""
        from google.api_core import exceptions as gexc

        try:  # `-` for the project: IAM finds the account from its email, whatever its project
            return self._call("GET", f"projects/-/serviceAccounts/{email}")
        except gexc.NotFound:
            return None

    def create_account(self, project: str, account_id: str, display_name: str, description: str) -> dict:
        body = {"accountId": account_id, "serviceAccount": {"displayName": display_name, "description": description}}
        return self._call("POST", f"projects/{project}/serviceAccounts", body)

    def test_permissions(self, email: str, permissions: list[str]) -> list[str]:
        """Which of `permissions` the caller holds on the account."""
        body = {"permissions": permissions}
        answer = self._call("POST", f"projects/-/serviceAccounts/{email}:testIamPermissions", body)
        return list(answer.get("permissions") or [])


# --- what a VM's last lines say ------------------------------------------------------------------

_PULL = re.compile(r"could not pull|pull access denied|manifest unknown|denied: ", re.IGNORECASE)
_BUCKET = re.compile(
    r"could not (write|upload|read) .*(status\.json|the log|gs://|runs/)|could not upload the log", re.IGNORECASE
)
_DENIED = re.compile(r"permission denied|\b403\b|forbidden|access denied|does not have .*permission", re.IGNORECASE)


def likely_cause(vm_lines: list[str], *, account: str, bucket: str | None) -> str | None:
    """What the VM's own progress lines (`newsclf-vm[RUN]: ...`) say stopped it, naming the fix; None
    when they say nothing a person can act on (a preemption, --max-hours or `cloud stop` leave none)."""
    who = "Compute Engine's default service account" if account == DEFAULT_SA else f"its service account {account}"
    fix = "run `newsclf cloud setup` to create the account and its grants (it names any it cannot make)"
    causes = []
    if any(_PULL.search(line) for line in vm_lines):
        causes.append(
            f"it could not pull the training image: {who} may lack {REPOSITORY_ROLE} on the repository "
            "(or the image is missing: `newsclf cloud build`)"
        )
    if any(_BUCKET.search(line) for line in vm_lines):
        where = f"gs://{bucket}" if bucket else "the bucket"
        causes.append(f"it could not write to {where}: {who} may lack {BUCKET_ROLE} on the bucket")
    if not causes and any(_DENIED.search(line) for line in vm_lines):
        causes.append(f"it was denied access to a Google Cloud resource: check the roles of {who}")
    if not causes:
        return None
    return "; ".join(causes) + f"; {fix}"
