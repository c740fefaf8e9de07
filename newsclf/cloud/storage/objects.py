"""Small JSON objects in the bucket (status.json, run.json, sweep records): read, and written create-only or in place."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.cloud.storage import retry
from newsclf.cloud.storage.client import RemoteObject, crc32c_of_bytes, remote_object
from newsclf.cloud.storage.errors import (
    ConflictError,
    IntegrityError,
    ObjectNotFound,
    errors,
)
from newsclf.cloud.storage.upload import delete_if_not
from newsclf.errors import CloudError

if TYPE_CHECKING:
    from google.cloud.storage import Bucket


def read_json(bucket: Bucket, name: str) -> Any | None:
    """The parsed JSON object gs://bucket/name, or None if there is no such object."""
    blob = bucket.blob(name)
    try:
        with errors(bucket, "read", name):  # a Bucket: a 404 is checked against a missing bucket
            data = blob.download_as_bytes(
                checksum="crc32c", retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S
            )
    except ObjectNotFound:
        return None
    try:
        return json.loads(data)
    except ValueError as e:
        raise CloudError(f"{layout.uri(bucket.name, name)} is not valid JSON ({e}): delete or rewrite it") from None


def write_json(bucket: Bucket, name: str, data: Any, *, if_generation_match: int | None = None) -> RemoteObject:
    """Write data as JSON to gs://bucket/name (if_generation_match=0: only if it does not exist yet)."""
    from google.api_core.exceptions import PreconditionFailed

    payload = (json.dumps(data, indent=2, default=str) + "\n").encode()
    blob = bucket.blob(name)
    with errors(bucket.name, "upload", name):
        try:
            blob.upload_from_string(
                payload,
                content_type="application/json",
                if_generation_match=if_generation_match,
                checksum="crc32c",
                retry=retry.retry_policy(),
                timeout=retry.REQUEST_TIMEOUT_S,
            )
        except PreconditionFailed:
            current = bucket.get_blob(name, retry=retry.retry_policy(), timeout=retry.REQUEST_TIMEOUT_S)
            if current is not None and current.crc32c == crc32c_of_bytes(payload):
                return remote_object(current)  # a retried request had already landed
            raise ConflictError(
                f"{layout.uri(bucket.name, name)} already exists or changed meanwhile: it was not overwritten"
            ) from None
        crc = crc32c_of_bytes(payload)
        if blob.crc32c is not None and blob.crc32c != crc:  # see _upload_once
            delete_if_not(bucket, name, crc, generation=blob.generation)
            raise IntegrityError(
                f"{layout.uri(bucket.name, name)} arrived corrupted (its crc32c differs from what was sent) and "
                "was deleted from the bucket: re-run the command"
            )
    return remote_object(blob)
