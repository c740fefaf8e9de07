"""Rendering for people (rich, stderr for logs) and for scripts (one versioned JSON document)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console

JSON_VERSION = "1"


@dataclass
class OutputState:
    json: bool = False
    quiet: bool = False
    debug: bool = False
    command: str = ""
    emitted: bool = False
    terminated: bool = False  # SIGTERM arrived (newsclf.cli._on_sigterm): an interruption exits 143, not 130
    warnings: list[str] = field(default_factory=list)


state = OutputState()


def reset(**kwargs: Any) -> None:
    global state
    state = OutputState(**kwargs)


def stdout() -> Console:
    # built per call so that redirected/captured sys.stdout (tests, pipes) is honoured
    return Console(file=sys.stdout, soft_wrap=True)


def stderr() -> Console:
    return Console(file=sys.stderr, soft_wrap=True)


def info(message: str) -> None:
    """A log line for people: stderr, hidden by --quiet and --json."""
    if not (state.quiet or state.json):
        stderr().print(message, highlight=False)


def warn(message: str) -> None:
    """A warning: always on stderr (also with --json, where it is repeated in the document)."""
    state.warnings.append(message)
    if not state.quiet:
        stderr().print(f"[yellow]Warning:[/yellow] {message}", highlight=False)


def envelope(status: str, exit_code: int, data: Any = None, errors: list[str] | None = None) -> dict:
    if exit_code == 130 and state.terminated:  # commands that report their own interruption say 130
        exit_code = 143
    return {
        "newsclf_json_version": JSON_VERSION,
        "command": state.command,
        "status": status,
        "exit_code": exit_code,
        "data": data,
        "errors": errors or [],
        "warnings": state.warnings,
    }


def _write_json(doc: dict) -> None:
    if state.emitted:
        return
    state.emitted = True
    from newsclf.runs import json_safe

    # NaN/Infinity are not JSON (jq and JSON.parse reject them): null instead, and never a bare NaN
    sys.stdout.write(json.dumps(json_safe(doc), indent=2, default=_json_default, allow_nan=False) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    from newsclf.runs import json_safe

    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return json_safe(value.tolist())
    return str(value)


def emit(
    data: Any,
    render: Callable[[Console], None] | None = None,
    *,
    exit_code: int = 0,
    errors: list[str] | None = None,
) -> None:
    """The command's result: a JSON document with --json, else `render(console)` on stdout.

    A failing command that still has a result passes exit_code and errors, then calls emit_error()
    for the `Error:` line (the document is not written twice).
    """
    if state.json:
        _write_json(envelope("ok" if exit_code == 0 else "error", exit_code, data, errors))
    elif render is not None:
        render(stdout())
        state.emitted = True


def emit_error(message: str, exit_code: int) -> None:
    """The failure: `Error: ...` on stderr, and the JSON document on stdout with --json."""
    sys.stderr.write(f"Error: {message}\n")
    sys.stderr.flush()
    if state.json:
        _write_json(envelope("error", exit_code, None, [message]))


def finish(exit_code: int) -> None:
    """With --json, guarantee exactly one document even for commands that had nothing to say."""
    if state.json and not state.emitted:
        _write_json(envelope("ok" if exit_code == 0 else "error", exit_code, None))


def show_progress() -> bool:
    """Live progress bars only for a person at a terminal."""
    return not (state.json or state.quiet) and sys.stderr.isatty()


@contextmanager
def progress(*columns: Any, transient: bool = False) -> Iterator[Any]:
    """A rich Progress on stderr, or a disabled one when nobody is watching."""
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cols = columns or (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*cols, console=stderr(), transient=transient, disable=not show_progress()) as p:
        yield p


class _Handler(logging.Handler):
    """Library code logs; the CLI shows warnings as `Warning:` lines and info as log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            warn(message)
        elif state.debug or record.levelno >= logging.INFO:
            info(message)


def route_logging() -> None:
    logger = logging.getLogger("newsclf")
    logger.handlers = [h for h in logger.handlers if not isinstance(h, _Handler)] + [_Handler()]
    logger.setLevel(logging.DEBUG if state.debug else logging.INFO)
    logger.propagate = False
