"""One writer per dataset folder and per training run, with real concurrent processes.

The first writer runs in a subprocess and pauses at a known point (it touches a `ready` file and
waits for a `go` file), so the race is set up by events, never by sleeping a fixed time.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest

from newsclf import locks
from tests.paused_cli import paused  # noqa: F401  (fixture)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401  (fixtures)


def test_second_prepare_to_the_same_out_fails_naming_the_first(cli, paused, tmp_path):
    out = tmp_path / "data" / "processed"
    first = paused("prepare", "--json", "data", "prepare", "--demo", "--out", str(out))
    first.wait_ready()

    for extra in ((), ("--force",)):
        r = cli("data", "prepare", "--demo", "--out", str(out), *extra)
        assert r.exit_code == 1
        [line] = r.stderr.splitlines()
        assert line.startswith(
            f"Error: Dataset folder {out} is being written by another process (pid {first.proc.pid} since "
        )
        assert line.endswith(
            f": newsclf --json data prepare --demo --out {out}): wait for it to finish (or stop it), "
            "or choose another --out DIR"
        )
        assert not out.exists()  # the second writer touched nothing

    rc, stdout, stderr = first.go()
    assert rc == 0, stderr
    assert json.loads(stdout)["data"]["out_dir"] == str(out)
    assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["processed"]  # no lock file, no temp folder left


def test_kill_9_leaves_a_temp_folder_that_the_next_prepare_removes(cli, paused, tmp_path):
    out = tmp_path / "data" / "processed"
    first = paused("prepare", "data", "prepare", "--demo", "--out", str(out))
    first.wait_ready()
    first.kill()  # kill -9 while its temporary folder is half written
    assert first.proc.returncode == -signal.SIGKILL
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".processed.tmp-")]  # left behind
    # folders that are not this dataset's temporaries stay
    others = [out.parent / ".processed.tmp-keepme", out.parent / ".processed.tmp-x.tmp-abcd1234", out.parent / "notes"]
    for p in others:
        p.mkdir()

    r = cli("--json", "data", "prepare", "--demo", "--out", str(out))
    assert r.exit_code == 0, r.stderr  # the dead writer's lock is free
    names = sorted(p.name for p in out.parent.iterdir())
    assert names == sorted(["processed", *(p.name for p in others)])


def test_unwritable_out_folder_is_one_error_line(cli, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere, except in sysfs
        parent = Path("/sys")
        if not parent.is_dir():
            pytest.skip("running as root, and no /sys to be refused by")
    else:
        parent = tmp_path / "ro"
        parent.mkdir()
        parent.chmod(0o555)
    before = sorted(parent.iterdir())
    try:
        for out in (parent / "newsclf-processed", parent / "newsclf-sub" / "processed"):
            r = cli("data", "prepare", "--demo", "--out", str(out))
            assert r.exit_code == 1
            [line] = r.stderr.splitlines()
            assert re.fullmatch(
                rf"Error: Cannot write to {re.escape(str(out.parent))}/ \((Permission denied|Operation not permitted)\): "
                r"choose another --out DIR or fix its permissions",
                line,
            ), line
        assert sorted(parent.iterdir()) == before
    finally:
        if parent != Path("/sys"):
            parent.chmod(0o755)


def test_lock_is_released_and_its_file_removed(tmp_path):
    folder = tmp_path / "d"
    with locks.hold(folder, what="Dataset folder d", fix="wait") as path:
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid()
        with pytest.raises(locks.Busy) as e:  # another open file description: the same as another process
            with locks.hold(folder, what="Dataset folder d", fix="wait"):
                pass
        assert str(e.value).startswith(
            f"Dataset folder d is being written by another process (pid {os.getpid()} since "
        )
    assert not path.exists()
    with locks.hold(folder, what="Dataset folder d", fix="wait"):  # free again
        pass


@pytest.mark.slow
def test_a_second_process_cannot_train_a_run_being_trained(cli, paused, tiny_data, tiny_model, tmp_path):
    run = "20261130-120000-LOCKED"
    args = ["train", "--data", str(tiny_data), "--model", str(tiny_model), "--epochs", "1", "--batch-size", "8",
            "--max-length", "64", "--run-id", run]  # fmt: skip
    first = paused("train", *args)
    first.wait_ready()  # the run folder has its run_config.json: a plain --resume would pick it
    run_dir = tmp_path / "models" / run
    before = sorted(p.name for p in run_dir.iterdir())

    for again in (("train", "--resume"), ("train", "--resume", run)):
        r = cli(*again)
        assert r.exit_code == 1, r.stderr
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and r.stderr.splitlines()[-1] == errors[0], r.stderr  # after its log lines
        line = errors[0]
        assert line.startswith(f"Error: Run {run} is being written by another process (pid {first.proc.pid} since ")
        assert line.endswith(
            f": newsclf {' '.join(args)}): wait for it to finish, or stop it and continue with "
            f"`newsclf train --resume {run}`"
        )
    assert sorted(p.name for p in run_dir.iterdir()) == before

    rc, _, stderr = first.go()
    assert rc == 0, stderr
    assert (run_dir / "metrics.json").is_file()
    assert not (tmp_path / "models" / f".{run}.lock").exists()
