"""One writer per folder (a prepared dataset, a training run): an flock()ed lock file beside it.

The kernel drops an flock when the process holding it ends, however it ends (`kill -9` included),
so a crash never leaves a folder locked. The file says who holds it (pid, host, command) for the
other writer's error, and is deleted on release; a file left by a crash is harmless: the next
writer locks it again.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from newsclf.errors import InputError, NewsclfError

log = logging.getLogger(__name__)

# options whose values are masked wherever a command line is shown (the lock holder's, the VM's log; the
# same pattern is in cloud/startup.sh): a word of the name is key, token, secret or password (not --tokenizer)
SECRET_OPTION = re.compile(
    r"^--?(?:[a-z0-9]+[-_])*(?:api-?key|key|token|secret|passw(?:or)?d)(?:[-_][a-z0-9]+)*$", re.I
)
MASK = "****"


class Busy(NewsclfError):
    """Another process is writing the folder."""

    def __init__(self, message: str, holder: dict) -> None:
        super().__init__(message)
        self.holder = holder


def mask_argv(argv: list[str]) -> list[str]:
    """argv with the values of secret-looking options (`--api-key X`, `--token=X`) replaced by ****."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append(MASK)
            hide_next = False
            continue
        name, eq, _ = arg.partition("=")
        if SECRET_OPTION.match(name):
            if eq:
                out.append(f"{name}={MASK}")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out


def _command() -> str:
    prog = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python"
    if prog in ("__main__.py", "-m", "-c", ""):
        prog = "newsclf"
    return " ".join([prog, *mask_argv(sys.argv[1:])])


def lock_path(folder: Path) -> Path:
    """`.NAME.lock` beside the folder (not inside: datasets are replaced whole by a rename)."""
    folder = Path(os.path.abspath(folder))
    return Path(os.path.realpath(folder.parent)) / f".{folder.name}.lock"


def describe(holder: dict) -> str:
    """`pid 1234 on host-a since 17:50:02 UTC: newsclf data prepare --demo`, from what the lock file says."""
    if not holder.get("pid"):
        return "another process"
    text = f"pid {holder['pid']}"
    if holder.get("host") and holder["host"] != socket.gethostname():
        text += f" on {holder['host']}"
    if holder.get("started_at"):
        text += f" since {holder['started_at']}"
    if holder.get("command"):
        text += f": {holder['command']}"
    return text


def _read_holder(fd: int) -> dict:
    try:
        data = json.loads(os.pread(fd, 8192, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _acquire(path: Path, what: str, fix: str) -> int | None:
    """The fd holding the lock; None where the file system has no locks (a warning says so)."""
    try:
        import fcntl
    except ImportError:  # not a POSIX system
        return None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)  # OSError: the caller names the folder
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise Busy(f"{what} is being written by another process ({describe(holder)}): {fix}", holder) from None
        except OSError as e:  # e.g. a FUSE mount without locks
            os.close(fd)
            log.warning("Cannot lock %s (%s): make sure no other process writes %s meanwhile", path, e.strerror, what)
            return None
        # the previous holder deletes the file when it is done: a lock on a deleted file locks nothing
        try:
            st = os.stat(path)
            mine = os.fstat(fd)
            if (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": _command(),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
    return fd


def _release(path: Path, fd: int | None) -> None:
    if fd is None:
        return
    try:  # delete while still holding it, so that nobody locks a file that is about to go
        os.unlink(path)
    except OSError:
        pass
    os.close(fd)


@contextmanager
def hold(folder: Path, *, what: str, fix: str) -> Iterator[Path]:
    """Hold the folder's lock for the `with` block; raise Busy at once if another process holds it.

    `what` names the folder in the error (`Dataset folder data/processed`), `fix` says what to do.
    Yields the lock file's path. The folder's parent must exist; OSError if it cannot be written.
    """
    path = lock_path(folder)
    fd = _acquire(path, what, fix)
    try:
        yield path
    finally:
        _release(path, fd)


_held: dict[Path, int | None] = {}  # lock file -> fd, for locks held until the process exits


def hold_until_exit(folder: Path, *, what: str, fix: str) -> Path:
    """Hold the folder's lock until this process exits or calls release() (taking it again is a no-op).

    For a training run: the run belongs to this process from the moment it is chosen, and a run
    that fails keeps it until the process ends (an in-process retry may take it again).
    """
    path = lock_path(folder)
    if path not in _held:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # _acquire names the folder that cannot be written
        try:
            _held[path] = _acquire(path, what, fix)
        except OSError as e:
            raise InputError(
                f"Cannot write to {path.parent}/ ({e.strerror or e}): make it writable or choose another folder"
            ) from None
    return path


def held() -> list[Path]:
    """The folders this process holds until exit (hold_until_exit), not yet released."""
    return [path.parent / path.name[1:].removesuffix(".lock") for path in _held]


def release(folder: Path) -> None:
    """Release a lock taken with hold_until_exit() before the process exits (the run is finished)."""
    path = lock_path(folder)
    if path in _held:
        _release(path, _held.pop(path))


@atexit.register
def _release_all() -> None:
    for path, fd in list(_held.items()):
        _release(path, fd)
    _held.clear()
