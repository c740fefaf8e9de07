"""Shared fixtures: the CLI through its real entry point, and settings isolated per test."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

# A shell that starts pytest in the background (`cmd &` without job control) leaves SIGINT ignored, and
# an ignored SIGINT is inherited: Python then raises no KeyboardInterrupt, here or in the processes the
# Ctrl-C tests start. Catch it again (children get the default back at exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ISOT_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "isot-sample"


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict:
        return json.loads(self.stdout)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Each test runs in its own directory with no NEWSCLF_* variables and fresh settings."""
    from newsclf.config import get_settings

    for key in list(os.environ):
        if key.startswith("NEWSCLF_") or key in ("WANDB_API_KEY",):
            monkeypatch.delenv(key)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def cli(capsys):
    """Run `newsclf ARGS...` in-process through main(), the real error boundary."""
    from newsclf.cli import main
    from newsclf.config import get_settings

    def run(*args: str) -> CliResult:
        get_settings.cache_clear()
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def isot_sample() -> Path:
    if not (ISOT_SAMPLE / "Fake.csv").is_file():
        pytest.skip(f"ISOT sample not found at {ISOT_SAMPLE}")
    return ISOT_SAMPLE


BUCKET = "my-newsclf-bucket"  # as README writes it: a name containing "bucket" once broke every 404


@pytest.fixture
def fake_gcs(tmp_path_factory):
    """A real fake-gcs-server per test (~0.1 s), so every test can use the same bucket name as a user
    would; tests point STORAGE_EMULATOR_HOST at `.url`."""
    from tests.gcs_emulator import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs"))
    yield server
    server.stop()


@pytest.fixture
def gcs(fake_gcs, monkeypatch):
    """STORAGE_EMULATOR_HOST set, and an empty bucket `my-newsclf-bucket` named in NEWSCLF_BUCKET; yields a client."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    monkeypatch.setenv("NEWSCLF_GCP_PROJECT", "test-project")
    monkeypatch.setenv("NEWSCLF_BUCKET", BUCKET)
    client = storage.Client(project="test-project", credentials=AnonymousCredentials())
    client.create_bucket(BUCKET)
    client.test_bucket = BUCKET  # type: ignore[attr-defined]
    return client
