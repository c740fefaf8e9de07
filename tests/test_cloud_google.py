"""The shared Google layer (newsclf/cloud/google/): one project resolver, one "local endpoint" check, one
set of words for credentials, a disabled API and an error's first line, whichever service said it."""

from __future__ import annotations

import pytest
import requests

from newsclf.cloud.google.endpoints import is_local_endpoint
from newsclf.cloud.google.errors import short
from tests.compute_standin import last_line, standin  # noqa: F401  (fixture)

PROJECT = "test-project"


@pytest.mark.parametrize(
    "endpoint, local",
    [
        ("http://127.0.0.1:8123", True),
        ("localhost:8443", True),  # no scheme: the client adds https, and it is still this machine
        ("https://localhost/compute/v1", True),
        ("https://compute.googleapis.com", False),
        ("", False),
        (None, False),
    ],
)
def test_one_local_endpoint_check(endpoint, local):
    assert is_local_endpoint(endpoint) is local


def test_cloud_status_names_the_project_setting_it_reads(cli, standin, monkeypatch):
    # the Compute stand-in is local: no Application Default Credentials to ask, and `cloud status`
    # takes no --project, so the one setting is named
    monkeypatch.delenv("NEWSCLF_GCP_PROJECT", raising=False)
    r = cli("cloud", "status")
    assert (r.exit_code, last_line(r.stderr)) == (1, "Error: No Google Cloud project set: set NEWSCLF_GCP_PROJECT")
    assert standin.calls() == []  # nothing was asked of Compute Engine


def test_a_disabled_compute_api_is_named_as_every_other_api(cli, standin, monkeypatch):
    monkeypatch.setenv("NEWSCLF_GCP_PROJECT", PROJECT)
    standin.fail("GET", "/aggregated/instances", "service_disabled")
    r = cli("cloud", "status")
    assert r.exit_code == 1
    assert last_line(r.stderr) == (
        f"Error: The Compute Engine API is disabled in project {PROJECT}: enable it at "
        f"https://console.cloud.google.com/apis/library/compute.googleapis.com?project={PROJECT} and retry"
    )


def test_rejected_credentials_read_the_same_for_compute_and_storage():
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import RefreshError

    from newsclf.cloud.compute.errors import translated
    from newsclf.cloud.google.credentials import REJECTED
    from newsclf.cloud.storage.errors import translate
    from newsclf.errors import CloudError

    for exc in (RefreshError("invalid_grant: Token has been expired or revoked."), gexc.Unauthorized("401")):
        with pytest.raises(CloudError) as e:
            with translated("list VMs", PROJECT):
                raise exc
        assert str(e.value) == REJECTED == str(translate(exc, "my-newsclf-bucket"))


def test_short_is_the_first_line_without_the_rest_prefix():
    from google.api_core import exceptions as gexc

    e = gexc.Forbidden("Required 'compute.instances.list' permission\nmore detail")
    assert str(e).startswith("403 ")
    assert short(e) == "Required 'compute.instances.list' permission"
    assert short(e, request=True) == "403 Required 'compute.instances.list' permission"  # as Cloud Storage says it
    assert short(RuntimeError("x" * 300)) == "x" * 197 + "..."
    assert short(RuntimeError("x" * 300), None) == "x" * 300
    refused = requests.ConnectionError(
        "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded (Caused by NewConnectionError("
        "'<urllib3.connection.HTTPConnection object>: Failed to establish a new connection: [Errno 111] "
        "Connection refused'))"
    )
    assert short(refused) == "connection refused by 127.0.0.1:9"
    assert short(None) == "unknown"


def test_no_module_of_the_package_is_gitignored():
    """A package named like an ignored folder (`build/`) would be left out of git, and of the wheel,
    which hatch builds from what .gitignore leaves in."""
    from pathlib import Path

    import pathspec

    root = Path(__file__).resolve().parent.parent
    spec = pathspec.GitIgnoreSpec.from_lines((root / ".gitignore").read_text(encoding="utf-8").splitlines())
    modules = [p.relative_to(root).as_posix() for p in (root / "newsclf").rglob("*.py") if "__pycache__" not in p.parts]
    assert len(modules) > 40
    assert [m for m in modules if spec.match_file(m)] == []
