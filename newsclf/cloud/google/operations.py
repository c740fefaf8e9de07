"""Waiting for long-running operations: the one waiter.

Clients whose operations are `google.api_core.operation.Operation`s (Artifact Registry, Cloud Build)
are waited on with their own `.result(timeout=...)`. compute_v1's extended operations would poll the
public endpoint whatever the client's endpoint is, so Compute Engine calls the `*_unary` methods and
waits here, on its ZoneOperationsClient (`wait` long-polls server-side, up to two minutes a call).
"""

from __future__ import annotations

import time
from typing import Any

from newsclf.errors import CloudError

OPERATION_TIMEOUT_S = 900.0  # Compute Engine operations: creating a GPU VM takes a minute or two


class OperationFailed(CloudError):
    """An operation finished with an error; `operation` is the finished operation."""

    def __init__(self, message: str, operation: Any) -> None:
        super().__init__(message)
        self.operation = operation


def wait_zone_operation(
    operations: Any, project: str, zone: str, op: Any, *, timeout_s: float = OPERATION_TIMEOUT_S
) -> Any:
    """Wait for a compute_v1 zone operation (`operations`: a ZoneOperationsClient) until DONE; raise
    OperationFailed when it ended in an error, CloudError when it outlives `timeout_s`."""
    from google.cloud import compute_v1

    done = compute_v1.Operation.Status.DONE
    deadline = time.monotonic() + timeout_s
    while op.status != done:
        if time.monotonic() > deadline:
            raise CloudError(
                f"Operation {op.name} in {zone} did not finish in {timeout_s:.0f} s: check `newsclf cloud status`"
            )
        op = operations.wait(project=project, zone=zone, operation=op.name)
        if op.status != done:
            time.sleep(0.2)
    if op.error and op.error.errors:
        first = op.error.errors[0]
        raise OperationFailed(f"{first.code}: {first.message}", op)
    return op
