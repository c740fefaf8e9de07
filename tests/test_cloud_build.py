"""`newsclf cloud build`: the real cloudbuild_v1 REST client against a local stand-in, the real
storage client against fake-gcs-server, and the deterministic source archive."""

from __future__ import annotations

import hashlib

import pytest

from newsclf.cloud.cloudbuild import logtail, submit
from tests import cloudbuild_standin as standin_mod
from tests.cloudbuild_standin import CloudBuildStandIn

PROJECT = "test-project"
IMAGE = f"europe-west1-docker.pkg.dev/{PROJECT}/newsclf/newsclf-train"

TREE = {
    "Dockerfile": "FROM python:3.11.15-slim-bookworm\n",
    ".dockerignore": "data\nmodels\n.env\n.git\n**/__pycache__\nDockerfile\n",
    ".gcloudignore": "# gitignore rules\nnotes/\n*.log\n!keep.log\n#!include:.gitignore\n",
    ".gitignore": "scratch.txt\n",
    "pyproject.toml": "[project]\nname = 'demo'\n",
    "uv.lock": "version = 1\n",
    "newsclf/__init__.py": "__version__ = '0'\n",
    "newsclf/cli/__init__.py": "",
    "newsclf/__pycache__/x.pyc": "junk",
    "docker/run.sh": "#!/bin/sh\nexec newsclf job\n",
    "data/raw/Fake.csv": "title,text\n",
    "models/run-1/model.safetensors": "weights",
    ".env": "WANDB_API_KEY=secret\n",
    ".git/HEAD": "ref: refs/heads/main\n",
    "notes/todo.md": "x",
    "debug.log": "x",
    "sub/deep.log": "x",
    "keep.log": "x",
    "scratch.txt": "x",
}
PACKED = [
    ".dockerignore",
    ".gcloudignore",
    ".gitignore",
    "Dockerfile",
    "docker/run.sh",
    "keep.log",
    "newsclf/__init__.py",
    "newsclf/cli/__init__.py",
    "pyproject.toml",
    "uv.lock",
]


def make_tree(root, tree=TREE):
    for rel, text in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if (root / "docker" / "run.sh").exists():
        (root / "docker" / "run.sh").chmod(0o755)
    return root


@pytest.fixture
def standin(fake_gcs):
    server = CloudBuildStandIn(fake_gcs.url, build_s=2.0)
    yield server
    server.stop()


@pytest.fixture
def project(tmp_path, gcs, standin, monkeypatch):
    """A small project in the current directory, the stand-in as the Cloud Build endpoint."""
    monkeypatch.setenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT", standin.url)
    monkeypatch.setattr(submit, "POLL_S", 0.1)  # the stand-in builds in ~2 s, not minutes
    make_tree(tmp_path)
    return tmp_path


def object_sha(gcs, name):
    return hashlib.sha256(gcs.bucket(gcs.test_bucket).blob(name).download_as_bytes()).hexdigest()


# --- success -------------------------------------------------------------------------------------


def test_build_streams_the_log_once_and_prints_image_and_digest(cli, project, gcs, standin):
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 0, r.stderr

    [body] = standin.create_bodies()
    obj = body["source"]["storageSource"]["object"]
    sha = obj.removeprefix("builds/").removesuffix(".tar.gz")
    assert body["source"]["storageSource"]["bucket"] == gcs.test_bucket
    assert object_sha(gcs, obj) == sha  # content-addressed
    # tagged with the source hash, the newsclf version of the tree (its newsclf/__init__.py) and latest
    assert body["steps"] == [
        {
            "name": "gcr.io/cloud-builders/docker",
            "args": ["build", "-t", f"{IMAGE}:{sha}", "-t", f"{IMAGE}:0", "-t", f"{IMAGE}:latest", "."],
        }
    ]
    assert body["images"] == [f"{IMAGE}:{sha}", f"{IMAGE}:0", f"{IMAGE}:latest"]
    assert body["tags"] == ["newsclf"]
    assert body["logsBucket"] == f"gs://{gcs.test_bucket}/builds/logs"
    assert body["timeout"] == "3600s"
    # a worker sized for a 7 GB image, not the default small one (enums go as numbers: E2_HIGHCPU_8 = 5)
    assert body["options"] == {"machineType": 5, "diskSizeGb": "200"}

    build_id = next(iter(standin.builds))
    written = standin.written_logs[build_id]
    err_lines = r.stderr.splitlines()
    # every line of the log, exactly once and in order, although it arrived in pieces cut mid-line
    assert [line for line in err_lines if line in set(written)] == written
    polls = [q for q in standin.requests if q["method"] == "GET" and q["path"].endswith(build_id)]
    assert len(polls) >= 5  # it followed the build while it ran

    digest = standin.builds[build_id]["results"]["images"][0]["digest"]
    out = r.stdout.splitlines()
    assert out[0] == f"Image   {IMAGE}:{sha}"
    assert out[1] == f"Tagged  {IMAGE}:0 (newsclf 0: what `cloud run` starts)"
    assert out[2] == f"Digest  {digest}"
    assert out[3].startswith("Built in ") and out[3].endswith(f"(Cloud Build {build_id})")
    assert f"Uploaded gs://{gcs.test_bucket}/{obj}" in r.stderr


def test_build_json_shape(cli, project, gcs, standin):
    r = cli("--json", "cloud", "build", "--source", ".")
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert doc["status"] == "ok" and doc["command"] == "cloud build"
    data = doc["data"]
    assert set(data) == {
        "build_id",
        "status",
        "image",
        "digest",
        "duration_s",
        "log_url",
        "source",
        "version",
        "version_image",
    }
    assert (data["version"], data["version_image"]) == ("0", f"{IMAGE}:0")
    build = standin.builds[data["build_id"]]
    sha = data["image"].rsplit(":", 1)[1]
    assert data["status"] == "SUCCESS"
    assert data["image"] == f"{IMAGE}:{sha}"
    assert data["digest"] == build["results"]["images"][0]["digest"]
    assert isinstance(data["duration_s"], float) and 0 < data["duration_s"] < 30
    assert data["log_url"] == build["logUrl"]
    assert data["source"] == f"gs://{gcs.test_bucket}/builds/{sha}.tar.gz"
    assert standin.written_logs[data["build_id"]][0] not in r.stderr  # --json: no log stream


def test_project_and_bucket_flags_override_settings(cli, project, gcs, standin, monkeypatch):
    monkeypatch.delenv("NEWSCLF_GCP_PROJECT")
    monkeypatch.delenv("NEWSCLF_BUCKET")
    monkeypatch.setenv("NEWSCLF_IMAGE", "us-docker.pkg.dev/other/repo/trainer:v3")
    r = cli(
        "--json",
        "cloud",
        "build",
        "--source",
        ".",
        "--no-wait",
        "--project",
        "flag-project",
        "--bucket",
        f"gs://{gcs.test_bucket}",
    )
    assert r.exit_code == 0, r.stderr
    assert standin.requests[0]["path"] == "/v1/projects/flag-project/builds"
    sha = r.json["data"]["image"].rsplit(":", 1)[1]
    assert standin.create_bodies()[0]["images"] == [
        f"us-docker.pkg.dev/other/repo/trainer:{sha}",
        "us-docker.pkg.dev/other/repo/trainer:0",
        "us-docker.pkg.dev/other/repo/trainer:latest",
    ]


# --- the stand-in holds the code to Google's contract ----------------------------------------------


def test_the_standin_answers_400_for_what_cloud_build_rejects(fake_gcs):
    import requests

    server = CloudBuildStandIn(fake_gcs.url)
    bad = {
        "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}],
        "options": {"machineType": "E2_HUGE", "diskSizeGb": "lots"},
        "imagez": [f"{IMAGE}:latest"],
    }
    r = requests.post(f"{server.url}/v1/projects/{PROJECT}/builds", json=bad, timeout=10)
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT"
    [violation] = server.violations
    assert violation.startswith(f"POST /v1/projects/{PROJECT}/builds: ")
    assert 'Unknown name "imagez"' in violation
    assert "options.machineType: invalid value 'E2_HUGE'" in violation
    assert "options.diskSizeGb: expected an int64, got 'lots'" in violation
    # and what the document says in prose: image names, disk size bounds, a logs bucket
    prose = {
        "steps": [{"args": ["build", "."]}], "images": [f"{IMAGE}:0.1.0+local"], "options": {"diskSizeGb": "5000"},
        "logsBucket": "gs://My_Bucket/builds/logs",
    }  # fmt: skip
    r = requests.post(f"{server.url}/v1/projects/{PROJECT}/builds", json=prose, timeout=10)
    assert r.status_code == 400
    assert server.violations[1].split(": ", 1)[1].split("; ") == [
        "steps[0].name: required", f"images: invalid image name '{IMAGE}:0.1.0+local'",
        "options.diskSizeGb: 5000 GB is more than the maximum, 4000 GB",
        "logsBucket: 'gs://My_Bucket/builds/logs' does not name a bucket",
    ]  # fmt: skip
    assert server.builds == {}  # nothing was started
    with pytest.raises(AssertionError, match="requests Cloud Build would reject with 400"):
        server.stop()  # a test that sent it unknowingly fails, whatever the CLI made of the 400


def test_a_local_version_becomes_a_valid_docker_tag(cli, project, standin):
    (project / "newsclf" / "__init__.py").write_text("__version__ = '1.0.0+dev.3'\n")  # PEP 440 local version
    r = cli("--json", "cloud", "build", "--source", ".", "--no-wait")
    assert r.exit_code == 0, r.stderr
    assert f"{IMAGE}:1.0.0-dev.3" in standin.create_bodies()[0]["images"]  # `+` is not allowed in a tag
    assert standin.violations == []


# --- --no-wait and the upload cache --------------------------------------------------------------


def test_no_wait_prints_the_build_id_and_returns(cli, project, standin):
    r = cli("cloud", "build", "--source", ".", "--no-wait")
    assert r.exit_code == 0, r.stderr
    [build_id] = standin.builds
    assert r.stdout == f"{build_id}\n"
    assert [q["method"] for q in standin.requests] == ["POST"]  # no polling
    assert f"Follow it at https://console.cloud.google.com/cloud-build/builds/{build_id}" in r.stderr


def test_upload_is_skipped_when_the_archive_is_there(cli, project, gcs, standin):
    first = cli("cloud", "build", "--source", ".", "--no-wait")
    assert first.exit_code == 0, first.stderr
    obj = standin.create_bodies()[0]["source"]["storageSource"]["object"]
    generation = gcs.bucket(gcs.test_bucket).get_blob(obj).generation
    assert f"Uploaded gs://{gcs.test_bucket}/{obj}" in first.stderr

    (project / "data" / "raw" / "Fake.csv").write_text("changed, but ignored\n")  # .dockerignore'd
    second = cli("cloud", "build", "--source", ".", "--no-wait")
    assert second.exit_code == 0, second.stderr
    assert f"Source already in gs://{gcs.test_bucket}/{obj}: upload skipped" in second.stderr
    assert standin.create_bodies()[1]["source"]["storageSource"]["object"] == obj
    assert gcs.bucket(gcs.test_bucket).get_blob(obj).generation == generation

    (project / "newsclf" / "__init__.py").write_text("__version__ = '1'\n")
    third = cli("cloud", "build", "--source", ".", "--no-wait")
    assert "Uploaded gs://" in third.stderr
    assert standin.create_bodies()[2]["source"]["storageSource"]["object"] != obj


# --- failures ------------------------------------------------------------------------------------


def test_failed_build_exits_nonzero_showing_the_log_tail(cli, project, standin):
    standin.outcome = "FAILURE"
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    [build_id] = standin.builds
    written = standin.written_logs[build_id]
    err = r.stderr.splitlines()
    assert [line for line in err if line in set(written)] == written
    assert err[-2] == written[-1]  # the failing step's last words right above the error
    assert err[-1] == (
        f"Error: Cloud Build {build_id} ended FAILURE (Build step failure: build step 0 "
        '"gcr.io/cloud-builders/docker" failed: step exited with non-zero status: 1): fix the error in the log '
        f"above and rerun `newsclf cloud build`; full log: {standin.builds[build_id]['logUrl']}"
    )
    assert r.stdout == ""


def test_failed_build_json_still_shows_the_tail(cli, project, standin):
    standin.outcome = "FAILURE"
    r = cli("--json", "cloud", "build", "--source", ".")
    assert r.exit_code == 1
    doc = r.json
    assert doc["status"] == "error" and doc["errors"][0].startswith("Cloud Build ")
    [build_id] = standin.builds
    tail = standin.written_logs[build_id][-submit.LOG_TAIL_LINES :]
    err = r.stderr.splitlines()
    assert err[: len(tail)] == tail


def test_push_to_a_missing_repository_names_the_fix(cli, project, standin):
    standin.outcome = "FAILURE"
    standin.log_lines = [
        "PUSH",
        f"Pushing {IMAGE}:latest",
        f"The push refers to repository [{IMAGE}]",
        'name unknown: Repository "newsclf" not found',
        "ERROR: failed to push because we ran out of retries.",
    ]
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: Artifact Registry repository 'newsclf' not found in europe-west1 (project {PROJECT}): create it "
        f"with `gcloud artifacts repositories create newsclf --repository-format=docker --location=europe-west1 "
        f"--project={PROJECT}`, or set NEWSCLF_ARTIFACT_REPO/NEWSCLF_REGION"
    )


@pytest.mark.parametrize(
    "answer, message",
    [
        (
            standin_mod.repository_missing(PROJECT),
            f"Artifact Registry repository 'newsclf' not found in europe-west1 (project {PROJECT}): create it with "
            f"`gcloud artifacts repositories create newsclf --repository-format=docker --location=europe-west1 "
            f"--project={PROJECT}`, or set NEWSCLF_ARTIFACT_REPO/NEWSCLF_REGION",
        ),
        (
            standin_mod.service_disabled(PROJECT),
            f"The Cloud Build API is disabled in project {PROJECT}: enable it with `gcloud services enable "
            f"cloudbuild.googleapis.com artifactregistry.googleapis.com --project={PROJECT}`",
        ),
        (
            standin_mod.permission_denied(PROJECT),
            f"No permission to run Cloud Build in project {PROJECT}: ask for roles/cloudbuild.builds.editor "
            f"(`gcloud projects add-iam-policy-binding {PROJECT} --member=user:YOU "
            "--role=roles/cloudbuild.builds.editor`)",
        ),
    ],
    ids=["repository-missing", "api-disabled", "permission-denied"],
)
def test_api_errors_are_one_line_with_the_fix(cli, project, standin, answer, message):
    standin.error = answer
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == f"Error: {message}"
    assert r.stdout == ""
    assert standin.builds == {}


def test_no_credentials(cli, project, monkeypatch, tmp_path):
    monkeypatch.delenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT")  # the real endpoint: Application Default Credentials
    missing = tmp_path / "nope.json"
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(missing))
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: No Google Cloud credentials: GOOGLE_APPLICATION_CREDENTIALS points at {missing}, which does not "
        "exist; fix the path or unset it and run `gcloud auth application-default login`"
    )


def test_missing_project_and_bucket_name_the_setting(cli, project, monkeypatch):
    monkeypatch.delenv("NEWSCLF_GCP_PROJECT")
    r = cli("cloud", "build", "--source", ".")
    assert (r.exit_code, r.stderr.strip()) == (
        1,
        "Error: No Google Cloud project set: set NEWSCLF_GCP_PROJECT or pass --project",
    )
    monkeypatch.setenv("NEWSCLF_GCP_PROJECT", PROJECT)
    monkeypatch.delenv("NEWSCLF_BUCKET")
    r = cli("cloud", "build", "--source", ".")
    assert (r.exit_code, r.stderr.strip()) == (1, "Error: No bucket configured: set NEWSCLF_BUCKET or pass --bucket")


def test_missing_bucket(cli, project, monkeypatch, standin):
    monkeypatch.setenv("NEWSCLF_BUCKET", "no-such-bucket-here")
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1].startswith("Error: Bucket gs://no-such-bucket-here not found: create it with ")
    assert standin.builds == {}


def test_unreachable_endpoint(cli, project, monkeypatch):
    from tests.gcs_emulator import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NEWSCLF_CLOUDBUILD_API_ENDPOINT", endpoint)
    r = cli("cloud", "build", "--source", ".", "--no-wait")
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        f"Error: Cannot reach Cloud Build at {endpoint}: check the network or NEWSCLF_CLOUDBUILD_API_ENDPOINT"
    )


def test_no_dockerfile(cli, project):
    (project / "Dockerfile").unlink()
    r = cli("cloud", "build", "--source", ".")
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: No Dockerfile in .: pass --source a newsclf project directory, or leave --source out to build "
        "the installed newsclf"
    )


def test_log_tail_reads_only_what_is_new(gcs):
    bucket = gcs.bucket(gcs.test_bucket)
    tail = logtail.LogTail(bucket, "builds/logs/log-x.txt")
    assert tail.read() == []  # 404: the build has not written its log yet
    bucket.blob("builds/logs/log-x.txt").upload_from_string(b"one\ntw")
    assert tail.read() == ["one"]  # a partial line waits for its end
    assert tail.read() == []  # 416: nothing new
    bucket.blob("builds/logs/log-x.txt").upload_from_string(b"one\ntwo\r\nthr")
    assert tail.read() == ["two"]
    assert tail.read(final=True) == ["thr"]  # the build is over: flush the unterminated last line
    assert tail.offset == len(b"one\ntwo\r\nthr")
