"""End to end, no cloud: `newsclf cloud run` → the Compute stand-in → the real startup script in a
sandbox → `docker run` (a shim) → the real `newsclf job` against fake-gcs-server → `models pull` → predict."""

from __future__ import annotations

import json

import pytest

from tests.compute_standin import sandbox, standin  # noqa: F401  (fixtures)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)

pytestmark = pytest.mark.slow

VM = "newsclf-train"
IMAGE = "europe-west1-docker.pkg.dev/test-project/newsclf/newsclf-train:latest"
POLL = ("--poll-interval", "0.2")


def _has_job_command() -> bool:
    import typer

    from newsclf.cli import app

    return "job" in getattr(typer.main.get_command(app), "commands", {})


@pytest.fixture
def bucket_with_data(standin, tiny_data):
    """The tiny prepared dataset in gs://BUCKET/data/processed/, where `newsclf job` reads it."""
    if not _has_job_command():
        pytest.skip("`newsclf job` does not exist yet")
    bucket = standin.gcs.bucket(standin.gcs.test_bucket)
    for path in sorted(tiny_data.iterdir()):
        bucket.blob(f"data/processed/{path.name}").upload_from_filename(str(path))
    return bucket


def train_options(model_dir, epochs: int = 2) -> list[str]:
    return ["--model", str(model_dir), "--epochs", str(epochs), "--batch-size", "8", "--lr", "3e-3",
            "--max-length", "64", "--warmup-ratio", "0"]  # fmt: skip


def status_of(bucket, run_id: str) -> dict:
    return json.loads(bucket.blob(f"runs/{run_id}/status.json").download_as_bytes())


def test_cloud_run_trains_pulls_and_predicts(cli, standin, sandbox, bucket_with_data, tiny_model):
    # the first zone has no room: the VM lands in the next one
    standin.fail("POST", "zones/europe-west1-b/instances$", "capacity", via="operation")
    r = cli("--json", "cloud", "run", *POLL, "--", *train_options(tiny_model))
    assert r.exit_code == 0, r.stderr + sandbox_output(sandbox)
    data = r.json["data"]
    run_id = data["run_id"]
    assert data["state"] == "succeeded" and data["zone"] == "europe-west1-c"
    assert data["vm_status"] == "TERMINATED"
    assert data["model_uri"] == f"gs://{bucket_with_data.name}/runs/{run_id}/model/"
    assert set(data["metrics"]["test"]) >= {"accuracy", "macro_f1"}
    assert "No room in europe-west1-b (ZONE_RESOURCE_POOL_EXHAUSTED); trying the next zone" in r.stderr
    assert "newsclf-job[" not in r.stderr and "newsclf-vm[" not in r.stderr  # prefixes stripped
    assert standin.instance(VM, "europe-west1-c").status == "TERMINATED"
    assert status_of(bucket_with_data, run_id)["state"] == "succeeded"
    logs = list(standin.gcs.list_blobs(bucket_with_data.name, prefix=f"runs/{run_id}/logs/"))
    assert len(logs) == 1

    r = cli("models", "pull", "latest")
    assert r.exit_code == 0, r.stderr
    r = cli("--json", "predict", "officials said the minister reported the agreement")
    assert r.exit_code == 0, r.stderr
    [prediction] = r.json["data"]["predictions"]
    assert prediction["label"] in ("fake", "real")
    assert r.json["data"]["run_id"] == run_id

    # a second run on the stopped VM, detached, then re-attached with `cloud logs --follow`
    r = cli("--json", "cloud", "run", "--detach", *POLL, "--", *train_options(tiny_model, epochs=1))
    assert r.exit_code == 0, r.stderr
    second = r.json["data"]["run_id"]
    verbs = [c.path.rsplit("/", 1)[-1] for c in standin.calls("POST", f"/instances/{VM}/")]
    assert verbs == ["setMetadata", "setLabels", "start"]
    r = cli("cloud", "logs", "--follow", *POLL)
    assert r.exit_code == 0, r.stderr + sandbox_output(sandbox)
    assert f"Run {second} succeeded (VM {VM}: TERMINATED)" in r.stdout
    assert status_of(bucket_with_data, second)["state"] == "succeeded"

    r = cli("cloud", "logs", second)  # finished: from the bucket
    assert r.exit_code == 0 and r.stdout.strip()
    r = cli("cloud", "stop")
    assert r.exit_code == 0
    assert r.stdout.strip() == f"VM {VM} (europe-west1-c) is already stopped"


def test_failing_job_still_stops_the_vm(cli, standin, sandbox, bucket_with_data, tmp_path):
    r = cli("--json", "cloud", "run", *POLL, "--", "--model", str(tmp_path / "no-such-model"), "--epochs", "1")
    assert r.exit_code != 0
    run_id = r.json["data"]["run_id"]
    assert r.json["data"]["state"] == "failed"
    assert r.json["data"]["vm_status"] == "TERMINATED"
    assert status_of(bucket_with_data, run_id)["state"] == "failed"
    assert standin.instance(VM).status == "TERMINATED"
    assert (sandbox.dir / "shutdown-calls").read_text() == "-h now\n"


def sandbox_output(box) -> str:
    return "\n".join(p.read_text() for p in sorted(box.dir.glob("startup-*.out")))
