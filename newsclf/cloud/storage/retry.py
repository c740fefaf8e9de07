"""How long Cloud Storage requests wait and retry: one policy, passed explicitly to every call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from newsclf.cloud.google.errors import short

if TYPE_CHECKING:
    from google.api_core.retry import Retry

log = logging.getLogger(__name__)

RETRY_DEADLINE_S = 300.0  # give up on 429/5xx/connection resets after this long
REQUEST_TIMEOUT_S = 60.0  # a request silent for this long (connecting, or between two reads) is retried


def retry_policy(deadline: float | None = None) -> Retry:
    """The library's DEFAULT_RETRY (429, 5xx, resets, timeouts) with exponential backoff and a deadline.

    Passed explicitly to every call: the library's conditional default would silently disable
    retries for uploads it cannot prove idempotent (ours always carry a generation precondition).
    """
    from google.cloud.storage.retry import DEFAULT_RETRY

    deadline = RETRY_DEADLINE_S if deadline is None else deadline
    policy = DEFAULT_RETRY.with_delay(initial=0.5, maximum=30.0, multiplier=2.0).with_timeout(deadline)
    policy._on_error = _log_retry  # api_core's on_error hook; the with_* copies keep it
    return policy


def _log_retry(exc: Exception) -> None:
    log.info("Cloud Storage: %s; retrying (for up to %g s)", short(exc, 160, request=True), RETRY_DEADLINE_S)
