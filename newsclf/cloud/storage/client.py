"""The Cloud Storage client, the configured bucket, listings and the crc32c every transfer is checked by."""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from newsclf.cloud import layout
from newsclf.cloud.google.credentials import default_credentials
from newsclf.cloud.storage import retry
from newsclf.cloud.storage.errors import errors
from newsclf.errors import ConfigError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Bucket, Client

    from newsclf.config import Settings


def require_bucket(settings: Settings) -> str:
    """The configured bucket name, or a ConfigError naming how to set one."""
    if not settings.bucket:
        raise ConfigError("No bucket configured: set NEWSCLF_BUCKET or pass --bucket")
    name = layout.parse_bucket(settings.bucket)
    if name is None:
        raise ConfigError(
            f"NEWSCLF_BUCKET={settings.bucket!r} is not a bucket name: use a name like my-bucket or gs://my-bucket"
        )
    return name


def storage_client(settings: Settings | None = None) -> Client:
    """A storage.Client: anonymous against STORAGE_EMULATOR_HOST, else Application Default Credentials."""
    from google.cloud import storage

    project = settings.gcp_project if settings is not None else None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project=project or "newsclf-emulator", credentials=AnonymousCredentials())

    credentials, adc_project = default_credentials(storage.Client.SCOPE)
    return storage.Client(project=project or adc_project, credentials=credentials)


def bucket_of(client: Client, bucket: str | Bucket) -> Bucket:
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


def remote_object(blob: Blob) -> RemoteObject:
    return RemoteObject(blob.name, int(blob.size or 0), blob.crc32c, int(blob.generation or 0), blob.updated)


def list_objects(client: Client, bucket: str | Bucket, prefix: str) -> dict[str, RemoteObject]:
    """Every object under prefix, by name (one paged listing)."""
    b = bucket_of(client, bucket)
    with errors(b.name, "list"):
        listing = client.list_blobs(b, prefix=prefix, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S)
        return {bl.name: remote_object(bl) for bl in listing}
