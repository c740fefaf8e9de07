"""Downloads: one object (verified by crc32c, resumed from a part file), many in parallel, a prefix mirrored."""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from newsclf.cloud import layout
from newsclf.cloud.storage import retry
from newsclf.cloud.storage.client import (
    RemoteObject,
    bucket_of,
    crc32c_of_file,
    list_objects,
    remote_object,
)
from newsclf.cloud.storage.errors import IntegrityError, ObjectNotFound, errors
from newsclf.cloud.storage.transfer import (
    NO_PROGRESS,
    PART_SUFFIX,
    WORKERS,
    TransferProgress,
    TransferResult,
    Writer,
    execute,
    raise_first,
)

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client

log = logging.getLogger(__name__)


def _part_path(dest: Path, generation: int) -> Path:
    return dest.parent / f".{dest.name}.{generation}{PART_SUFFIX}"


def download_file(
    client: Client,
    bucket: str | Bucket,
    name: str,
    local_path: Path,
    *,
    obj: RemoteObject | None = None,
    progress: TransferProgress | None = None,
    cancel: threading.Event | None = None,
) -> int:
    """Download gs://bucket/name to local_path, verified by crc32c, renamed into place when complete.

    The bytes go to `.NAME.<generation>.newsclf-part` next to it first; an interrupted download is
    resumed from there next time (same generation only). obj: the listed object, to pin its
    generation (a newer upload in between is reported instead of mixed in). Returns bytes moved.
    """
    b = bucket_of(client, bucket)
    progress = progress or NO_PROGRESS
    cancel = cancel or threading.Event()
    if obj is None:
        with errors(b.name, "read", name):
            blob = b.get_blob(name, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S)
        if blob is None:
            raise ObjectNotFound(f"{layout.uri(b.name, name)} not found: check the name and the bucket")
        obj = remote_object(blob)
    dest = Path(local_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest, obj.generation)
    offset = part.stat().st_size if part.is_file() else 0
    if offset > obj.size:
        part.unlink()
        offset = 0
    progress.file_started(name, obj.size)
    if offset:
        progress.advance(name, offset)
    moved = 0
    while True:
        if offset < obj.size:
            blob = b.blob(obj.name, generation=obj.generation)  # no media link: the configured endpoint
            try:
                with open(part, "ab" if offset else "wb") as f:
                    writer = Writer(f, lambda n: progress.advance(name, n), cancel)
                    with errors(b, "download", name):
                        blob.download_to_file(
                            writer,
                            start=offset or None,
                            raw_download=True,  # the stored bytes, which the crc32c describes
                            checksum=None,  # verified below over the whole file, resumed or not
                            retry=retry.retry_policy(),
                            timeout=retry.REQUEST_TIMEOUT_S,
                        )
                    writer.flush_progress()
                    f.flush()
                    os.fsync(f.fileno())
            except BaseException:
                if part.is_file() and part.stat().st_size == 0:
                    part.unlink()  # nothing to resume from: leave no trace
                raise
            moved += part.stat().st_size - offset
        elif not part.exists():
            part.touch()  # empty object
        actual = crc32c_of_file(part)
        if obj.crc32c is None or actual == obj.crc32c:
            break
        part.unlink()
        if offset == 0:
            raise IntegrityError(
                f"{layout.uri(b.name, name)} failed its crc32c check (downloaded {actual}, the bucket says "
                f"{obj.crc32c}); {dest} was left as it was: re-run the pull, and if it fails again re-upload it"
            )
        log.debug("resumed download of %s did not verify; starting it over", name)
        offset = 0  # the kept part was bad (e.g. a disk problem): one fresh try
    os.replace(part, dest)
    for stale in glob.glob(glob.escape(str(dest.parent / f".{dest.name}.")) + f"*{PART_SUFFIX}"):
        Path(stale).unlink(missing_ok=True)  # parts of older generations
    progress.file_done(name)
    return moved


def same_file(path: Path, obj: RemoteObject) -> bool:
    return path.is_file() and path.stat().st_size == obj.size and crc32c_of_file(path) == obj.crc32c


def download_objects(
    client: Client,
    bucket: str | Bucket,
    objects: Sequence[tuple[RemoteObject, Path]],
    *,
    last: Collection[str] = (),
    progress: TransferProgress | None = None,
    workers: int = WORKERS,
) -> TransferResult:
    """Download (listed object, local path) pairs in parallel; skip files whose size and crc32c match.

    Objects named in `last` are downloaded after all the others succeeded.
    """
    started = time.monotonic()
    b = bucket_of(client, bucket)
    progress = progress or NO_PROGRESS
    result = TransferResult()
    plan = []
    for obj, dest in objects:
        if same_file(Path(dest), obj):
            result.files_skipped += 1
        else:
            plan.append((obj, Path(dest)))
    progress.plan(len(plan), sum(o.size for o, _ in plan), result.files_skipped)
    cancel = threading.Event()

    def job(obj: RemoteObject, dest: Path) -> int:
        return download_file(client, b, obj.name, dest, obj=obj, progress=progress, cancel=cancel)

    first = [lambda o=o, d=d: job(o, d) for o, d in plan if o.name not in last]
    then = [lambda o=o, d=d: job(o, d) for o, d in plan if o.name in last]
    moved, errors = execute(first, workers, cancel)
    if not errors:
        moved2, errors = execute(then, 1, cancel)
        moved += moved2
    raise_first(errors)
    result.files_transferred = len(plan)
    result.bytes = moved
    result.names = [o.name for o, _ in plan]
    result.seconds = time.monotonic() - started
    return result


def local_path(local_dir: Path, rel: str) -> Path | None:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        return None
    return Path(local_dir).joinpath(*parts)


def download_prefix(
    client: Client,
    bucket: str | Bucket,
    prefix: str,
    local_dir: Path,
    *,
    last: Collection[str] = (),
    exclude: Collection[str] = (),
    progress: TransferProgress | None = None,
    workers: int = WORKERS,
    listing: dict[str, RemoteObject] | None = None,
) -> TransferResult:
    """Mirror gs://bucket/prefix into local_dir. last/exclude: relative names (globs for exclude).

    listing: objects already listed (name -> RemoteObject), to save a request.
    """
    import fnmatch

    b = bucket_of(client, bucket)
    remote = listing if listing is not None else list_objects(client, b, prefix)
    pairs = []
    for name, obj in sorted(remote.items()):
        if not name.startswith(prefix) or name.endswith("/"):
            continue  # folder placeholders
        rel = name[len(prefix) :]
        if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
            continue
        dest = local_path(Path(local_dir), rel)
        if dest is None:
            log.warning("Skipping %s: its name is not a safe local path", layout.uri(b.name, name))
            continue
        pairs.append((obj, dest))
    return download_objects(client, b, pairs, last={prefix + n for n in last}, progress=progress, workers=workers)
