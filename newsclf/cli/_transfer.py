"""Shared by `data push/pull` and `models push/pull/list`: the --bucket option, the client, transfer progress."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from newsclf.cli import _output

BUCKET_HELP = "Bucket name or gs:// URL (default: NEWSCLF_BUCKET)."


def bucket_option() -> Any:
    return typer.Option(None, "--bucket", help=BUCKET_HELP, show_default=False)


def connect(bucket: str | None) -> tuple[Any, str, Any]:
    """(settings, bucket name, storage client) with --bucket applied over the settings."""
    from newsclf.cloud.storage.client import require_bucket, storage_client
    from newsclf.config import get_settings

    settings = get_settings()
    if bucket:
        settings = settings.model_copy(update={"bucket": bucket})
    name = require_bucket(settings)
    return settings, name, storage_client(settings)


def human_bytes(n: int | None) -> str:
    from rich.filesize import decimal

    return "" if n is None else decimal(n)


def summary_line(label: str, r: dict) -> str:
    return (
        f"{label}: {r['files_transferred']} transferred, {r['files_skipped']} unchanged, "
        f"{human_bytes(r['bytes'])} in {r['seconds']:.1f} s"
    )


@contextmanager
def transfer_progress() -> Iterator[Callable[[str], Any]]:
    """Yields make(label) -> a storage.TransferProgress drawing on one rich display (TTY only).

    One bar per transfer (bytes, files done), plus a bar per large file while it moves.
    """
    from rich.progress import BarColumn, DownloadColumn, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from newsclf.cloud.storage.transfer import LARGE_FILE, TransferProgress

    class RichProgress(TransferProgress):
        def __init__(self, progress: Any, label: str) -> None:
            self.p, self.label = progress, label
            self.task: Any = None
            self.files = self.done = 0
            self.big: dict[str, Any] = {}
            self.lock = threading.Lock()

        def plan(self, files: int, nbytes: int, skipped: int) -> None:
            self.files = files
            self.task = self.p.add_task(self.label, total=nbytes or None, files=f"0/{files} files")

        def file_started(self, name: str, size: int) -> None:
            if size > LARGE_FILE:
                with self.lock:
                    self.big[name] = self.p.add_task(f"  {name.rsplit('/', 1)[-1]}", total=size, files="")

        def advance(self, name: str, nbytes: int) -> None:
            if self.task is not None:
                self.p.advance(self.task, nbytes)
            big = self.big.get(name)
            if big is not None:
                self.p.advance(big, nbytes)

        def file_done(self, name: str) -> None:
            with self.lock:
                self.done += 1
                big = self.big.pop(name, None)
            if big is not None:
                self.p.remove_task(big)
            if self.task is not None:
                self.p.update(self.task, files=f"{self.done}/{self.files} files")

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TextColumn("{task.fields[files]}"),
        TimeRemainingColumn(),
    )
    with _output.progress(*columns) as p:
        yield lambda label: RichProgress(p, label)
