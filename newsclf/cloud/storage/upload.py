"""Uploads: one file (multipart, or resumable in chunks), many in parallel, a directory mirrored.

Every upload carries a generation precondition (0: only if absent), so it never replaces an object
someone else wrote in between; one that arrives corrupted is deleted and sent once more.
"""

from __future__ import annotations

import logging
import mimetypes
import os
import threading
import time
from collections.abc import Collection, Sequence
from functools import partial
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
from newsclf.cloud.storage.errors import ConflictError, IntegrityError, errors
from newsclf.cloud.storage.transfer import (
    LARGE_FILE,
    NO_PROGRESS,
    PART_SUFFIX,
    UPLOAD_CHUNK,
    WORKERS,
    Reader,
    TransferProgress,
    TransferResult,
    execute,
    raise_first,
)
from newsclf.errors import InputError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client

log = logging.getLogger(__name__)


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def upload_file(
    client: Client,
    bucket: str | Bucket,
    local_path: Path,
    name: str,
    *,
    if_generation_match: int | None = None,
    crc32c: str | None = None,
    progress: TransferProgress | None = None,
    cancel: threading.Event | None = None,
) -> RemoteObject:
    """Upload one file to gs://bucket/name, resumable in UPLOAD_CHUNK pieces when large, crc32c-checked.

    if_generation_match: 0 = only if absent; N = only if the object is still generation N.
    If the precondition fails because a retried request had in fact landed (same bytes), that is success.
    An upload that arrives corrupted is deleted and sent once more; a second corruption is an IntegrityError.
    """
    b = bucket_of(client, bucket)
    path = Path(local_path)
    size = path.stat().st_size
    crc = crc32c or crc32c_of_file(path)
    progress = progress or NO_PROGRESS
    reported = [0]  # bytes shown as sent, so that a second attempt does not count them again
    progress.file_started(name, size)
    with errors(b.name, "upload", name):
        try:
            blob = _upload_once(b, path, name, size, crc, if_generation_match, progress, cancel, reported)
        except _Corrupted:
            log.info("Cloud Storage: %s arrived corrupted and was deleted; sending it again", layout.uri(b.name, name))
            retry_match = None if if_generation_match is None else 0  # ours is deleted: the object is absent now
            try:
                blob = _upload_once(b, path, name, size, crc, retry_match, progress, cancel, reported)
            except _Corrupted:
                raise IntegrityError(
                    f"{layout.uri(b.name, name)} arrived corrupted twice (its crc32c differs from the local "
                    "file's) and was deleted from the bucket; the local file is unchanged: check the network "
                    "(a proxy rewriting uploads?) and re-run the push"
                ) from None
    progress.file_done(name)
    return remote_object(blob)


class _Corrupted(Exception):
    """What the bucket got differs from what we sent; the object was deleted."""


def _upload_once(
    b: Bucket,
    path: Path,
    name: str,
    size: int,
    crc: str,
    if_generation_match: int | None,
    progress: TransferProgress,
    cancel: threading.Event | None,
    reported: list[int],
) -> Blob:
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage.exceptions import DataCorruption

    blob = b.blob(name)
    if size > LARGE_FILE:
        blob.chunk_size = UPLOAD_CHUNK
    try:
        with open(path, "rb") as f:
            reader = Reader(f, lambda n: progress.advance(name, n), cancel or threading.Event(), high=reported[0])
            try:
                blob.upload_from_file(
                    reader,
                    size=size,
                    content_type=_content_type(name),
                    if_generation_match=if_generation_match,
                    checksum="crc32c",  # multipart: GCS verifies; resumable: verified after the last chunk
                    crc32c_checksum_value=crc if size > LARGE_FILE else None,
                    retry=retry.retry_policy(),
                    timeout=retry.REQUEST_TIMEOUT_S,
                )
            finally:
                reported[0] = reader.high
    except DataCorruption:  # a resumable upload: the client compared the final crc32c (and tried to delete)
        delete_if_not(b, name, crc)
        raise _Corrupted() from None
    except PreconditionFailed:
        current = b.get_blob(name, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S)
        if current is None or current.size != size or current.crc32c != crc:
            if if_generation_match == 0:
                raise ConflictError(
                    f"{layout.uri(b.name, name)} already exists with different content: it is never "
                    "overwritten; push under a new name (for a run: train a new run)"
                ) from None
            raise ConflictError(
                f"{layout.uri(b.name, name)} was changed by someone else during the push: "
                "re-run the push to compare again"
            ) from None
        return current  # a retried request had already landed
    if blob.crc32c is not None and blob.crc32c != crc:
        # a multipart upload to a server that did not check the crc32c we sent (GCS does; an emulator
        # or a proxy may not) kept the corrupted bytes
        delete_if_not(b, name, crc, generation=blob.generation)
        raise _Corrupted()
    return blob


def delete_if_not(bucket: Bucket, name: str, crc: str, generation: int | None = None) -> None:
    """Delete gs://bucket/name unless it holds the bytes with this crc32c (only that generation, when given)."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        if generation is None:
            current = bucket.get_blob(name, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S)
            if current is None or current.crc32c == crc:
                return
            generation = current.generation
        bucket.blob(name).delete(
            if_generation_match=generation, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S
        )
    except (NotFound, PreconditionFailed):
        pass  # gone already, or someone else wrote it meanwhile: theirs to keep


def upload_files(
    client: Client,
    bucket: str | Bucket,
    files: Sequence[tuple[Path, str]],
    *,
    create_only: bool = False,
    last: Collection[str] = (),
    progress: TransferProgress | None = None,
    workers: int = WORKERS,
    prefix: str | None = None,
) -> TransferResult:
    """Upload (local file, object name) pairs in parallel; skip objects whose size and crc32c already match.

    create_only: an existing object with different content is an error (nothing is uploaded);
    otherwise an upload replaces only the generation seen when planning. Names in `last` go after
    all others succeeded (completeness markers such as metrics.json, manifest.json). prefix: where
    to list what is already there (default: the longest folder common to the names).
    """
    started = time.monotonic()
    b = bucket_of(client, bucket)
    progress = progress or NO_PROGRESS
    if prefix is None:
        common = os.path.commonprefix([n for _, n in files])
        prefix = common[: common.rfind("/") + 1]
    remote = list_objects(client, b, prefix) if files or prefix else {}  # also proves the bucket is there

    result = TransferResult()
    plan: list[tuple[Path, str, int, str | None, int]] = []
    conflicts = []
    for path, name in files:
        size = path.stat().st_size
        seen = remote.get(name)
        crc = None
        if seen is not None and seen.size == size:
            crc = crc32c_of_file(path)
            if crc == seen.crc32c:
                result.files_skipped += 1
                continue
        if seen is not None and create_only:
            conflicts.append(name)
            continue
        plan.append((path, name, size, crc, seen.generation if seen is not None else 0))
    if conflicts:
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        raise ConflictError(
            f"{layout.uri(b.name, conflicts[0])}{more} already exists with different content: objects under "
            f"{layout.uri(b.name, prefix)} are never overwritten; push under a new name (for a run: train a new run)"
        )
    progress.plan(len(plan), sum(p[2] for p in plan), result.files_skipped)

    cancel = threading.Event()

    def job(item: tuple[Path, str, int, str | None, int]) -> int:
        path, name, size, crc, generation = item
        upload_file(client, b, path, name, if_generation_match=generation, crc32c=crc, progress=progress, cancel=cancel)
        return size

    first = [p for p in plan if p[1] not in last]
    then = [p for p in plan if p[1] in last]
    moved, errors = execute([partial(job, p) for p in first], workers, cancel)
    if not errors:
        moved2, errors = execute([partial(job, p) for p in then], 1, cancel)
        moved += moved2
    raise_first(errors)
    result.files_transferred = len(plan)
    result.bytes = moved
    result.names = [p[1] for p in plan]
    result.seconds = time.monotonic() - started
    return result


def local_files(local_dir: Path, exclude: Collection[str] = ()) -> list[tuple[Path, str]]:
    """(path, relative posix path) of the files under local_dir, sorted; unfinished downloads left out."""
    import fnmatch

    out = []
    for root, dirs, files in os.walk(local_dir):
        dirs.sort()
        for fname in sorted(files):
            if fname.endswith(PART_SUFFIX):
                continue
            path = Path(root) / fname
            rel = path.relative_to(local_dir).as_posix()
            if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
                continue
            if path.is_file():
                out.append((path, rel))
    return out


def upload_dir(
    client: Client,
    bucket: str | Bucket,
    local_dir: Path,
    prefix: str,
    *,
    create_only: bool = False,
    exclude: Collection[str] = (),
    last: Collection[str] = (),
    progress: TransferProgress | None = None,
    workers: int = WORKERS,
) -> TransferResult:
    """Mirror local_dir to gs://bucket/prefix (prefix ends with /). exclude/last: relative paths (globs for exclude)."""
    local_dir = Path(local_dir)
    if not local_dir.is_dir():
        raise InputError(f"{local_dir}/ is not a directory: pass an existing one")
    files = [(path, prefix + rel) for path, rel in local_files(local_dir, exclude)]
    return upload_files(
        client,
        bucket,
        files,
        create_only=create_only,
        last={prefix + n for n in last},
        progress=progress,
        workers=workers,
        prefix=prefix,
    )
