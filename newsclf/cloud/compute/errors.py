"""Compute Engine errors in one line naming the fix; capacity and quota failures told apart (next zone)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from newsclf.cloud.google.errors import (
    COMPUTE,
    api_disabled,
    api_disabled_message,
    credentials_error,
    short,
    unreachable,
)
from newsclf.errors import CloudError

# Errors that mean "this zone cannot take the VM now": try the next zone.
_CAPACITY_MARKERS = ("RESOURCEPOOLEXHAUSTED", "QUOTAEXCEEDED", "STOCKOUT", "RESOURCEEXHAUSTED")


def api_errors() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as gexc

    return (gexc.GoogleAPICallError, gexc.RetryError)


@contextlib.contextmanager
def translated(action: str, project: str) -> Iterator[None]:
    """Turn Google API errors into one-line CloudErrors that name the fix; NotFound and capacity
    errors pass through (the caller decides what those mean)."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    try:
        yield
    except (gexc.Unauthorized, auth_exc.GoogleAuthError) as e:
        raise (credentials_error(e) or CloudError(f"Could not {action}: {short(e, None)}")) from e
    except gexc.Forbidden as e:
        if capacity_reason(e):
            raise
        if api_disabled(e):
            raise CloudError(api_disabled_message(COMPUTE, project, then="retry")) from e
        raise CloudError(
            f"Permission denied to {action} in project {project}: {short(e, None)}; grant your account "
            "roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser, or check NEWSCLF_GCP_PROJECT"
        ) from e
    except gexc.GoogleAPICallError as e:
        if "serviceaccount" in short(e, None).lower().replace(" ", ""):  # missing, or not ours to use (actAs)
            raise CloudError(
                f"Could not {action}: {short(e, None)}; run `newsclf cloud setup`, which creates the VMs' service account "
                "(NEWSCLF_VM_SERVICE_ACCOUNT) and checks that you may use it (roles/iam.serviceAccountUser)"
            ) from e
        if isinstance(e, gexc.NotFound) or capacity_reason(e):
            raise  # the caller decides what these mean
        raise CloudError(f"Could not {action}: {short(e, None)}; check `newsclf cloud status` and retry") from e
    except Exception as e:
        if not unreachable(e):
            raise
        raise CloudError(
            f"Cannot reach the Compute Engine API to {action}: check the network or {COMPUTE.endpoint_setting}"
        ) from e


def capacity_reason(error: Any) -> str | None:
    """The capacity/quota code in an API exception or a finished Operation's error, else None."""
    codes: list[str] = []
    if hasattr(error, "error") and hasattr(error.error, "errors"):  # a compute_v1.Operation
        codes += [f"{e.code} {e.message}" for e in error.error.errors]
    else:
        for item in getattr(error, "errors", None) or []:
            if isinstance(item, dict):
                codes += [str(v) for v in item.values()]
            else:
                codes.append(str(item))
        if getattr(error, "reason", None):
            codes.append(str(error.reason))
        codes.append(str(getattr(error, "message", "") or ""))
    for text in codes:
        for word in re.findall(r"[A-Za-z_]+", text):
            squashed = word.upper().replace("_", "")
            if any(marker in squashed for marker in _CAPACITY_MARKERS):
                return word
    return None
