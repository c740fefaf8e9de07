"""A run's state and its status.json (runs/<id>/status.json): one schema, one timestamp format.

The job writes it (`running`, then `succeeded`, `failed` or `interrupted`), a cloud sweep's job too
(plus its trials), and the VM startup script (newsclf/cloud/startup.sh, in shell) when the job could
not; `cloud run`, `cloud logs` and sweeps read it. Only `succeeded` and `failed` are final: an
`interrupted` (or still `running`) run resumes when its job starts again. `pending` is never in a
status.json: a sweep trial not started yet.
"""

from __future__ import annotations

import socket
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from google.cloud.storage import Bucket


class RunState(StrEnum):
    PENDING = "pending"  # a sweep trial not started yet
    RUNNING = "running"  # also a run whose VM went down without a word: the next start resumes it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM (the VM stopping): resumes when the job starts again

    @property
    def final(self) -> bool:
        """status.json says so: the run is not started again."""
        return self in FINAL


FINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED})

# UTC to the second with a Z: sorts as text, and `date -u +%Y-%m-%dT%H:%M:%SZ` writes it in shell
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# key -> the JSON types its value may have (None: null); every status.json has them all
SCHEMA: dict[str, tuple[type | None, ...]] = {
    "run_id": (str,),
    "state": (str,),
    "exit_code": (int, None),  # null while running; 130 (Ctrl-C) or 143 (SIGTERM) when interrupted
    "started_at": (str,),
    "finished_at": (str, None),  # null while running
    "attempt": (int,),  # 1 on the first start; a restarted VM that resumes the run counts up
    "host": (str, None),
    "error": (str, None),  # the failure or interruption, one line; null otherwise
}
# keys some documents add: the test metrics of a succeeded run; a cloud sweep's id and trial states; the
# latest evaluation while training (a cloud sweep's live table reads it)
OPTIONAL: dict[str, tuple[type | None, ...]] = {"metrics": (dict,), "sweep_id": (str,), "trials": (dict,),
                                                "progress": (dict,)}  # fmt: skip


def now() -> str:
    """The current time as status.json writes it."""
    return time.strftime(TIMESTAMP_FORMAT, time.gmtime())


def running_status(run_id: str, previous: dict[str, Any]) -> dict[str, Any]:
    """The status.json of an attempt that starts now (`previous`: the status it replaces, or {})."""
    return {
        "run_id": run_id,
        "state": RunState.RUNNING.value,
        "exit_code": None,
        "started_at": now(),
        "finished_at": None,
        "attempt": int(previous.get("attempt") or 0) + 1,
        "host": socket.gethostname(),
        "error": None,
    }


def finish(status: dict[str, Any], state: RunState, exit_code: int, error: str | None = None, **extra: Any) -> None:
    """End this attempt in `status`: `state` (final, or interrupted) at exit code `exit_code`, now."""
    if state not in FINAL and state != RunState.INTERRUPTED:
        raise ValueError(f"{state} does not end an attempt")
    status.update(state=state.value, exit_code=exit_code, finished_at=now(), error=error, **extra)


def problems(doc: Any) -> list[str]:
    """What makes `doc` not a status.json of this schema (empty: it is one)."""
    if not isinstance(doc, dict):
        return [f"not a JSON object: {type(doc).__name__}"]
    out = []
    for key, types in {**SCHEMA, **OPTIONAL}.items():
        if key not in doc:
            if key in SCHEMA:
                out.append(f"{key} is missing")
            continue
        value = doc[key]
        ok = any(value is None if t is None else isinstance(value, t) and not isinstance(value, bool) for t in types)
        if not ok:
            out.append(f"{key} is {value!r}")
    if doc.get("state") not in {s.value for s in RunState} - {RunState.PENDING}:
        out.append(f"state {doc.get('state')!r} is not running, succeeded, failed or interrupted")
    for key in ("started_at", "finished_at"):
        value = doc.get(key)
        if isinstance(value, str) and not _is_timestamp(value):
            out.append(f"{key} {value!r} is not {TIMESTAMP_FORMAT}")
    ended = doc.get("state") in (*FINAL, RunState.INTERRUPTED)
    if ended and (doc.get("finished_at") is None or doc.get("exit_code") is None):
        out.append(
            f"a{'n' if doc.get('state') == RunState.INTERRUPTED else ''} {doc.get('state')} run needs finished_at and exit_code"
        )
    if doc.get("state") in (RunState.FAILED, RunState.INTERRUPTED) and not doc.get("error"):
        out.append(f"a{'n' if doc.get('state') == RunState.INTERRUPTED else ''} {doc.get('state')} run needs an error")
    extra = sorted(set(doc) - set(SCHEMA) - set(OPTIONAL))
    if extra:
        out.append(f"unknown keys: {', '.join(extra)}")
    return out


def _is_timestamp(value: str) -> bool:
    try:
        time.strptime(value, TIMESTAMP_FORMAT)
    except ValueError:
        return False
    return True


def write_status(bucket: Bucket, run_id: str, status: dict[str, Any]) -> None:
    """Write runs/<run_id>/status.json: the one place a Python writer puts it in the bucket."""
    from newsclf.cloud import layout
    from newsclf.cloud.storage.objects import write_json

    wrong = problems(status)
    if wrong:  # a bug in newsclf, not the user's input: readers would misjudge the run
        raise ValueError(f"status.json of run {run_id} does not match its schema: {'; '.join(wrong)}")
    write_json(bucket, layout.RunLayout(run_id).status, status)
