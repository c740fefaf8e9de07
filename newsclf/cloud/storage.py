"""Cloud Storage: the client, verified parallel mirroring of directories and runs, JSON objects, fixable errors.

Every download is checked against the object's crc32c and written to a hidden part file that is
renamed into place only when complete (a later pull resumes it). Every upload carries a generation
precondition, so it never replaces an object someone else wrote in between, and transient errors
are retried with backoff. google.cloud is imported lazily: importing this module stays cheap.
"""

from __future__ import annotations

import base64
import glob
import json
import logging
import mimetypes
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Collection, Iterator, Sequence

from newsclf.cloud import layout
from newsclf.errors import CloudError, ConfigError, InputError

if TYPE_CHECKING:
    from google.api_core.retry import Retry
    from google.cloud.storage import Blob, Bucket, Client

    from newsclf.config import Settings

log = logging.getLogger(__name__)

RETRY_DEADLINE_S = 300.0  # give up on 429/5xx/connection resets after this long
REQUEST_TIMEOUT_S = 60.0  # a request silent for this long (connecting, or between two reads) is retried
LARGE_FILE = 8 * 1024 * 1024  # above this: resumable upload in chunks (and its own progress bar)
UPLOAD_CHUNK = 8 * 1024 * 1024  # a multiple of 256 KiB, as GCS requires
WORKERS = 8  # files in flight at once
PART_SUFFIX = ".newsclf-part"  # `.NAME.<generation>.newsclf-part`: an unfinished download
_PROGRESS_STEP = 1024 * 1024  # report download progress every MiB, not every 8 KiB read


# --- errors -------------------------------------------------------------------------------------


class IntegrityError(CloudError):
    """A downloaded object did not match its crc32c; the local file was left untouched."""


class ConflictError(CloudError):
    """An upload would replace an object that differs from what we expected (precondition failed)."""


class ObjectNotFound(CloudError):
    """An object (not the bucket) is missing."""


class TransferCancelled(Exception):
    """Raised inside worker threads once the transfer is being abandoned (Ctrl-C or a fatal error)."""


# failures that concern one file: the other files of a transfer carry on
_PER_FILE_ERRORS = (IntegrityError, ConflictError, ObjectNotFound)


def retry_policy(deadline: float | None = None) -> "Retry":
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
    log.info("Cloud Storage: %s; retrying (for up to %g s)", _short(exc), RETRY_DEADLINE_S)


_KEY_TYPES = frozenset({
    "service_account", "authorized_user", "external_account", "external_account_authorized_user",
    "impersonated_service_account", "gdch_service_account",
})  # what google.auth.load_credentials_from_file accepts
_KEY_FIX = (
    "download a new key (`gcloud iam service-accounts keys create KEY.json --iam-account=ACCOUNT`) "
    "or unset it and run `gcloud auth application-default login`"
)
_DAMAGED = "cannot be loaded (its private key or another field is damaged)"


def _key_file_problem(path: Path) -> str | None:
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
        missing = [f for f in ("client_email", "private_key", "token_uri") if not isinstance(info.get(f), str) or not info[f]]
        if missing:
            return f"lacks {', '.join(missing)}"
        from google.auth.exceptions import GoogleAuthError
        from google.oauth2 import service_account

        try:  # what google.auth.default will do with it (callers that swallow its errors see this one)
            service_account.Credentials.from_service_account_info(info)
        except (GoogleAuthError, ValueError):
            return _DAMAGED
    return None


def _credentials_path() -> Path | None:
    path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    return Path(path) if path else None


def check_credentials_file() -> None:
    """A CloudError naming the path when GOOGLE_APPLICATION_CREDENTIALS points at a file that is not a
    usable key, before google.auth reads it (whose errors can quote the file, or be an AttributeError)."""
    path = _credentials_path()
    if path is None or not path.exists():
        return
    problem = _key_file_problem(path)
    if problem is not None:
        raise CloudError(_broken_key_message(path, problem))


def _broken_key_message(path: Path, problem: str) -> str:
    return f"GOOGLE_APPLICATION_CREDENTIALS points at {path}, which is not a usable key file: it {problem}; " + _KEY_FIX


def _no_credentials_message() -> str:
    path = _credentials_path()
    if path is not None and not path.exists():
        return (
            f"No Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS points at {path}, which does not "
            "exist; fix the path or unset it and run `gcloud auth application-default login`"
        )
    if path is not None:
        return _broken_key_message(path, _key_file_problem(path) or _DAMAGED)
    return (
        "No Google Cloud credentials found: run `gcloud auth application-default login` or set "
        "GOOGLE_APPLICATION_CREDENTIALS to a service-account key file"
    )


def default_credentials(scopes: Sequence[str]) -> tuple[Any, str | None]:
    """(credentials, project) from Application Default Credentials, or a CloudError naming the fix."""
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    check_credentials_file()
    try:
        return google.auth.default(scopes=list(scopes))
    except DefaultCredentialsError:
        raise CloudError(_no_credentials_message()) from None


def _bucket_missing_message(bucket: str) -> str:
    return (
        f"Bucket gs://{bucket} not found: create it with `gcloud storage buckets create gs://{bucket}` "
        "or set NEWSCLF_BUCKET (or --bucket) to an existing bucket"
    )


def _forbidden_message(exc: Any, bucket: str) -> str:
    text = str(getattr(exc, "message", "") or exc)
    reasons = {e.get("reason") for e in (getattr(exc, "errors", None) or []) if isinstance(e, dict)}
    reasons.add(getattr(exc, "reason", None))
    if reasons & {"accessNotConfigured", "SERVICE_DISABLED"} or "has not been used in project" in text:
        m = re.search(r"project (\d+|[a-z][a-z0-9-]+)", text)
        project = m.group(1) if m else "YOUR_PROJECT"
        return (
            f"The Cloud Storage API is disabled in project {project}: enable it with "
            f"`gcloud services enable storage.googleapis.com --project {project}`, wait a minute and retry"
        )
    if reasons & {"accountDisabled", "userProjectAccountProblem", "BILLING_DISABLED"} or "billing" in text.lower():
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


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown"
    if "Connection refused" in str(exc) or isinstance(exc, ConnectionRefusedError):  # requests buries it deep
        m = re.search(r"host='([^']+)', port=(\d+)", str(exc))
        return f"connection refused by {m.group(1)}:{m.group(2)}" if m else "connection refused"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


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


def _bucket_exists(bucket: "Bucket") -> bool | None:
    """Whether the bucket exists, by listing (storage.objects.list, which every role that reads objects
    has; storage.buckets.get often is not granted); None when that cannot tell."""
    from google.api_core import exceptions as api
    from google.auth.exceptions import GoogleAuthError

    try:
        found = bucket.client.list_blobs(bucket, max_results=1, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
        next(iter(found), None)
    except api.NotFound:
        return False
    except (api.GoogleAPICallError, api.RetryError, GoogleAuthError, OSError) as e:  # OSError: requests' errors
        log.debug("Could not check that gs://%s exists: %s", bucket.name, _short(e))
        return None
    return True


def translate(
    exc: BaseException, bucket: "str | Bucket", op: str = "list", name: str | None = None
) -> CloudError | None:
    """A one-line CloudError naming the fix for a Google client exception, or None if it is not ours to explain.

    A 404 is read from the request that got it: on the bucket, its listing or an upload into it, the
    bucket is missing; on an object, the object is, unless the bucket is (checked when `bucket` is a
    Bucket, else assumed present). op is what failed, for a 404 without its request: "list" or
    "upload" (the bucket), "download" or "read" (the object).
    """
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    if isinstance(exc, CloudError):
        return exc
    handle = None if isinstance(bucket, str) else bucket
    bucket = bucket if isinstance(bucket, str) else bucket.name
    if isinstance(exc, auth.DefaultCredentialsError):
        return CloudError(_no_credentials_message())
    if isinstance(exc, (auth.RefreshError, api.Unauthorized)):
        return CloudError(
            "Google Cloud rejected your credentials (expired, revoked or wrong account): run "
            "`gcloud auth application-default login` or fix GOOGLE_APPLICATION_CREDENTIALS"
        )
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
            f"Cloud Storage kept failing for {RETRY_DEADLINE_S:g} s of retries (last error: {_short(exc.cause)}): "
            "check your network or https://status.cloud.google.com and re-run; finished files are kept"
        )
    if isinstance(exc, (api.TooManyRequests, api.ServerError, requests.ConnectionError, ConnectionError)):
        return CloudError(
            f"Cloud Storage is unreachable or overloaded ({_short(exc)}): check your network and re-run; "
            "finished files are kept"
        )
    if isinstance(exc, api.BadRequest):
        return CloudError(f"Cloud Storage rejected the request for {layout.uri(bucket, name or '')} ({_short(exc)})")
    return None


@contextmanager
def _errors(bucket: "str | Bucket", op: str, name: str | None = None) -> Iterator[None]:
    try:
        yield
    except TransferCancelled:
        raise
    except Exception as e:
        err = translate(e, bucket, op, name)
        if err is None or err is e:
            raise
        raise err from e


# --- client, names ------------------------------------------------------------------------------


def require_bucket(settings: "Settings") -> str:
    """The configured bucket name, or a ConfigError naming how to set one."""
    if not settings.bucket:
        raise ConfigError("No bucket configured: set NEWSCLF_BUCKET or pass --bucket")
    name = layout.parse_bucket(settings.bucket)
    if name is None:
        raise ConfigError(
            f"NEWSCLF_BUCKET={settings.bucket!r} is not a bucket name: use a name like my-bucket or gs://my-bucket"
        )
    return name


def storage_client(settings: "Settings | None" = None) -> "Client":
    """A storage.Client: anonymous against STORAGE_EMULATOR_HOST, else Application Default Credentials."""
    from google.cloud import storage

    project = settings.gcp_project if settings is not None else None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "newsclf-emulator", credentials=AnonymousCredentials())

    credentials, adc_project = default_credentials(storage.Client.SCOPE)
    return storage.Client(project=project or adc_project, credentials=credentials)


def _bucket(client: "Client", bucket: "str | Bucket") -> "Bucket":
    return client.bucket(bucket) if isinstance(bucket, str) else bucket


def crc32c_of_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """The base64 big-endian crc32c GCS reports for an object with this file's bytes."""
    import google_crc32c

    c = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            c.update(block)
    return base64.b64encode(c.digest()).decode("ascii")


def crc32c_of_bytes(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


@dataclass(frozen=True)
class RemoteObject:
    name: str
    size: int
    crc32c: str | None
    generation: int
    updated: datetime | None = None


def _remote(blob: "Blob") -> RemoteObject:
    return RemoteObject(blob.name, int(blob.size or 0), blob.crc32c, int(blob.generation or 0), blob.updated)


def list_objects(client: "Client", bucket: "str | Bucket", prefix: str) -> dict[str, RemoteObject]:
    """Every object under prefix, by name (one paged listing)."""
    b = _bucket(client, bucket)
    with _errors(b.name, "list"):
        listing = client.list_blobs(b, prefix=prefix, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
        return {bl.name: _remote(bl) for bl in listing}


# --- progress -----------------------------------------------------------------------------------


class TransferProgress:
    """Hooks to watch a transfer; override what you need. Called from worker threads."""

    def plan(self, files: int, nbytes: int, skipped: int) -> None:
        """What will move: files and bytes to transfer, files already up to date."""

    def file_started(self, name: str, size: int) -> None: ...

    def advance(self, name: str, nbytes: int) -> None:
        """nbytes more of `name` moved (or were already there, for a resumed download)."""

    def file_done(self, name: str) -> None: ...


_NO_PROGRESS = TransferProgress()


class _Reader:
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


class _Writer:
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

    def __add__(self, other: "TransferResult") -> "TransferResult":
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


def _execute(jobs: Sequence[Callable[[], int]], workers: int, cancel: threading.Event) -> tuple[int, list[Exception]]:
    """Run jobs (each returns bytes moved) in a thread pool; per-file errors let the others finish."""
    moved, errors = 0, []
    if not jobs:
        return moved, errors

    def guarded(job: Callable[[], int]) -> int:
        if cancel.is_set():
            raise TransferCancelled()
        try:
            return job()
        except (*_PER_FILE_ERRORS, TransferCancelled):
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
                if not isinstance(exc, _PER_FILE_ERRORS):
                    cancel.set()  # credentials, permission, bucket, network: every other file would fail too
    except BaseException:
        interrupted = True
        cancel.set()
        raise
    finally:
        # on Ctrl-C don't wait: workers stop at their next read/write, part files stay resumable
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    return moved, errors


def _raise_first(errors: list[Exception]) -> None:
    if not errors:
        return
    first = errors[0]
    others = [e for e in errors[1:] if str(e) != str(first)]  # the same credentials error twice is one problem
    if others and isinstance(first, CloudError):
        raise type(first)(f"{first} (and {len(others)} more failed)") from first
    raise first


# --- uploads ------------------------------------------------------------------------------------


def _content_type(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


def upload_file(
    client: "Client",
    bucket: "str | Bucket",
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
    b = _bucket(client, bucket)
    path = Path(local_path)
    size = path.stat().st_size
    crc = crc32c or crc32c_of_file(path)
    progress = progress or _NO_PROGRESS
    reported = [0]  # bytes shown as sent, so that a second attempt does not count them again
    progress.file_started(name, size)
    with _errors(b.name, "upload", name):
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
    return _remote(blob)


class _Corrupted(Exception):
    """What the bucket got differs from what we sent; the object was deleted."""


def _upload_once(
    b: "Bucket",
    path: Path,
    name: str,
    size: int,
    crc: str,
    if_generation_match: int | None,
    progress: TransferProgress,
    cancel: threading.Event | None,
    reported: list[int],
) -> "Blob":
    from google.api_core.exceptions import PreconditionFailed
    from google.cloud.storage.exceptions import DataCorruption

    blob = b.blob(name)
    if size > LARGE_FILE:
        blob.chunk_size = UPLOAD_CHUNK
    try:
        with open(path, "rb") as f:
            reader = _Reader(f, lambda n: progress.advance(name, n), cancel or threading.Event(), high=reported[0])
            try:
                blob.upload_from_file(
                    reader,
                    size=size,
                    content_type=_content_type(name),
                    if_generation_match=if_generation_match,
                    checksum="crc32c",  # multipart: GCS verifies; resumable: verified after the last chunk
                    crc32c_checksum_value=crc if size > LARGE_FILE else None,
                    retry=retry_policy(),
                    timeout=REQUEST_TIMEOUT_S,
                )
            finally:
                reported[0] = reader.high
    except DataCorruption:  # a resumable upload: the client compared the final crc32c (and tried to delete)
        _delete_if_not(b, name, crc)
        raise _Corrupted() from None
    except PreconditionFailed:
        current = b.get_blob(name, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
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
        _delete_if_not(b, name, crc, generation=blob.generation)
        raise _Corrupted()
    return blob


def _delete_if_not(bucket: "Bucket", name: str, crc: str, generation: int | None = None) -> None:
    """Delete gs://bucket/name unless it holds the bytes with this crc32c (only that generation, when given)."""
    from google.api_core.exceptions import NotFound, PreconditionFailed

    try:
        if generation is None:
            current = bucket.get_blob(name, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
            if current is None or current.crc32c == crc:
                return
            generation = current.generation
        bucket.blob(name).delete(if_generation_match=generation, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
    except (NotFound, PreconditionFailed):
        pass  # gone already, or someone else wrote it meanwhile: theirs to keep


def upload_files(
    client: "Client",
    bucket: "str | Bucket",
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
    b = _bucket(client, bucket)
    progress = progress or _NO_PROGRESS
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
        upload_file(
            client, b, path, name, if_generation_match=generation, crc32c=crc, progress=progress, cancel=cancel
        )
        return size

    first = [p for p in plan if p[1] not in last]
    then = [p for p in plan if p[1] in last]
    moved, errors = _execute([lambda p=p: job(p) for p in first], workers, cancel)
    if not errors:
        moved2, errors = _execute([lambda p=p: job(p) for p in then], 1, cancel)
        moved += moved2
    _raise_first(errors)
    result.files_transferred = len(plan)
    result.bytes = moved
    result.names = [p[1] for p in plan]
    result.seconds = time.monotonic() - started
    return result


def _local_files(local_dir: Path, exclude: Collection[str] = ()) -> list[tuple[Path, str]]:
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
    client: "Client",
    bucket: "str | Bucket",
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
    files = [(path, prefix + rel) for path, rel in _local_files(local_dir, exclude)]
    return upload_files(
        client, bucket, files, create_only=create_only, last={prefix + n for n in last},
        progress=progress, workers=workers, prefix=prefix,
    )


# --- downloads ----------------------------------------------------------------------------------


def _part_path(dest: Path, generation: int) -> Path:
    return dest.parent / f".{dest.name}.{generation}{PART_SUFFIX}"


def download_file(
    client: "Client",
    bucket: "str | Bucket",
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
    b = _bucket(client, bucket)
    progress = progress or _NO_PROGRESS
    cancel = cancel or threading.Event()
    if obj is None:
        with _errors(b.name, "read", name):
            blob = b.get_blob(name, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
        if blob is None:
            raise ObjectNotFound(f"{layout.uri(b.name, name)} not found: check the name and the bucket")
        obj = _remote(blob)
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
                    writer = _Writer(f, lambda n: progress.advance(name, n), cancel)
                    with _errors(b, "download", name):
                        blob.download_to_file(
                            writer,
                            start=offset or None,
                            raw_download=True,  # the stored bytes, which the crc32c describes
                            checksum=None,  # verified below over the whole file, resumed or not
                            retry=retry_policy(),
                            timeout=REQUEST_TIMEOUT_S,
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


def _same_file(path: Path, obj: RemoteObject) -> bool:
    return path.is_file() and path.stat().st_size == obj.size and crc32c_of_file(path) == obj.crc32c


def download_objects(
    client: "Client",
    bucket: "str | Bucket",
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
    b = _bucket(client, bucket)
    progress = progress or _NO_PROGRESS
    result = TransferResult()
    plan = []
    for obj, dest in objects:
        if _same_file(Path(dest), obj):
            result.files_skipped += 1
        else:
            plan.append((obj, Path(dest)))
    progress.plan(len(plan), sum(o.size for o, _ in plan), result.files_skipped)
    cancel = threading.Event()

    def job(obj: RemoteObject, dest: Path) -> int:
        return download_file(client, b, obj.name, dest, obj=obj, progress=progress, cancel=cancel)

    first = [lambda o=o, d=d: job(o, d) for o, d in plan if o.name not in last]
    then = [lambda o=o, d=d: job(o, d) for o, d in plan if o.name in last]
    moved, errors = _execute(first, workers, cancel)
    if not errors:
        moved2, errors = _execute(then, 1, cancel)
        moved += moved2
    _raise_first(errors)
    result.files_transferred = len(plan)
    result.bytes = moved
    result.names = [o.name for o, _ in plan]
    result.seconds = time.monotonic() - started
    return result


def _local_path(local_dir: Path, rel: str) -> Path | None:
    parts = rel.split("/")
    if not rel or any(p in ("", ".", "..") for p in parts):
        return None
    return Path(local_dir).joinpath(*parts)


def download_prefix(
    client: "Client",
    bucket: "str | Bucket",
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

    b = _bucket(client, bucket)
    remote = listing if listing is not None else list_objects(client, b, prefix)
    pairs = []
    for name, obj in sorted(remote.items()):
        if not name.startswith(prefix) or name.endswith("/"):
            continue  # folder placeholders
        rel = name[len(prefix) :]
        if any(fnmatch.fnmatchcase(rel, pat) for pat in exclude):
            continue
        dest = _local_path(Path(local_dir), rel)
        if dest is None:
            log.warning("Skipping %s: its name is not a safe local path", layout.uri(b.name, name))
            continue
        pairs.append((obj, dest))
    return download_objects(
        client, b, pairs, last={prefix + n for n in last}, progress=progress, workers=workers
    )


# --- JSON objects -------------------------------------------------------------------------------


def read_json(bucket: "Bucket", name: str) -> Any | None:
    """The parsed JSON object gs://bucket/name, or None if there is no such object."""
    blob = bucket.blob(name)
    try:
        with _errors(bucket, "read", name):  # a Bucket: a 404 is checked against a missing bucket
            data = blob.download_as_bytes(checksum="crc32c", retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
    except ObjectNotFound:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise CloudError(f"{layout.uri(bucket.name, name)} is not valid JSON ({e}): delete or rewrite it") from None


def write_json(bucket: "Bucket", name: str, data: Any, *, if_generation_match: int | None = None) -> RemoteObject:
    """Write data as JSON to gs://bucket/name (if_generation_match=0: only if it does not exist yet)."""
    from google.api_core.exceptions import PreconditionFailed

    payload = (json.dumps(data, indent=2, default=str) + "\n").encode()
    blob = bucket.blob(name)
    with _errors(bucket.name, "upload", name):
        try:
            blob.upload_from_string(
                payload,
                content_type="application/json",
                if_generation_match=if_generation_match,
                checksum="crc32c",
                retry=retry_policy(),
                timeout=REQUEST_TIMEOUT_S,
            )
        except PreconditionFailed:
            current = bucket.get_blob(name, retry=retry_policy(), timeout=REQUEST_TIMEOUT_S)
            if current is not None and current.crc32c == crc32c_of_bytes(payload):
                return _remote(current)  # a retried request had already landed
            raise ConflictError(
                f"{layout.uri(bucket.name, name)} already exists or changed meanwhile: it was not overwritten"
            ) from None
        crc = crc32c_of_bytes(payload)
        if blob.crc32c is not None and blob.crc32c != crc:  # see _upload_once
            _delete_if_not(bucket, name, crc, generation=blob.generation)
            raise IntegrityError(
                f"{layout.uri(bucket.name, name)} arrived corrupted (its crc32c differs from what was sent) and "
                "was deleted from the bucket: re-run the command"
            )
    return _remote(blob)


# --- training runs ------------------------------------------------------------------------------


@dataclass
class RemoteRun:
    run_id: str
    complete: bool  # metrics.json and model/model.safetensors are there
    created_at: str | None
    base_model: str | None
    test_f1: float | None
    model_bytes: int
    config: dict | None = None
    metrics: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "complete": self.complete,
            "created_at": self.created_at,
            "base_model": self.base_model,
            "test_f1": self.test_f1,
            "model_bytes": self.model_bytes,
        }


def list_runs(client: "Client", bucket: "str | Bucket", *, workers: int = WORKERS) -> list[RemoteRun]:
    """The runs under runs/, newest first, with run.json and metrics.json read."""
    from newsclf.runs import MODEL_WEIGHTS

    b = _bucket(client, bucket)
    objects = list_objects(client, b, layout.RUNS_PREFIX)
    by_run: dict[str, list[RemoteObject]] = {}
    for name, obj in objects.items():
        run_id = layout.run_id_of(name)
        if run_id is not None:
            by_run.setdefault(run_id, []).append(obj)

    def describe(run_id: str) -> RemoteRun:
        lay = layout.RunLayout(run_id)
        names = {o.name for o in by_run[run_id]}
        config = read_json(b, lay.config) if lay.config in names else None
        metrics = read_json(b, lay.metrics) if lay.metrics in names else None
        created = (config or {}).get("created_at")
        if not created:
            times = [o.updated for o in by_run[run_id] if o.updated is not None]
            created = min(times).isoformat() if times else None
        test = (metrics or {}).get("test") or {}
        f1 = test.get("macro_f1")
        return RemoteRun(
            run_id=run_id,
            complete=metrics is not None and f"{lay.model}{MODEL_WEIGHTS}" in names,
            created_at=created,
            base_model=(config or {}).get("base_model"),
            test_f1=float(f1) if isinstance(f1, (int, float)) else None,
            model_bytes=sum(o.size for o in by_run[run_id] if o.name.startswith(lay.model)),
            config=config,
            metrics=metrics,
        )

    ids = sorted(by_run)
    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
        runs = list(pool.map(describe, ids))
    return sorted(runs, key=lambda r: (r.created_at or "", r.run_id), reverse=True)


def resolve_remote_run(runs: Sequence[RemoteRun], ref: str, bucket: str) -> RemoteRun:
    """The run `ref` names (`latest` = the newest complete one), or an error naming what exists."""
    if ref == "latest":
        for run in runs:
            if run.complete:
                return run
        raise CloudError(
            f"No complete run in {layout.uri(bucket, layout.RUNS_PREFIX)}: train one with `newsclf cloud run` "
            "or push a local one with `newsclf models push`"
        )
    for run in runs:
        if run.run_id == ref:
            if not run.complete:
                raise CloudError(
                    f"Run {ref} in gs://{bucket} is incomplete (no metrics.json or model): it is still "
                    "training or failed; pick a complete run from `newsclf models list`"
                )
            return run
    raise CloudError(f"No run '{ref}' in {layout.uri(bucket, layout.RUNS_PREFIX)}: see `newsclf models list`")


@dataclass
class PulledRun:
    run_id: str
    path: Path
    latest: bool  # models/latest now points at it
    transfer: TransferResult


def pull_run(
    client: "Client",
    bucket: "str | Bucket",
    ref: str,
    models_dir: Path,
    *,
    checkpoints: bool = False,
    progress: TransferProgress | None = None,
) -> PulledRun:
    """Recreate models/<run-id>/ from runs/<run-id>/: model files at the top, run_config.json, metrics.json last.

    models/latest is pointed at the run when ref is `latest` or the run is newer than the current one.
    """
    from newsclf import runs as local_runs

    b = _bucket(client, bucket)
    runs = list_runs(client, b)
    run = resolve_remote_run(runs, ref, b.name)
    lay = layout.RunLayout(run.run_id)
    run_dir = Path(models_dir) / run.run_id
    objects = list_objects(client, b, lay.prefix)
    pairs: list[tuple[RemoteObject, Path]] = []
    for name, obj in sorted(objects.items()):
        if name.startswith(lay.model):
            rel, base = name[len(lay.model) :], run_dir
        elif checkpoints and name.startswith(lay.checkpoints):
            rel, base = name[len(lay.checkpoints) :], run_dir / local_runs.CHECKPOINTS
        else:
            continue
        dest = _local_path(base, rel)
        if dest is not None and not name.endswith("/"):
            pairs.append((obj, dest))
    if lay.config in objects:
        pairs.append((objects[lay.config], run_dir / local_runs.RUN_CONFIG))
    pairs.append((objects[lay.metrics], run_dir / local_runs.COMPLETE_MARKER))
    # the local completeness marker goes first and comes back last, so a half-updated run never looks complete
    marker = run_dir / local_runs.COMPLETE_MARKER
    if marker.exists() and not all(_same_file(d, o) for o, d in pairs):
        marker.unlink()
    transfer = download_objects(client, b, pairs, last={lay.metrics}, progress=progress)
    try:
        local_runs.check_run(run_dir)  # what arrived is the run training wrote, or it is not used
    except InputError:
        marker.unlink(missing_ok=True)
        raise

    link = Path(models_dir) / local_runs.LATEST
    current = os.readlink(link) if link.is_symlink() else None
    newer = current is None or not (Path(models_dir) / current).is_dir() or run.run_id >= Path(current).name
    if ref == "latest" or newer:
        local_runs.update_latest(Path(models_dir), run.run_id)
    latest = link.is_symlink() and Path(os.readlink(link)).name == run.run_id
    return PulledRun(run.run_id, run_dir, latest, transfer)


def check_pushable(run_dir: Path) -> str:
    """The run id of a local run directory that is complete enough to push, else an InputError."""
    from newsclf import runs as local_runs

    run_dir = Path(run_dir)
    run_id = run_dir.name
    if not layout.is_valid_run_id(run_id):
        raise InputError(f"{run_dir} is not named like a run id: rename the directory (e.g. 20260101-120000-abc123)")
    if not local_runs.is_complete(run_dir):
        raise InputError(
            f"Run {run_id} is incomplete (no {local_runs.COMPLETE_MARKER} or {local_runs.MODEL_WEIGHTS}): "
            "finish it with `newsclf train --resume` or push another run"
        )
    if not (run_dir / local_runs.RUN_CONFIG).is_file():
        raise InputError(f"{run_dir} has no {local_runs.RUN_CONFIG}: it is not a newsclf training run")
    local_runs.check_run(run_dir)  # every file there, as training wrote it
    return run_id


def push_run(
    client: "Client",
    bucket: "str | Bucket",
    run_dir: Path,
    *,
    checkpoints: bool = False,
    progress: TransferProgress | None = None,
) -> tuple[str, TransferResult]:
    """Upload a complete local run to runs/<run-id>/ (create-only; metrics.json last). Returns (run id, result)."""
    from newsclf import runs as local_runs

    run_dir = Path(run_dir)
    run_id = check_pushable(run_dir)
    lay = layout.RunLayout(run_id)
    files: list[tuple[Path, str]] = []
    for path, rel in _local_files(run_dir):
        top = rel.split("/", 1)[0]
        if rel == local_runs.RUN_CONFIG:
            files.append((path, lay.config))
        elif rel == local_runs.COMPLETE_MARKER:
            continue
        elif top == local_runs.CHECKPOINTS:
            if checkpoints:
                files.append((path, lay.checkpoints + rel.split("/", 1)[1]))
        elif top == layout.RUN_LOGS_DIR and "/" in rel:
            files.append((path, lay.logs + rel.split("/", 1)[1]))
        else:
            files.append((path, lay.model + rel))
    files.append((run_dir / local_runs.COMPLETE_MARKER, lay.metrics))
    result = upload_files(
        client, bucket, files, create_only=True, last={lay.metrics}, progress=progress, prefix=lay.prefix
    )
    return run_id, result
