"""A `newsclf` subprocess that pauses at a known point, so that tests set up races and signals by events.

It touches a `ready` file once it holds what it is about to be raced for (after the first split of
`data prepare` is written in its temporary folder, when `train` starts the Trainer, or in the
middle of a given training step) and waits for a `go` file: never a fixed sleep.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `newsclf ARGS...` in a subprocess that pauses at TEST_PAUSE_AT: prepare, train or step:N
PAUSED_CLI = """
import os, sys, time
from pathlib import Path

ready, go = Path(os.environ["TEST_READY"]), Path(os.environ["TEST_GO"])

def pause():
    ready.touch()
    while not go.exists():
        time.sleep(0.01)

if os.environ["TEST_PAUSE_AT"] == "prepare":
    import newsclf.data as data
    write = data._write_parquet
    def paused(rows, path):
        write(rows, path)
        pause()
    data._write_parquet = paused
elif os.environ["TEST_PAUSE_AT"] == "train":
    import transformers
    train = transformers.Trainer.train
    def paused(self, *args, **kwargs):
        pause()
        return train(self, *args, **kwargs)
    transformers.Trainer.train = paused
else:  # "step:N": in the middle of training step N + 1
    import transformers
    at = int(os.environ["TEST_PAUSE_AT"].split(":")[1])
    training_step = transformers.Trainer.training_step
    def paused(self, *args, **kwargs):
        if self.state.global_step == at and not ready.exists():
            pause()
        return training_step(self, *args, **kwargs)
    transformers.Trainer.training_step = paused

from newsclf.cli import main
sys.exit(main(sys.argv[1:]))
"""


class Paused:
    """A `newsclf` subprocess stopped at its pause point until go()."""

    def __init__(self, tmp_path: Path, at: str, *args: str) -> None:
        self.ready, self.go_file = tmp_path / f"ready-{at}", tmp_path / f"go-{at}"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TEST_READY": str(self.ready), "TEST_GO": str(self.go_file),
               "TEST_PAUSE_AT": at}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-c", PAUSED_CLI, *args], env=env, cwd=tmp_path,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"exited {self.proc.returncode} before its pause: {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, "never reached its pause point"
            time.sleep(0.01)

    def go(self, timeout: float = 300) -> tuple[int, str, str]:
        self.go_file.touch()
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


@pytest.fixture
def paused(tmp_path):
    started: list[Paused] = []

    def start(at: str, *args: str) -> Paused:
        p = Paused(tmp_path, at, *args)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
