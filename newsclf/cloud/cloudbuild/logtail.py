"""A growing log object read as it grows: Cloud Build writes builds/logs/log-<id>.txt while it builds."""

from __future__ import annotations

from typing import Any


class LogTail:
    """Reads what was appended to a growing log object since the last read (ranged GETs), and
    hands back complete lines: 404 = not started yet, 416 = nothing new."""

    def __init__(self, bucket: Any, name: str) -> None:
        self.bucket = bucket
        self.name = name
        self.offset = 0
        self._partial = b""

    def read(self, final: bool = False) -> list[str]:
        from google.api_core import exceptions as gexc

        # a fresh Blob each time: a used one pins the generation it saw, and the log is rewritten
        blob = self.bucket.blob(self.name)
        try:
            data = blob.download_as_bytes(start=self.offset, checksum=None)
        except (gexc.NotFound, gexc.RequestRangeNotSatisfiable):
            data = b""
        except Exception as e:
            if not transient(e):
                from newsclf.cloud.storage.errors import translate

                raise (translate(e, self.bucket.name, "read", self.name) or e) from e
            data = b""  # a network blip: the next poll reads from the same offset
        self.offset += len(data)
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        if final and self._partial:
            chunks.append(self._partial)
            self._partial = b""
        return [c.decode("utf-8", errors="replace").rstrip("\r") for c in chunks]


def transient(e: BaseException) -> bool:
    """Errors worth waiting out while following a long build (the build itself goes on)."""
    import requests
    from google.api_core import exceptions as gexc

    return isinstance(
        e,
        (
            gexc.ServiceUnavailable,
            gexc.InternalServerError,
            gexc.TooManyRequests,
            gexc.DeadlineExceeded,
            gexc.RetryError,
            requests.exceptions.ConnectionError,
            requests.exceptions.Timeout,
        ),
    )
