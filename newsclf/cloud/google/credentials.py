"""Application Default Credentials, and a broken GOOGLE_APPLICATION_CREDENTIALS named before google.auth reads it.

A key file holds a private key: every message here names the file and what is wrong with it, never
its content (google.auth's own errors can quote it, or be an AttributeError).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from newsclf.errors import CloudError

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"

_KEY_TYPES = frozenset(
    {
        "service_account",
        "authorized_user",
        "external_account",
        "external_account_authorized_user",
        "impersonated_service_account",
        "gdch_service_account",
    }
)  # what google.auth.load_credentials_from_file accepts
_KEY_FIX = (
    "download a new key (`gcloud iam service-accounts keys create KEY.json --iam-account=ACCOUNT`) "
    "or unset it and run `gcloud auth application-default login`"
)
_DAMAGED = "cannot be loaded (its private key or another field is damaged)"
REJECTED = (
    "Google Cloud rejected your credentials (expired, revoked or wrong account): run "
    "`gcloud auth application-default login` or fix GOOGLE_APPLICATION_CREDENTIALS"
)


def key_file_problem(path: Path) -> str | None:
    """Why the credentials file is unusable, in words that quote none of its content (it holds a
    private key); None when it looks like a key google.auth can load."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        return "is a directory"
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    if not data.strip():
        return "is empty"
    try:
        info = json.loads(data)
    except ValueError:  # UnicodeDecodeError is one
        return "is not valid JSON (truncated, or not a key file)"
    if not isinstance(info, dict):
        return "is not a JSON object"
    if info.get("type") not in _KEY_TYPES:
        return 'has no known credential "type" (a service-account key has "type": "service_account")'
    if info["type"] == "service_account":
        missing = [
            f for f in ("client_email", "private_key", "token_uri") if not isinstance(info.get(f), str) or not info[f]
        ]
        if missing:
            return f"lacks {', '.join(missing)}"
        from google.auth.exceptions import GoogleAuthError
        from google.oauth2 import service_account

        try:  # what google.auth.default will do with it (callers that swallow its errors see this one)
            service_account.Credentials.from_service_account_info(info)
        except (GoogleAuthError, ValueError):
            return _DAMAGED
    return None


def credentials_path() -> Path | None:
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    return Path(path) if path else None


def check_credentials_file() -> None:
    """A CloudError naming the path when GOOGLE_APPLICATION_CREDENTIALS points at a file that is not a
    usable key, before google.auth reads it (whose errors can quote the file, or be an AttributeError)."""
    path = credentials_path()
    if path is None or not path.exists():
        return
    problem = key_file_problem(path)
    if problem is not None:
        raise CloudError(_broken_key_message(path, problem))


def _broken_key_message(path: Path, problem: str) -> str:
    return f"GOOGLE_APPLICATION_CREDENTIALS points at {path}, which is not a usable key file: it {problem}; " + _KEY_FIX


def no_credentials_message() -> str:
    path = credentials_path()
    if path is not None and not path.exists():
        return (
            f"No Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS points at {path}, which does not "
            "exist; fix the path or unset it and run `gcloud auth application-default login`"
        )
    if path is not None:
        return _broken_key_message(path, key_file_problem(path) or _DAMAGED)
    return (
        "No Google Cloud credentials found: run `gcloud auth application-default login` or set "
        "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
    )


def default_credentials(scopes: Sequence[str] = (CLOUD_PLATFORM_SCOPE,)) -> tuple[Any, str | None]:
    """(credentials, project) from Application Default Credentials, or a CloudError naming the fix."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    check_credentials_file()
    try:
        return google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError:
        raise CloudError(no_credentials_message()) from None
