"""Cloud Storage errors that retrying cannot fix: no bucket, a missing one, no permission, the API off,
no or malformed credentials. Each is one `Error:` line naming the fix, and never quotes a secret."""

from __future__ import annotations

import json

import pytest

from tests.faulty_proxy import Fault, gcs_error
from tests.test_storage import one_error_line, one_error_line_after_info, proxy  # noqa: F401  (fixture: proxy)


@pytest.mark.parametrize(
    "args", [["data", "pull"], ["data", "push", "--raw", "."], ["models", "list"], ["models", "pull"]]
)
def test_no_bucket_configured(cli, args):
    r = cli(*args)
    assert r.exit_code == 1
    assert one_error_line(r) == "Error: No bucket configured: set NEWSCLF_BUCKET or pass --bucket"


@pytest.mark.parametrize("args", [["data", "pull"], ["data", "push", "--raw", "."], ["models", "list"]])
def test_missing_bucket(cli, gcs, args):
    r = cli(*args, "--bucket", "gs://no-such-bucket-here/")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        "Error: Bucket gs://no-such-bucket-here not found: create it with "
        "`gcloud storage buckets create gs://no-such-bucket-here` or set NEWSCLF_BUCKET (or --bucket) to an existing bucket"
    )


def test_permission_denied(cli, gcs, proxy):
    message = (
        "alice@example.com does not have storage.objects.list access to the Google Cloud Storage bucket. "
        "Permission 'storage.objects.list' denied on resource (or it may not exist)."
    )
    proxy(Fault("status", methods=None, status=403, body=gcs_error(403, message, "forbidden")))
    r = cli("models", "list")
    assert r.exit_code == 1
    b = gcs.test_bucket
    assert one_error_line(r) == (
        f"Error: Permission denied on gs://{b} (alice@example.com lacks storage.objects.list): grant "
        f"roles/storage.objectAdmin on the bucket, e.g. `gcloud storage buckets add-iam-policy-binding gs://{b} "
        "--member=user:alice@example.com --role=roles/storage.objectAdmin`"
    )


def test_api_disabled(cli, gcs, proxy):
    message = (
        "Cloud Storage JSON API has not been used in project 123456789 before or it is disabled. Enable it by "
        "visiting https://console.developers.google.com/apis/api/storage-api.googleapis.com/overview?project="
        "123456789 then retry."
    )
    p = proxy(
        Fault("status", methods=None, status=403, body=gcs_error(403, message, "accessNotConfigured", "usageLimits"))
    )
    r = cli("data", "pull")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        "Error: The Cloud Storage API is disabled in project 123456789: enable it with "
        "`gcloud services enable storage.googleapis.com --project 123456789`, wait a minute and retry"
    )
    targets = [s.target for s in p.requests()]
    assert len(targets) == len(set(targets)), targets  # a permanent error is not retried


def test_no_credentials(cli, monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login to fall back on
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    monkeypatch.setenv("NEWSCLF_BUCKET", "some-bucket")
    r = cli("models", "list")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: No Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS points at {tmp_path / 'missing-key.json'}, "
        "which does not exist; fix the path or unset it and run `gcloud auth application-default login`"
    )


SECRET = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-not-a-real-key"  # must never be printed
KEY_FIX = (
    "download a new key (`gcloud iam service-accounts keys create KEY.json --iam-account=ACCOUNT`) "
    "or unset it and run `gcloud auth application-default login`"
)
GOOD_FIELDS = {"client_email": "trainer@p.iam.gserviceaccount.com", "token_uri": "https://oauth2.googleapis.com/token"}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"type": "service_account", "private_key": "' + SECRET, "is not valid JSON (truncated, or not a key file)"),
        ("", "is empty"),
        (json.dumps([SECRET]), "is not a JSON object"),
        (
            json.dumps({"type": SECRET}),
            'has no known credential "type" (a service-account key has "type": "service_account")',
        ),
        (json.dumps({"type": "service_account", "private_key": SECRET}), "lacks client_email, token_uri"),
        (
            json.dumps(
                {
                    "type": "service_account",
                    "private_key": f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n-----END PRIVATE KEY-----\n",
                    **GOOD_FIELDS,
                }
            ),
            "cannot be loaded (its private key or another field is damaged)",
        ),
    ],
    ids=["truncated", "empty", "list", "type", "fields", "private-key"],
)
@pytest.mark.parametrize("command", [["models", "list"], ["cloud", "status"], ["cloud", "build"]])
def test_malformed_key_file_is_named_never_quoted(cli, monkeypatch, tmp_path, content, problem, command):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no gcloud login to fall back on
    key = tmp_path / "key.json"
    key.write_text(content)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    monkeypatch.setenv("NEWSCLF_BUCKET", "my-newsclf-bucket")
    r = cli("--json", *command)
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: GOOGLE_APPLICATION_CREDENTIALS points at {key}, which is not a usable key file: it {problem}; {KEY_FIX}"
    )
    assert SECRET not in r.stdout + r.stderr and "not-a-real-key" not in r.stdout + r.stderr
