"""Transfers under network and server faults, injected by tests/faulty_proxy.py in front of fake-gcs-server.

Each fault is either retried until the transfer completes byte-identical, or fails with one `Error:`
line, leaving nothing partial: no local file under its real name that is not whole (an unfinished
download is a hidden `.NAME.<generation>.newsclf-part` that the next pull resumes), no object in the
bucket that differs from its source, and no completeness marker (manifest.json, metrics.json) over
an incomplete set. Retry deadlines and request timeouts are shortened here (newsclf/cloud/storage/retry.py's
RETRY_DEADLINE_S and REQUEST_TIMEOUT_S) so that the tests stay fast.

| fault                                     | where                                | outcome                                          | test                                                  |
|-------------------------------------------|--------------------------------------|--------------------------------------------------|-------------------------------------------------------|
| 429, 500, 502, 503, 504                   | listing, multipart upload, resumable | retried with backoff; completes, nothing twice   | test_throttling_and_server_errors_are_retried,        |
|                                           | chunk, download                      |                                                  | test_transient_faults_are_retried_and_nothing_is_lost |
| 503 on every request                      | anywhere                             | gives up after RETRY_DEADLINE_S, one line        | test_persistent_outage_gives_up_after_the_deadline    |
| stalled response (no answer at all)       | listing, multipart upload, resumable | read timeout (REQUEST_TIMEOUT_S), retried;       | test_stalled_responses_time_out_and_are_retried       |
|                                           | chunk, download                      | completes                                        |                                                       |
| stalled body (half sent, then silence)    | download                             | read timeout, resumed from the byte reached      | test_stalled_responses_time_out_and_are_retried       |
| reset before the request is read          | uploads, download                    | retried; completes                               | test_transient_faults_are_retried_and_nothing_is_lost,|
|                                           |                                      |                                                  | test_resets_partway_through_transfers_are_retried     |
| reset partway through an upload body      | multipart upload, resumable chunk    | retried; completes, nothing twice                | test_resets_partway_through_transfers_are_retried     |
| answer lost after the upload was applied  | create-only upload                   | the retry's 412 is recognised as our own upload  | test_lost_response_of_create_only_upload_is_not_a_... |
| truncated download (reset midway)         | download body                        | resumed with a Range request; completes          | test_transient_faults_are_retried_and_nothing_is_lost,|
|                                           |                                      |                                                  | test_resets_partway_through_transfers_are_retried     |
| corrupted download body                   | download                             | crc32c fails, local file untouched, one line     | test_corruption_in_transit_is_detected                |
| corrupted upload body, once               | multipart upload, resumable chunk    | crc32c differs: object deleted, file sent again  | test_corruption_on_the_upload_path_is_sent_again      |
| corrupted upload body, every time         | resumable chunks                     | object deleted, marker not written, one line;    | test_corruption_on_the_upload_path_twice_leaves_no_...|
|                                           |                                      | a re-run completes                               |                                                       |
| 401, the token refresh works              | upload and download, mid-transfer    | refreshed, retried with the new token; completes | test_401_mid_transfer_refreshes_the_token_and_...     |
| 401, the token refresh fails (400)        | download, mid-transfer               | one line naming the login fix; finished files    | test_401_with_a_failing_token_refresh_fails_cleanly   |
|                                           |                                      | whole, no empty part file                        |                                                       |
| 401 that fresh tokens do not cure         | download                             | two refreshes, then the same one line            | test_401_with_a_failing_token_refresh_fails_cleanly   |
| connection refused                        | every request                        | retried until RETRY_DEADLINE_S, one line naming  | test_connection_refused_gives_up_naming_the_endpoint  |
|                                           |                                      | host:port, nothing in the bucket                 |                                                       |
| connection refused, then the server is up | listing, then everything             | retried; completes                               | test_connection_refused_until_the_server_is_back      |
| kill -9 / Ctrl-C during a download        | download                             | hidden part kept, the next pull resumes it       | test_interrupted_pull_leaves_no_complete_looking_...  |

fake-gcs-server appends a resumable chunk sent twice (after a stalled answer) where Cloud Storage keeps the
bytes once: the crc32c check finds the object wrong, deletes it and sends the file again, so the stalled
chunk test passes either way, and the duplicate never stays in the bucket.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from newsclf.cloud.storage import retry
from newsclf.cloud.storage.download import download_prefix
from newsclf.cloud.storage.transfer import LARGE_FILE
from newsclf.cloud.storage.upload import upload_dir
from newsclf.errors import CloudError
from tests.faulty_proxy import Fault, FaultyProxy, gcs_error
from tests.gcs_emulator import free_port
from tests.test_storage import (  # noqa: F401  (fixtures: big_source, proxy)
    BIG,
    big_source,
    make_run,
    newsclf_subprocess,
    one_error_line,
    parts,
    processed_dataset,
    proxy,
    same_file,
    small_tree,
    tree,
)

LARGE = LARGE_FILE + 1024 * 1024  # a resumable upload: one POST, then two PUT chunks


@pytest.fixture
def quick(monkeypatch):
    """Short deadlines, so that waiting out a stall or an outage takes a second, not minutes."""
    monkeypatch.setattr(retry, "REQUEST_TIMEOUT_S", 1.0)
    monkeypatch.setattr(retry, "RETRY_DEADLINE_S", 20.0)


def local_tree(tmp_path: Path) -> Path:
    """data/raw with five small files and one that goes up in chunks."""
    raw = tmp_path / "data" / "raw"
    small_tree(raw, 5)
    (raw / "large.bin").write_bytes(os.urandom(LARGE))
    return raw


def bucket_tree(gcs, prefix: str = "data/raw/") -> dict[str, bytes]:
    return {b.name[len(prefix) :]: b.download_as_bytes() for b in gcs.list_blobs(gcs.test_bucket, prefix=prefix)}


def media_gets(p: FaultyProxy) -> list:
    return [s for s in p.requests("GET") if "alt=media" in s.target]


def test_corruption_in_transit_is_detected(cli, gcs, proxy, tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.bin").write_bytes(b"a" * 1000)
    assert cli("data", "push").exit_code == 0
    p = proxy(Fault("corrupt", methods=("GET",), path="alt=media"))
    r = cli("--json", "data", "pull", "--dest", "copy")
    assert r.exit_code == 1
    line = one_error_line(r)
    assert line.startswith(f"Error: gs://{gcs.test_bucket}/data/raw/a.bin failed its crc32c check (downloaded ")
    assert r.json["errors"] == [line.removeprefix("Error: ")]
    assert not (tmp_path / "copy" / "raw" / "a.bin").exists() and parts(tmp_path / "copy") == []
    assert [s.fault for s in p.requests("GET") if "alt=media" in s.target] == ["corrupt"]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_interrupted_pull_leaves_no_complete_looking_file_and_rerun_resumes(cli, gcs, proxy, tmp_path, big_source, how):
    raw = tmp_path / "data" / "raw"
    small = small_tree(raw, 20)
    os.link(big_source, raw / "big.bin")
    assert cli("data", "push").exit_code == 0
    slow = proxy(throttle_bps=10 * 1024 * 1024)  # ~5 s for the big file: time to interrupt it

    proc = newsclf_subprocess(
        ["data", "pull", "--dest", "copy"],
        {"STORAGE_EMULATOR_HOST": slow.url, "NEWSCLF_BUCKET": gcs.test_bucket, "NEWSCLF_GCP_PROJECT": "p"},
        tmp_path,
    )
    deadline = time.time() + 60
    while True:
        found = parts(tmp_path / "copy")
        if found and found[0].stat().st_size >= 8 * 1024 * 1024:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the pull never got going"
        time.sleep(0.02)
    proc.send_signal(getattr(signal, how))
    out, err = proc.communicate(timeout=60)
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, (out, err)

    part = parts(tmp_path / "copy")
    assert [p.name.split(".")[1] for p in part] == ["big"]
    kept = part[0].stat().st_size
    assert 8 * 1024 * 1024 <= kept < BIG
    assert not (tmp_path / "copy" / "raw" / "big.bin").exists()  # nothing complete-looking
    for rel, data in tree(tmp_path / "copy" / "raw").items():  # whatever has its real name is whole
        if not rel.endswith(".newsclf-part"):
            assert data == small[rel]

    r = cli("data", "pull", "--dest", "copy", "--json")  # straight to the emulator this time
    assert r.exit_code == 0, r.stderr
    d = r.json["data"]
    assert d["bytes"] <= BIG - kept + sum(len(v) for v in small.values())  # resumed, not restarted
    assert same_file(tmp_path / "copy" / "raw" / "big.bin", big_source)
    assert tree(tmp_path / "copy" / "raw").keys() - {"big.bin"} == small.keys()
    assert parts(tmp_path / "copy") == []


def test_transient_faults_are_retried_and_nothing_is_lost(cli, gcs, proxy, tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "big.bin").write_bytes(os.urandom(20 * 1024 * 1024))  # resumable: 1 POST + 3 PUT chunks
    for i in range(5):
        (raw / f"small-{i}.txt").write_bytes(os.urandom(1000 + i))  # multipart: 1 POST each
    p = proxy(
        Fault("status", methods=("PUT", "POST"), nth={1}, status=503),
        Fault("reset", methods=("PUT", "POST"), nth={3}),
    )
    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    writes = p.requests("PUT", "POST")
    assert [(i, s.fault) for i, s in enumerate(writes, 1) if s.fault] == [(1, "status"), (3, "reset")]
    assert writes[0].status == 503 and writes[2].status is None
    ok = [s for s in writes if s.status in (200, 308)]
    assert len(ok) == 9 and len(writes) == 11  # every upload request succeeded once, after 2 retries
    assert sum(1 for s in ok if s.method == "PUT") == 3

    p2 = proxy(
        Fault("truncate", methods=("GET",), path="big.bin", nth={1}),
        Fault("status", methods=("GET",), path="small-", nth={2}, status=503),
    )
    r = cli("data", "pull", "--dest", "copy", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["bytes"] == sum(p.stat().st_size for p in raw.iterdir())  # resumed, nothing twice
    assert tree(tmp_path / "copy" / "raw") == tree(raw)
    big_gets = [s for s in p2.requests("GET") if "big.bin" in s.target]
    assert big_gets[0].fault == "truncate" and big_gets[0].status is None
    assert big_gets[-1].headers.get("range", "").startswith("bytes=")  # the retry asked for the rest only
    assert any(s.fault == "status" and s.status == 503 for s in p2.requests("GET"))


def test_lost_response_of_create_only_upload_is_not_a_conflict(cli, gcs, proxy, tmp_path):
    run = make_run(tmp_path / "models", "20260105-000000-eeeeee", f1=0.9)
    p = proxy(Fault("reset-after", methods=("POST",), nth={1}))
    r = cli("models", "push", "--json")
    assert r.exit_code == 0, r.stderr
    posts = p.requests("POST")
    assert posts[0].fault == "reset-after" and posts[0].status is None
    assert 412 in [s.status for s in posts]  # the retry found its own upload already there
    names = {b.name for b in gcs.list_blobs(gcs.test_bucket)}
    assert f"runs/{run.name}/metrics.json" in names and f"runs/{run.name}/model/model.safetensors" in names


def test_persistent_outage_gives_up_after_the_deadline(cli, gcs, proxy, monkeypatch):
    monkeypatch.setattr(retry, "RETRY_DEADLINE_S", 2.0)
    p = proxy(Fault("status", methods=None, status=503))
    started = time.monotonic()
    r = cli("models", "list")
    assert r.exit_code == 1
    *retries, error = r.stderr.strip().splitlines()
    assert error.startswith("Error: Cloud Storage kept failing for 2 s of retries (last error: 503 GET ")
    assert retries and all(
        x.startswith("Cloud Storage: 503 GET ") and x.endswith("; retrying (for up to 2 s)") for x in retries
    )
    assert len(p.requests()) >= 2 and time.monotonic() - started < 30


# --- throttling and server errors ---------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 502, 504])
def test_throttling_and_server_errors_are_retried(cli, gcs, proxy, tmp_path, quick, status):
    raw = local_tree(tmp_path)
    reason = "rateLimitExceeded" if status == 429 else "backendError"
    error = {"status": status, "body": gcs_error(status, "Injected", reason)}
    p = proxy(
        Fault("status", methods=("GET",), path="/o?", nth={1}, **error),  # the listing
        Fault("status", methods=("POST",), path="uploadType=multipart", nth={2}, **error),
        Fault("status", methods=("PUT",), nth={2}, **error),  # the last chunk of large.bin
    )
    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    assert bucket_tree(gcs) == tree(raw)
    assert [(s.fault, s.status) for s in p.requests() if s.fault] == [("status", status)] * 3

    p = proxy(
        Fault("status", methods=("GET",), path="/o?", nth={1}, **error),
        Fault("status", methods=("GET",), path="alt=media", nth={1, 4}, **error),
    )
    r = cli("data", "pull", "--dest", "copy", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["bytes"] == sum(len(v) for v in tree(raw).values())  # nothing fetched twice
    assert tree(tmp_path / "copy" / "raw") == tree(raw) and parts(tmp_path / "copy") == []
    assert [(s.fault, s.status) for s in p.requests() if s.fault] == [("status", status)] * 3


# --- stalls and read timeouts -------------------------------------------------------------------


def test_stalled_responses_time_out_and_are_retried(cli, gcs, proxy, tmp_path, quick):
    raw = local_tree(tmp_path)
    p = proxy(
        Fault("stall", methods=("GET",), path="/o?", nth={1}, delay=30),
        Fault("stall", methods=("POST",), path="uploadType=multipart", nth={1}, delay=30),  # applied, unanswered
        Fault("stall", methods=("PUT",), nth={1}, delay=30),  # a chunk taken, its answer never sent
    )
    started = time.monotonic()
    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    assert bucket_tree(gcs) == tree(raw)
    assert [s.fault for s in p.requests() if s.fault] == ["stall"] * 3

    p = proxy(
        Fault("stall-body", methods=("GET",), path="large.bin", nth={1}, delay=30),  # half the bytes, then silence
        Fault("stall", methods=("GET",), path="file-0001", nth={1}, delay=30),
    )
    r = cli("data", "pull", "--dest", "copy", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["bytes"] == sum(len(v) for v in tree(raw).values())  # resumed, nothing twice
    assert tree(tmp_path / "copy" / "raw") == tree(raw) and parts(tmp_path / "copy") == []
    large = [s for s in media_gets(p) if "large.bin" in s.target]
    assert large[0].fault == "stall-body" and large[-1].headers.get("range", "").startswith(f"bytes={LARGE // 2}-")
    assert time.monotonic() - started < 30  # the 30 s stalls were cut short by the 1 s timeout


# --- resets -------------------------------------------------------------------------------------


def test_resets_partway_through_transfers_are_retried(cli, gcs, proxy, tmp_path, quick):
    raw = local_tree(tmp_path)
    p = proxy(
        Fault("reset-request", methods=("POST",), path="uploadType=multipart", nth={1, 2}),
        Fault("reset-request", methods=("PUT",), nth={2}),  # the last chunk cut off midway
    )
    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    assert bucket_tree(gcs) == tree(raw)
    cut = [s for s in p.requests() if s.fault]
    assert [s.fault for s in cut] == ["reset-request"] * 3 and all(s.status is None for s in cut)
    chunks = [s for s in p.requests("PUT") if s.request_bytes]
    assert cut[-1].request_bytes < chunks[-1].request_bytes  # it was cut, then sent whole

    p = proxy(
        Fault("reset", methods=("GET",), path="file-0002", nth={1}),
        Fault("truncate", methods=("GET",), path="large.bin", nth={1}),
    )
    r = cli("data", "pull", "--dest", "copy", "--json")
    assert r.exit_code == 0, r.stderr
    assert tree(tmp_path / "copy" / "raw") == tree(raw) and parts(tmp_path / "copy") == []
    assert sorted(s.fault for s in media_gets(p) if s.fault) == ["reset", "truncate"]


# --- corruption on the way up -------------------------------------------------------------------


def test_corruption_on_the_upload_path_is_sent_again(cli, gcs, proxy, tmp_path, caplog):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for i in range(3):  # big enough that the middle of a multipart body is file data, not its metadata
        (raw / f"part-{i}.bin").write_bytes(os.urandom(5000))
    (raw / "large.bin").write_bytes(os.urandom(LARGE))
    p = proxy(
        Fault("corrupt-request", methods=("POST",), path="uploadType=multipart", nth={1}),
        Fault("corrupt-request", methods=("PUT",), nth={1}),
    )
    r = cli("data", "push", "--json")
    assert r.exit_code == 0, r.stderr
    assert bucket_tree(gcs) == tree(raw)
    assert [s.fault for s in p.requests() if s.fault] == ["corrupt-request"] * 2
    resent = [m for m in caplog.messages if m.endswith(" arrived corrupted and was deleted; sending it again")]
    assert len(resent) == 2, caplog.messages
    assert not [m for m in caplog.messages if "retrying" in m]  # the emulator took the bytes; we found them bad


def test_corruption_on_the_upload_path_twice_leaves_no_object(cli, gcs, proxy, tmp_path):
    processed = tmp_path / "data" / "processed"
    processed_dataset(processed)
    (processed / "large.bin").write_bytes(os.urandom(LARGE))
    p = proxy(Fault("corrupt-request", methods=("PUT",), path="large.bin"))  # every chunk of it
    r = cli("data", "push", "--processed", processed)
    assert r.exit_code == 1
    b = gcs.test_bucket
    *info, error = r.stderr.strip().splitlines()
    assert error == (
        f"Error: gs://{b}/data/processed/large.bin arrived corrupted twice (its crc32c differs from the local "
        "file's) and was deleted from the bucket; the local file is unchanged: check the network (a proxy "
        "rewriting uploads?) and re-run the push"
    )
    assert info == [
        f"Cloud Storage: gs://{b}/data/processed/large.bin arrived corrupted and was deleted; sending it again"
    ]
    assert len({s.target.split("upload_id=")[1] for s in p.requests("PUT") if s.fault}) == 2  # two sessions
    landed = bucket_tree(gcs, "data/processed/")
    assert sorted(landed) == ["test.parquet", "train.parquet", "validation.parquet"]  # no large.bin, no manifest
    assert all(data == (processed / name).read_bytes() for name, data in landed.items())

    p.faults.clear()  # the proxy still listens, without faults now
    r = cli("data", "push", "--processed", processed, "--json")
    assert r.exit_code == 0, r.stderr
    assert (r.json["data"]["files_transferred"], r.json["data"]["files_skipped"]) == (2, 3)
    assert bucket_tree(gcs, "data/processed/") == tree(processed)


# --- credentials expiring mid-transfer ----------------------------------------------------------

UNAUTHORIZED = {"status": 401, "body": gcs_error(401, "Invalid Credentials", "authError")}
REJECTED = (
    "Google Cloud rejected your credentials (expired, revoked or wrong account): run "
    "`gcloud auth application-default login` or fix GOOGLE_APPLICATION_CREDENTIALS"
)


def oauth_client(p: FaultyProxy):
    """A storage client whose user credentials refresh against the proxy's token endpoint, as ADC's do."""
    from google.cloud import storage as gcs_lib
    from google.oauth2.credentials import Credentials

    credentials = Credentials(
        token="token-0", refresh_token="refresh-token", token_uri=f"{p.url}/token",
        client_id="newsclf-test", client_secret="client-secret",
    )  # fmt: skip
    return gcs_lib.Client(project="test-project", credentials=credentials, client_options={"api_endpoint": p.url})


def test_401_mid_transfer_refreshes_the_token_and_carries_on(gcs, proxy, tmp_path, monkeypatch, quick):
    raw = local_tree(tmp_path)
    p = proxy(
        Fault("status", methods=("POST",), path="uploadType=multipart", nth={3}, **UNAUTHORIZED),
        Fault("status", methods=("GET",), path="alt=media", nth={2}, **UNAUTHORIZED),
        token=True,
    )
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")  # the client must use its credentials, not anonymous access
    client = oauth_client(p)
    upload_dir(client, gcs.test_bucket, raw, "data/raw/", workers=1)  # one at a time: tokens in order
    assert p.tokens_issued == 1
    download_prefix(client, gcs.test_bucket, "data/raw/", tmp_path / "copy", workers=1)
    assert p.tokens_issued == 2
    assert bucket_tree(gcs) == tree(raw) == tree(tmp_path / "copy") and parts(tmp_path / "copy") == []
    rejected = [s for s in p.requests() if s.fault]
    assert [s.headers["authorization"] for s in rejected] == ["Bearer token-0", "Bearer token-1"]
    last = p.requests("GET")[-1]
    assert last.headers["authorization"] == "Bearer token-2"  # the refreshed token is used from then on


def test_401_with_a_failing_token_refresh_fails_cleanly(cli, gcs, proxy, tmp_path, monkeypatch, quick):
    raw = local_tree(tmp_path)
    assert cli("data", "push").exit_code == 0
    p = proxy(
        Fault("status", methods=("GET",), path="alt=media", nth={2}, **UNAUTHORIZED),
        Fault("status", methods=("POST",), path="/token", status=400,
              body={"error": "invalid_grant", "error_description": "Token has been expired or revoked."}),
        token=True,
    )  # fmt: skip
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    with pytest.raises(CloudError) as e:
        download_prefix(oauth_client(p), gcs.test_bucket, "data/raw/", tmp_path / "copy", workers=1)
    assert str(e.value) == REJECTED  # once, even when a queued file got going before the transfer stopped
    assert [s.target for s in p.requests("POST")] == ["/token"]  # one refresh tried, nothing retried after it
    copy = tmp_path / "copy"
    got = {k: v for k, v in tree(copy).items() if not k.endswith(".newsclf-part")}
    assert 0 < len(got) < len(tree(raw)) and got == {
        k: v for k, v in tree(raw).items() if k in got
    }  # those done: whole
    assert parts(copy) == []  # the refused file had no byte to resume from: no empty part left behind

    # a 401 that fresh tokens do not cure (the account was disabled): refreshed twice, then the answer
    p = proxy(Fault("status", methods=("GET",), path="alt=media", **UNAUTHORIZED), token=True)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    with pytest.raises(CloudError) as e:
        download_prefix(oauth_client(p), gcs.test_bucket, "data/raw/", tmp_path / "copy2", workers=1)
    assert str(e.value) == REJECTED
    assert p.tokens_issued == 2  # google-auth refreshes twice, then gives up; no other file starts after that
    got = tree(tmp_path / "copy2")
    assert got == {k: v for k, v in tree(raw).items() if k in got} and len(got) <= 1  # at most the empty file
    assert parts(tmp_path / "copy2") == []


# --- connection refused -------------------------------------------------------------------------


def test_connection_refused_gives_up_naming_the_endpoint(cli, gcs, monkeypatch, tmp_path):
    monkeypatch.setattr(retry, "RETRY_DEADLINE_S", 1.0)
    port = free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    local_tree(tmp_path)
    r = cli("data", "push")
    assert r.exit_code == 1
    *retries, error = r.stderr.strip().splitlines()
    assert error == (
        f"Error: Cloud Storage kept failing for 1 s of retries (last error: connection refused by 127.0.0.1:{port}): "
        "check your network or https://status.cloud.google.com and re-run; finished files are kept"
    )
    assert retries and all(
        x == f"Cloud Storage: connection refused by 127.0.0.1:{port}; retrying (for up to 1 s)" for x in retries
    )
    assert list(gcs.list_blobs(gcs.test_bucket)) == []


def test_connection_refused_until_the_server_is_back(cli, gcs, fake_gcs, monkeypatch, tmp_path, quick, caplog):
    raw = local_tree(tmp_path)
    port = free_port()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    later: list[FaultyProxy] = []
    timer = threading.Timer(1.5, lambda: later.append(FaultyProxy(fake_gcs.url, port=port).__enter__()))
    timer.start()  # the port is bound only then: until then, connections are refused
    try:
        r = cli("data", "push", "--json")
    finally:
        timer.join()
        for p in later:
            p.stop()
    assert r.exit_code == 0, r.stderr
    assert bucket_tree(gcs) == tree(raw)
    assert f"Cloud Storage: connection refused by 127.0.0.1:{port}; retrying (for up to 20 s)" in caplog.messages
    assert any(s.target.startswith(f"/storage/v1/b/{gcs.test_bucket}/o?") for s in later[0].requests())
