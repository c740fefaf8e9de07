"""One status.json schema (newsclf/runstate.py), whoever writes it: the job, a cloud sweep, the VM startup script."""

from __future__ import annotations

import json

import pytest

from newsclf.runstate import FINAL, RunState, finish, now, problems, running_status
from tests.compute_standin import sandbox, standin  # noqa: F401  (fixtures)

POLL = ("--poll-interval", "0.05")


def status_of(server, run_id: str) -> dict:
    return json.loads(server.gcs.bucket(server.gcs.test_bucket).blob(f"runs/{run_id}/status.json").download_as_bytes())


def test_the_states_and_which_are_final():
    assert [s.value for s in RunState] == ["pending", "running", "succeeded", "failed", "interrupted"]
    assert FINAL == {RunState.SUCCEEDED, RunState.FAILED}
    assert RunState("failed").final and not RunState.RUNNING.final
    assert RunState.SUCCEEDED == "succeeded"  # a str: compares with what json.loads gives


def test_a_python_written_status_follows_the_schema():
    status = running_status("20261127-120000-ABC123", {"attempt": 2})
    assert problems(status) == []
    assert status["attempt"] == 3 and status["state"] == "running" and status["started_at"].endswith("Z")
    finish(status, RunState.FAILED, 1, "loss is nan")
    assert problems(status) == []
    assert json.loads(json.dumps(status))["state"] == "failed"
    with pytest.raises(ValueError, match="does not end an attempt"):
        finish(status, RunState.RUNNING, 0)
    finish(status, RunState.INTERRUPTED, 143, "SIGTERM (the VM stopping, or `docker stop`): it resumes")
    assert problems(status) == [] and not RunState(status["state"]).final


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            {"started_at": "2026-11-30T18:00:00+00:00"},
            "started_at '2026-11-30T18:00:00+00:00' is not %Y-%m-%dT%H:%M:%SZ",
        ),
        ({"state": "done"}, "state 'done' is not running, succeeded, failed or interrupted"),
        ({"state": "pending"}, "state 'pending' is not running, succeeded, failed or interrupted"),
        ({"state": "failed", "error": None}, "a failed run needs an error"),
        ({"attempt": True}, "attempt is True"),
        ({"extra": 1}, "unknown keys: extra"),
    ],
)
def test_a_status_off_the_schema_is_named(change, problem):
    status = {**running_status("RUN-1", {}), "exit_code": 1, "finished_at": now(), **change}
    assert problem in problems(status)


def test_what_the_startup_script_wrote_before_did_not_follow_it():
    # newsclf/cloud/startup.sh's failed status before this schema: no run id, attempt or host
    old = {"state": "failed", "exit_code": 3, "started_at": "2026-11-30T18:00:00Z",
           "finished_at": "2026-11-30T18:01:00Z", "error": "the job exited (3)"}  # fmt: skip
    assert problems(old) == ["run_id is missing", "attempt is missing", "host is missing"]


def test_the_startup_scripts_status_follows_the_schema(cli, standin, sandbox):
    # the container dies without a status: the startup script (shell) writes the final one
    r = cli("--json", "cloud", "run", "--image", "registry.example/newsclf:crash", *POLL)
    assert r.exit_code == 3, r.stderr
    run_id = r.json["data"]["run_id"]
    status = status_of(standin, run_id)
    assert problems(status) == []
    assert status["run_id"] == run_id and status["state"] == "failed" and status["attempt"] == 1
    assert status["started_at"] <= status["finished_at"]  # the format sorts as text


def test_the_startup_script_counts_a_resumed_attempt(cli, standin, sandbox):
    start = sandbox.on_start

    def after_an_interrupted_attempt(server, inst):  # an earlier boot's job got this far
        run_id = inst.metadata()["newsclf-run-id"]
        earlier = {**running_status(run_id, {}), "started_at": "2026-01-01T00:00:00Z"}
        server.gcs.bucket(server.gcs.test_bucket).blob(f"runs/{run_id}/status.json").upload_from_string(
            json.dumps(earlier), content_type="application/json"
        )
        return start(server, inst)

    standin.on_start = after_an_interrupted_attempt
    r = cli("--json", "cloud", "run", "--image", "registry.example/newsclf:crash", *POLL)
    assert r.exit_code == 3, r.stderr
    status = status_of(standin, r.json["data"]["run_id"])
    assert problems(status) == []
    assert status["attempt"] == 2 and status["started_at"] > "2026-01-01T00:00:00Z"
