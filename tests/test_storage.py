"""Cloud Storage mirroring through the real client against a real fake-gcs-server (and a fault-injecting proxy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.compute_standin import standin  # noqa: F401  (fixture)
from tests.faulty_proxy import Fault, FaultyProxy

BIG = 50 * 1024 * 1024 + 12345  # >= 50 MB, and not a multiple of the upload chunk
REPO = Path(__file__).resolve().parents[1]


# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def big_source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("big") / "big.bin"
    path.write_bytes(os.urandom(BIG))
    return path


def small_tree(root: Path, n: int, seed: int = 0) -> dict[str, bytes]:
    """n files of 0..3000 random bytes in nested folders; returns relative path -> bytes."""
    import random

    rnd = random.Random(seed)
    files = {}
    for i in range(n):
        rel = f"part{i % 7}/sub{i % 3}/file-{i:04d}.txt"
        files[rel] = rnd.randbytes(0 if i == 0 else rnd.randint(1, 3000))
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(files[rel])
    return files


def processed_dataset(root: Path) -> dict[str, bytes]:
    root.mkdir(parents=True, exist_ok=True)
    files = {f"{s}.parquet": os.urandom(2000 + i) for i, s in enumerate(("train", "validation", "test"))}
    files["manifest.json"] = json.dumps({"rows": 3}).encode()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def same_file(a: Path, b: Path) -> bool:
    import filecmp

    return a.stat().st_size == b.stat().st_size and filecmp.cmp(a, b, shallow=False)


def parts(root: Path) -> list[Path]:
    return sorted(root.rglob("*.newsclf-part"))


def one_error_line_after_info(r) -> str:
    """The last stderr line, which must be the only `Error:` line."""
    lines = r.stderr.strip().splitlines()
    assert [x for x in lines if x.startswith("Error: ")] == lines[-1:], r.stderr
    return lines[-1]


def one_error_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


@pytest.fixture
def proxy(fake_gcs, monkeypatch):
    """A FaultyProxy in front of the emulator, with STORAGE_EMULATOR_HOST pointing at it."""
    started = []

    def make(*faults: Fault, **kwargs) -> FaultyProxy:
        p = FaultyProxy(fake_gcs.url, faults, **kwargs)
        p.start()
        started.append(p)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", p.url)
        return p

    yield make
    for p in started:
        p.stop()


def newsclf_subprocess(args: list[str], env_extra: dict[str, str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSCLF_")}
    env.update(env_extra)
    env["PYTHONPATH"] = str(REPO)
    return subprocess.Popen(
        [sys.executable, "-m", "newsclf", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# --- round trips --------------------------------------------------------------------------------


def test_data_push_pull_roundtrip_skips_unchanged(cli, gcs, tmp_path, big_source):
    raw = tmp_path / "data" / "raw"
    small = small_tree(raw, 300)
    os.link(big_source, raw / "big.bin")
    processed_dataset(tmp_path / "data" / "processed")
    expected_bytes = (
        sum(len(v) for v in small.values())
        + BIG
        + sum(p.stat().st_size for p in (tmp_path / "data" / "processed").iterdir())
    )

    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.stderr == ""  # no progress bar without a terminal, nothing else on stderr
    d = r.json["data"]
    assert (d["files_transferred"], d["files_skipped"], d["bytes"]) == (305, 0, expected_bytes)
    assert [t["destination"] for t in d["transfers"]] == [
        f"gs://{gcs.test_bucket}/data/raw/",
        f"gs://{gcs.test_bucket}/data/processed/",
    ]

    blobs = {b.name: b for b in gcs.list_blobs(gcs.test_bucket)}
    assert len(blobs) == 305 and blobs["data/raw/big.bin"].size == BIG
    processed = [b for n, b in blobs.items() if n.startswith("data/processed/")]
    assert max(processed, key=lambda b: b.generation).name == "data/processed/manifest.json"  # written last

    again = cli("data", "push", "--json").json["data"]
    assert (again["files_transferred"], again["files_skipped"], again["bytes"]) == (0, 305, 0)

    r = cli("data", "pull", "--dest", "copy", "--json")
    assert r.exit_code == 0, r.stderr
    d = r.json["data"]
    assert (d["files_transferred"], d["files_skipped"], d["bytes"]) == (305, 0, expected_bytes)
    assert same_file(tmp_path / "copy" / "raw" / "big.bin", big_source)
    assert {k: v for k, v in tree(tmp_path / "copy" / "raw").items() if k != "big.bin"} == small
    assert tree(tmp_path / "copy" / "processed") == tree(tmp_path / "data" / "processed")
    assert parts(tmp_path / "copy") == []

    again = cli("data", "pull", "--dest", "copy", "--json").json["data"]
    assert (again["files_transferred"], again["files_skipped"], again["bytes"]) == (0, 305, 0)

    # a local file damaged, and an object legitimately replaced by someone else: both come back
    (tmp_path / "copy" / "raw" / "part1" / "sub1" / "file-0001.txt").write_bytes(b"scribbled over")
    gcs.bucket(gcs.test_bucket).blob("data/raw/part2/sub2/file-0002.txt").upload_from_string(b"version 2")
    r = cli("data", "pull", "--raw", "--dest", "copy", "--json")
    assert r.json["data"]["files_transferred"] == 2 and r.json["data"]["files_skipped"] == 299
    assert (tmp_path / "copy/raw/part1/sub1/file-0001.txt").read_bytes() == small["part1/sub1/file-0001.txt"]
    assert (tmp_path / "copy/raw/part2/sub2/file-0002.txt").read_bytes() == b"version 2"

    human = cli("data", "pull", "--processed", "--dest", "copy")
    assert human.exit_code == 0
    assert (
        human.stdout
        == f"gs://{gcs.test_bucket}/data/processed/ -> copy/processed/: 0 transferred, 4 unchanged, 0 bytes in 0.0 s\n"
    )


def test_push_only_what_exists_and_explicit_dirs(cli, gcs, tmp_path):
    r = cli("data", "push")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        "Error: Nothing to push: no data/raw/ or data/processed/; run `newsclf data prepare` first "
        "or pass --raw/--processed DIR"
    )
    small_tree(tmp_path / "elsewhere", 5)
    r = cli("data", "push", "--raw", "elsewhere", "--json")
    assert r.exit_code == 0 and r.json["data"]["files_transferred"] == 5
    r = cli("data", "pull", "--processed")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: Nothing under gs://{gcs.test_bucket}/data/processed/: push data there first with `newsclf data push`"
    )
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.parquet").write_bytes(b"x")
    r = cli("data", "push", "--processed", "half")
    assert r.exit_code == 1 and "No prepared dataset in half/" in r.stderr


# --- integrity ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fs_gcs(tmp_path_factory):
    """A second emulator that keeps objects as plain files, so a test can corrupt one in the bucket."""
    from tests.gcs_emulator import FakeGCS

    server = FakeGCS(tmp_path_factory.mktemp("fake-gcs-fs"), backend="filesystem")
    yield server
    server.stop()


def test_object_corrupted_in_bucket_is_detected_and_local_file_kept(cli, fs_gcs, monkeypatch, tmp_path):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fs_gcs.url)
    monkeypatch.setenv("NEWSCLF_BUCKET", "corrupt-me")
    storage.Client(project="p", credentials=AnonymousCredentials()).create_bucket("corrupt-me")
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.bin").write_bytes(b"a" * 1000)
    (raw / "b.bin").write_bytes(b"b" * 1000)
    assert cli("data", "push").exit_code == 0
    (tmp_path / "copy" / "raw").mkdir(parents=True)
    (tmp_path / "copy" / "raw" / "a.bin").write_bytes(b"my old copy")

    # bit rot in the bucket: the bytes change under the crc32c recorded at upload
    stored = fs_gcs.root / "corrupt-me" / "data" / "raw" / "a.bin"
    stored.write_bytes(b"a" * 500 + b"A" + b"a" * 499)

    r = cli("data", "pull", "--dest", "copy")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        "Error: gs://corrupt-me/data/raw/a.bin failed its crc32c check (downloaded FOz6JA==, the bucket says "
        "nxnvag==); copy/raw/a.bin was left as it was: re-run the pull, and if it fails again re-upload it"
    )
    assert (tmp_path / "copy" / "raw" / "a.bin").read_bytes() == b"my old copy"
    assert (tmp_path / "copy" / "raw" / "b.bin").read_bytes() == b"b" * 1000  # the healthy file still arrived
    assert parts(tmp_path / "copy") == []


# --- retries and preconditions ------------------------------------------------------------------


def test_upload_never_overwrites_a_concurrent_change(gcs, tmp_path):
    from newsclf.cloud.storage.client import storage_client
    from newsclf.cloud.storage.errors import ConflictError
    from newsclf.cloud.storage.transfer import TransferProgress
    from newsclf.cloud.storage.upload import upload_dir

    local = tmp_path / "d"
    local.mkdir()
    (local / "a.txt").write_bytes(b"mine, new")
    bucket = gcs.bucket(gcs.test_bucket)
    bucket.blob("data/raw/a.txt").upload_from_string(b"old")

    class SomeoneElseWritesMeanwhile(TransferProgress):
        def plan(self, files, nbytes, skipped):  # after the listing, before the upload
            bucket.blob("data/raw/a.txt").upload_from_string(b"theirs")

    with pytest.raises(ConflictError) as e:
        upload_dir(storage_client(), gcs.test_bucket, local, "data/raw/", progress=SomeoneElseWritesMeanwhile())
    assert str(e.value) == (
        f"gs://{gcs.test_bucket}/data/raw/a.txt was changed by someone else during the push: "
        "re-run the push to compare again"
    )
    assert bucket.blob("data/raw/a.txt").download_as_bytes() == b"theirs"


def test_json_objects(gcs):
    from newsclf.cloud.storage.client import storage_client
    from newsclf.cloud.storage.errors import ConflictError
    from newsclf.cloud.storage.objects import read_json, write_json

    bucket = storage_client().bucket(gcs.test_bucket)
    assert read_json(bucket, "runs/x/status.json") is None
    write_json(bucket, "runs/x/status.json", {"state": "running"})
    write_json(bucket, "runs/x/status.json", {"state": "done"})  # status is meant to be overwritten
    assert read_json(bucket, "runs/x/status.json") == {"state": "done"}
    write_json(bucket, "runs/x/run.json", {"a": 1}, if_generation_match=0)
    write_json(bucket, "runs/x/run.json", {"a": 1}, if_generation_match=0)  # same content: fine
    with pytest.raises(ConflictError):
        write_json(bucket, "runs/x/run.json", {"a": 2}, if_generation_match=0)
    assert read_json(bucket, "runs/x/run.json") == {"a": 1}


# --- bucket names as users write them -----------------------------------------------------------
# The fixtures' bucket is `my-newsclf-bucket`: every 404's message quotes its URL, so it contains "bucket".


def test_a_missing_object_is_not_a_missing_bucket(gcs):
    from newsclf.cloud.storage.client import storage_client
    from newsclf.cloud.storage.download import download_file
    from newsclf.cloud.storage.errors import ObjectNotFound
    from newsclf.cloud.storage.objects import read_json
    from newsclf.errors import CloudError

    client = storage_client()
    assert read_json(client.bucket(gcs.test_bucket), "runs/X/status.json") is None
    with pytest.raises(ObjectNotFound):
        download_file(client, gcs.test_bucket, "runs/X/status.json", Path("status.json"))

    with pytest.raises(CloudError) as e:  # the bucket itself missing: asked, not guessed from the message
        read_json(client.bucket("my-other-bucket"), "runs/X/status.json")
    assert str(e.value) == (
        "Bucket gs://my-other-bucket not found: create it with `gcloud storage buckets create gs://my-other-bucket` "
        "or set NEWSCLF_BUCKET (or --bucket) to an existing bucket"
    )


VM, ZONE, POLL = "newsclf-train", "europe-west1-b", ("--poll-interval", "0.05")


def _status_reads(p: FaultyProxy, run_id: str) -> int:
    return sum(1 for s in p.requests("GET") if f"{run_id}%2Fstatus.json" in s.target and "alt=media" in s.target)


def test_cloud_run_waits_out_a_first_boot_without_status(cli, standin, proxy):
    """A VM pulls its image for minutes before status.json exists: each poll's 404 is "not yet"."""
    from newsclf.cloud.compute.follow import FOLLOW_MAX_FAILURES

    p = proxy()
    bucket = standin.gcs.bucket(standin.gcs.test_bucket)

    def on_start(server, inst):
        run_id = inst.metadata()["newsclf-run-id"]

        def job():
            deadline = time.monotonic() + 30
            while _status_reads(p, run_id) <= FOLLOW_MAX_FAILURES + 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            bucket.blob(f"runs/{run_id}/metrics.json").upload_from_string(json.dumps({"test": {"macro_f1": 0.9}}))
            bucket.blob(f"runs/{run_id}/status.json").upload_from_string(
                json.dumps({"state": "succeeded", "exit_code": 0})
            )
            server.shutdown(inst.zone, inst.name)

        threading.Thread(target=job, daemon=True).start()

    standin.on_start = on_start
    r = cli("--json", "cloud", "run", *POLL)
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["state"] == "succeeded"
    assert _status_reads(p, r.json["data"]["run_id"]) > FOLLOW_MAX_FAILURES + 2


def test_cloud_status_and_logs_of_a_run_without_status_yet(cli, standin):
    standin.on_start = lambda server, inst: None  # booted, still pulling the image
    r = cli("--json", "cloud", "run", "--detach")
    assert r.exit_code == 0, r.stderr
    run_id = r.json["data"]["run_id"]

    r = cli("--json", "cloud", "status")
    assert r.exit_code == 0 and r.stderr == ""
    assert [(v["run_id"], v["run_state"]) for v in r.json["data"]["vms"]] == [(run_id, None)]

    r = cli("--json", "cloud", "logs")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"] == {"run_id": run_id, "state": None, "source": "serial", "lines": []}


def test_cloud_run_that_loses_track_says_the_vm_runs_on(cli, standin, proxy):
    from newsclf.cloud.compute.follow import FOLLOW_MAX_FAILURES

    standin.on_start = lambda server, inst: None
    proxy(Fault("status", methods=("GET",), path="status.json", status=403))  # every poll of the run fails
    r = cli("cloud", "run", *POLL)
    assert r.exit_code == 1
    run_id = standin.instance(VM).metadata()["newsclf-run-id"]
    b = standin.gcs.test_bucket
    assert one_error_line_after_info(r) == (
        f"Error: Stopped following run {run_id} after {FOLLOW_MAX_FAILURES} failed polls (Permission denied on gs://{b}: grant "
        f"roles/storage.objectAdmin on the bucket, e.g. `gcloud storage buckets add-iam-policy-binding gs://{b} "
        f"--member=user:YOU@example.com --role=roles/storage.objectAdmin`); VM {VM} ({ZONE}, "
        f"last seen RUNNING) keeps running and billing: re-attach with `newsclf cloud logs {run_id} --follow` "
        "or stop it with `newsclf cloud stop`"
    )
    assert standin.instance(VM).status == "RUNNING"  # what the message says


# --- models -------------------------------------------------------------------------------------


def make_run(models: Path, run_id: str, *, f1: float, complete: bool = True, base: str = "tiny-bert") -> Path:
    run = models / run_id
    (run / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (run / "model.safetensors").write_bytes(os.urandom(4096))
    (run / "config.json").write_text(json.dumps({"id2label": {"0": "fake", "1": "real"}}))
    (run / "tokenizer.json").write_text('{"version": "1.0"}')
    (run / "trainer_state.json").write_text("{}")
    (run / "checkpoints" / "checkpoint-10" / "optimizer.pt").write_bytes(os.urandom(1000))
    created = f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}T{run_id[9:11]}:{run_id[11:13]}:{run_id[13:15]}+00:00"
    (run / "run_config.json").write_text(json.dumps({"run_id": run_id, "created_at": created, "base_model": base}))
    if complete:
        metrics = {
            "run_id": run_id,
            "test": {"accuracy": f1, "macro_f1": f1, "precision": f1, "recall": f1, "loss": 0.1},
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_models_push_list_pull_latest(cli, gcs, tmp_path):
    from newsclf import runs

    models = tmp_path / "models"
    old = make_run(models, "20260101-000000-aaaaaa", f1=0.91)
    new = make_run(models, "20260102-000000-bbbbbb", f1=0.97, base="other-bert")
    unfinished = make_run(models, "20260103-000000-cccccc", f1=0.0, complete=False)
    runs.update_latest(models, new.name)

    r = cli("models", "push", unfinished.name)
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: Run {unfinished.name} is incomplete (no metrics.json or model.safetensors): "
        "finish it with `newsclf train --resume` or push another run"
    )
    r = cli("models", "push", old.name, "--checkpoints", "--json")
    assert r.exit_code == 0, r.stderr
    assert (
        r.json["data"]["files_transferred"] == 7 and r.json["data"]["uri"] == f"gs://{gcs.test_bucket}/runs/{old.name}/"
    )
    r = cli("models", "push", "--json")  # latest
    assert r.exit_code == 0 and r.json["data"]["run_id"] == new.name and r.json["data"]["files_transferred"] == 6
    blobs = {b.name: b for b in gcs.list_blobs(gcs.test_bucket, prefix=f"runs/{new.name}/")}
    assert sorted(blobs) == [
        f"runs/{new.name}/{n}"
        for n in (
            "metrics.json",
            "model/config.json",
            "model/model.safetensors",
            "model/tokenizer.json",
            "model/trainer_state.json",
            "run.json",
        )
    ]
    assert max(blobs.values(), key=lambda b: b.generation).name.endswith("/metrics.json")  # written last

    again = cli("models", "push", "--json")
    assert again.exit_code == 0 and again.json["data"]["files_skipped"] == 6 and again.json["data"]["bytes"] == 0
    (new / "model.safetensors").write_bytes(os.urandom(4096))
    r = cli("models", "push")
    assert r.exit_code == 1
    assert one_error_line(r) == (
        f"Error: gs://{gcs.test_bucket}/runs/{new.name}/model/model.safetensors already exists with different "
        f"content: objects under gs://{gcs.test_bucket}/runs/{new.name}/ are never overwritten; push under a new "
        "name (for a run: train a new run)"
    )

    # a run still training in the cloud: listed as incomplete, never picked as latest
    from newsclf.cloud.storage.client import storage_client
    from newsclf.cloud.storage.objects import write_json

    write_json(
        storage_client().bucket(gcs.test_bucket),
        "runs/20260109-000000-dddddd/run.json",
        {"run_id": "20260109-000000-dddddd", "created_at": "2026-01-09T00:00:00+00:00", "base_model": "x"},
    )

    r = cli("models", "list", "--json")
    assert r.exit_code == 0, r.stderr
    listed = r.json["data"]["runs"]
    assert [(x["run_id"], x["complete"], x["test_f1"], x["base_model"]) for x in listed] == [
        ("20260109-000000-dddddd", False, None, "x"),
        (new.name, True, 0.97, "other-bert"),
        (old.name, True, 0.91, "tiny-bert"),
    ]
    model_files = ("model.safetensors", "config.json", "tokenizer.json", "trainer_state.json")
    assert listed[2]["model_bytes"] == sum((old / f).stat().st_size for f in model_files)
    human = cli("models", "list")
    assert new.name in human.stdout and "0.9700" in human.stdout and "incomplete" in human.stdout

    r = cli("models", "pull", "latest", "--dest", "pulled", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["run_id"] == new.name and r.json["data"]["latest"] is True
    got = tmp_path / "pulled" / new.name
    assert sorted(p.name for p in got.iterdir()) == sorted([*model_files, "run_config.json", "metrics.json"])
    for f in ("config.json", "tokenizer.json", "run_config.json", "metrics.json"):
        assert (got / f).read_bytes() == (new / f).read_bytes()
    assert runs.is_complete(got)
    assert runs.resolve_run(tmp_path / "pulled", "latest") == got.resolve()

    r = cli("models", "pull", old.name, "--dest", "pulled", "--checkpoints", "--json")
    assert r.exit_code == 0 and r.json["data"]["latest"] is False  # older than the current latest
    assert (tmp_path / "pulled" / old.name / "checkpoints" / "checkpoint-10" / "optimizer.pt").read_bytes() == (
        old / "checkpoints" / "checkpoint-10" / "optimizer.pt"
    ).read_bytes()
    assert os.readlink(tmp_path / "pulled" / "latest") == new.name

    again = cli("models", "pull", "--dest", "pulled", "--json")
    assert again.json["data"]["files_transferred"] == 0 and again.json["data"]["files_skipped"] == 6

    r = cli("models", "pull", "20260109-000000-dddddd", "--dest", "pulled")
    assert one_error_line(r) == (
        f"Error: Run 20260109-000000-dddddd in gs://{gcs.test_bucket} is incomplete (no metrics.json or model): "
        "it is still training or failed; pick a complete run from `newsclf models list`"
    )
