"""The transfer engine: files moved in parallel, progress reported, all of it abandoned at once.

Per-file failures (a conflict, a corrupted object, a missing one) let the other files finish; any
other failure (credentials, permission, the bucket, the network) cancels the rest, as does Ctrl-C,
without waiting: workers stop at their next read or write, and part files stay resumable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from newsclf.cloud.storage.errors import PER_FILE_ERRORS, TransferCancelled
from newsclf.errors import CloudError

LARGE_FILE = 8 * 1024 * 1024  # above this: resumable upload in chunks (and its own progress bar)
UPLOAD_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as GCS requires
WORKERS = 8  # files in flight at once
PART_SUFFIX = ".newsclf-part"  # `.NAME.<generation>.newsclf-part`: an unfinished download
_PROGRESS_STEP = 1024 * 1024  # report download progress every MiB, not every 8 KiB read


class TransferProgress:
    """Hooks to watch a transfer; override what you need. Called from worker threads."""

    def plan(self, files: int, nbytes: int, skipped: int) -> None:
        """What will move: files and bytes to transfer, files already up to date."""

    def file_started(self, name: str, size: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None:
        """nbytes more of `name` moved (or were already there, for a resumed download)."""

    def file_done(self, name: str) -> None: ...


NO_PROGRESS = TransferProgress()


class Reader:
    """A file for the client to read an upload from: reports progress, stops on cancel."""

    def __init__(self, f: Any, report: Callable[[int], None], cancel: threading.Event, high: int = 0) -> None:
        self._f, self._report, self._cancel, self.high = f, report, cancel, high

    def read(self, n: int = -1) -> bytes:
        if self._cancel.is_set():
            raise TransferCancelled()
        data = self._f.read(n)
        pos = self._f.tell()
        if pos > self.high:  # a retried chunk re-reads bytes already counted
            self._report(pos - self.high)
            self.high = pos
        return data

    def seek(self, *args: Any) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()


class Writer:
    """A file for the client to write a download into: reports progress, stops on cancel."""

    def __init__(self, f: Any, report: Callable[[int], None], cancel: threading.Event) -> None:
        self._f, self._report, self._cancel, self._pending = f, report, cancel, 0

    def write(self, data: bytes) -> int:
        if self._cancel.is_set():
            raise TransferCancelled()
        n = self._f.write(data)
        self._pending += len(data)
        if self._pending >= _PROGRESS_STEP:
            self.flush_progress()
        return n

    def flush_progress(self) -> None:
        if self._pending:
            self._report(self._pending)
            self._pending = 0

    def seek(self, *args: Any) -> int:
        return self._f.seek(*args)

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()


# --- results ------------------------------------------------------------------------------------


@dataclass
class TransferResult:
    files_transferred: int = 0
    files_skipped: int = 0  # already identical (size and crc32c)
    bytes: int = 0  # bytes actually moved over the network
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)  # objects transferred

    def __add__(self, other: TransferResult) -> TransferResult:
        return TransferResult(
            self.files_transferred + other.files_transferred,
            self.files_skipped + other.files_skipped,
            self.bytes + other.bytes,
            self.seconds + other.seconds,
            self.names + other.names,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "files_transferred": self.files_transferred,
            "files_skipped": self.files_skipped,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def execute(
    jobs: Sequence[Callable[[], int]], workers: int, cancel: threading.Event
) -> tuple[int, list[BaseException]]:
    """Run jobs (each returns bytes moved) in a thread pool; per-file errors let the others finish."""
    moved, errors = 0, list[BaseException]()
    if not jobs:
        return moved, errors

    def guarded(job: Callable[[], int]) -> int:
        if cancel.is_set():
            raise TransferCancelled()
        try:
            return job()
        except (*PER_FILE_ERRORS, TransferCancelled):
            raise
        except BaseException:
            cancel.set()  # here, not when the main thread gets to it: no queued file starts meanwhile
            raise

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="newsclf-gcs")
    interrupted = False
    try:
        for fut in as_completed([pool.submit(guarded, j) for j in jobs]):
            exc = fut.exception()
            if exc is None:
                moved += fut.result()
            elif not isinstance(exc, TransferCancelled):
                errors.append(exc)
                if not isinstance(exc, PER_FILE_ERRORS):
                    cancel.set()  # credentials, permission, bucket, network: every other file would fail too
    except BaseException:
        interrupted = True
        cancel.set()
        raise
    finally:
        # on Ctrl-C don't wait: workers stop at their next read/write, part files stay resumable
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return moved, errors


def raise_first(errors: list[BaseException]) -> None:
    if not errors:
        return
    first = errors[0]
    others = [e for e in errors[1:] if str(e) != str(first)]  # the same credentials error twice is one problem
    if others and isinstance(first, CloudError):
        raise type(first)(f"{first} (and {len(others)} more failed)") from first
    raise first
