"""Cloud Storage's exceptions, and Google errors translated into one line naming the fix.

A 404 is judged from the request that got it (never from the message, which quotes the URL): the
bucket, one of its objects, or a resumable upload session.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.cloud.google.errors import (
    api_disabled,
    billing_disabled,
    credentials_error,
    project_in,
    short,
)
from newsclf.cloud.storage import retry
from newsclf.errors import CloudError

if TYPE_CHECKING:
    from google.cloud.storage import Bucket

log = logging.getLogger(__name__)


class IntegrityError(CloudError):
    """A downloaded object did not match its crc32c; the local file was left untouched."""


class ConflictError(CloudError):
    """An upload would replace an object that differs from what we expected (precondition failed)."""


class ObjectNotFound(CloudError):
    """An object (not the bucket) is missing."""


class TransferCancelled(Exception):
    """Raised inside worker threads once the transfer is being abandoned (Ctrl-C or a fatal error)."""


# failures that concern one file: the other files of a transfer carry on
PER_FILE_ERRORS = (IntegrityError, ConflictError, ObjectNotFound)


def _bucket_missing_message(bucket: str) -> str:
    return (
        f"Bucket gs://{bucket} not found: create it with `gcloud storage buckets create gs://{bucket}` "
        "or set NEWSCLF_BUCKET (or --bucket) to an existing bucket"
    )


def _forbidden_message(exc: Any, bucket: str) -> str:
    text = str(getattr(exc, "message", "") or exc)
    if api_disabled(exc):
        project = project_in(exc, "YOUR_PROJECT")
        return (
            f"The Cloud Storage API is disabled in project {project}: enable it with "
            f"`gcloud services enable storage.googleapis.com --project {project}`, wait a minute and retry"
        )
    if billing_disabled(exc):
        return (
            f"Billing is disabled for the project that owns gs://{bucket}: enable it at "
            "https://console.cloud.google.com/billing and retry"
        )
    who = re.search(r"([\w.+-]+@[\w.-]+) does not have", text)
    perm = re.search(r"(storage\.[a-zA-Z]+\.[a-zA-Z]+)", text)
    principal = who.group(1) if who else None
    detail = ""
    if principal and perm:
        detail = f" ({principal} lacks {perm.group(1)})"
    elif perm:
        detail = f" ({perm.group(1)} denied)"
    if principal:
        member = f"serviceAccount:{principal}" if principal.endswith(".gserviceaccount.com") else f"user:{principal}"
    else:
        member = "user:YOU@example.com"
    return (
        f"Permission denied on gs://{bucket}{detail}: grant roles/storage.objectAdmin on the bucket, e.g. "
        f"`gcloud storage buckets add-iam-policy-binding gs://{bucket} --member={member} "
        "--role=roles/storage.objectAdmin`"
    )


def _not_found_scope(exc: BaseException) -> str | None:
    """What a 404 is about, from the request that got it (never the message, which quotes the URL and
    so the bucket's name): "bucket", "object" (or its bucket), "session" (a resumable upload's), or
    None when the request is unknown."""
    from urllib.parse import parse_qs, urlsplit

    url = getattr(getattr(getattr(exc, "response", None), "request", None), "url", None)
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    m = re.search(r"/storage/v1/b/[^/]+(/.*)?$", parts.path)
    if m is None:
        return None
    rest = m.group(1) or ""
    if rest.startswith("/o/"):
        return "object"
    if rest.rstrip("/") == "/o" and "upload_id" in parse_qs(parts.query):
        return "session"
    return "bucket"  # the bucket itself, its listing, an upload into it, its IAM policy


def _bucket_exists(bucket: Bucket) -> bool | None:
    """Whether the bucket exists, by listing (storage.objects.list, which every role that reads objects
    has; storage.buckets.get often is not granted); None when that cannot tell."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    try:
        found = bucket.client.list_blobs(
            bucket, max_results=1, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S
        )
        next(iter(found), None)
    except api.NotFound:
        return False
    except (api.GoogleAPICallError, api.RetryError, GoogleAuthError, OSError) as e:  # OSError: requests' errors
        log.debug("Could not check that gs://%s exists: %s", bucket.name, short(e, 160, request=True))
        return None
    return True


def translate(exc: BaseException, bucket: str | Bucket, op: str = "list", name: str | None = None) -> CloudError | None:
    """A one-line CloudError naming the fix for a Google client exception, or None if it is not ours to explain.

    A 404 is read from the request that got it: on the bucket, its listing or an upload into it, the
    bucket is missing; on an object, the object is, unless the bucket is (checked when `bucket` is a
    Bucket, else assumed present). op is what failed, for a 404 without its request: "list" or
    "upload" (the bucket), "download" or "read" (the object).
    """
    import requests
    from google.api_core import exceptions as api

    if isinstance(exc, CloudError):
        return exc
    handle = None if isinstance(bucket, str) else bucket
    bucket = bucket if isinstance(bucket, str) else bucket.name
    credentials = credentials_error(exc)
    if credentials is not None:
        return credentials
    if isinstance(exc, api.Forbidden):
        return CloudError(_forbidden_message(exc, bucket))
    if isinstance(exc, api.NotFound):
        scope = _not_found_scope(exc) or ("bucket" if op in ("list", "upload") else "object")
        if scope == "object" and handle is not None and _bucket_exists(handle) is False:
            scope = "bucket"
        if scope == "bucket":
            return CloudError(_bucket_missing_message(bucket))
        if scope == "session":
            return CloudError(
                f"The resumable upload of {layout.uri(bucket, name or '')} expired or was lost on the server: "
                "re-run the command; finished files are kept"
            )
        return ObjectNotFound(
            f"{layout.uri(bucket, name or '')} is gone (deleted or replaced while we read it): re-run the command"
        )
    if isinstance(exc, api.RetryError):
        return CloudError(
            f"Cloud Storage kept failing for {retry.RETRY_DEADLINE_S:g} s of retries (last error: {short(exc.cause, 160, request=True)}): "
            "check your network or https://status.cloud.google.com and re-run; finished files are kept"
        )
    if isinstance(exc, (api.TooManyRequests, api.ServerError, requests.ConnectionError, ConnectionError)):
        return CloudError(
            f"Cloud Storage is unreachable or overloaded ({short(exc, 160, request=True)}): check your network and re-run; "
            "finished files are kept"
        )
    if isinstance(exc, api.BadRequest):
        return CloudError(
            f"Cloud Storage rejected the request for {layout.uri(bucket, name or '')} ({short(exc, 160, request=True)})"
        )
    return None


@contextmanager
def errors(bucket: str | Bucket, op: str, name: str | None = None) -> Iterator[None]:
    try:
        yield
    except TransferCancelled:
        raise
    except Exception as e:
        err = translate(e, bucket, op, name)
        if err is None or err is e:
            raise
        raise err from e
