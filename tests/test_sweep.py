"""`newsclf train --sweep`: grid parsing, the table and summary.json, resume, Ctrl-C, exit codes, W&B groups."""

from __future__ import annotations

import _thread
import json
import os
import struct
import threading
import time
from pathlib import Path

import pytest

from newsclf.errors import InputError
from newsclf.sweep import (
    FAILED,
    SUCCEEDED,
    Grid,
    Sweep,
    load_sweep_file,
    make_sweep_id,
    parse_grid,
    resolve_metric,
)
from tests.tiny_model import tiny_data, tiny_model  # noqa: F401 (fixtures)

SWEEPABLE = (
    "lr, batch_size, epochs, weight_decay, warmup_ratio, max_length, patience, seed, max_train_samples, base_model"
)
KEEP = ("trial", "params", "run_id", "status", "objective", "rank", "best", "error", "best_validation", "test")


def tiny_sweep(data: Path, grid: str, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--epochs", "1", "--batch-size", "8", "--max-length", "64",
            "--warmup-ratio", "0", "--max-train-samples", "16", "--sweep", grid, *extra]  # fmt: skip


def table(doc: dict) -> list[dict]:
    return [{k: t[k] for k in KEEP} for t in doc["trials"]]


# -------------------------------------------------------------------------------------- the grid


def test_grid_forms():
    g = parse_grid("lr=1e-5,2e-5,5e-5 batch_size=16,32")
    assert g.params == {"lr": [1e-5, 2e-5, 5e-5], "batch_size": [16, 32]}
    assert len(g) == 6 and g.trials()[:3] == [
        {"lr": 1e-5, "batch_size": 16}, {"lr": 1e-5, "batch_size": 32}, {"lr": 2e-5, "batch_size": 16},
    ]  # fmt: skip
    assert parse_grid("--batch-size=8, 16  --model=a,b").params == {"batch_size": [8, 16], "base_model": ["a", "b"]}
    assert parse_grid("learning_rate=1e-3 epochs=2").params == {"lr": [1e-3], "epochs": [2.0]}
    assert parse_grid(g.spec()) == g  # what `cloud run` hands the job reads back exactly


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("lrr=1e-3", f"Unknown sweep parameter 'lrr': did you mean lr? (sweepable: {SWEEPABLE})"),
        ("batchsize=16", f"Unknown sweep parameter 'batchsize': did you mean batch_size? (sweepable: {SWEEPABLE})"),
        ("colour=1", f"Unknown sweep parameter 'colour': (sweepable: {SWEEPABLE})"),
        (
            "cpu=1",
            "'cpu' cannot be swept (it sets the device, not a hyper-parameter): pass it as a flag; "
            f"sweepable: {SWEEPABLE}",
        ),
        (
            "batch_size=16,1e-3",
            "Bad sweep value batch_size='1e-3': batch_size takes int values (e.g. batch_size=16,32)",
        ),
        ("lr=1e-3,abc", "Bad sweep value lr='abc': lr takes float values (e.g. lr=1e-5,2e-5)"),
        ("lr=1e-3,0.001", "Sweep parameter lr lists 0.001 twice: drop the duplicate"),
        ("lr=1e-3 lr=2e-3", "--sweep names lr twice: give all its values in one item"),
        ("lr", "Bad --sweep item 'lr': write NAME=V1,V2,... (e.g. --sweep \"lr=1e-5,2e-5 batch_size=16,32\")"),
        ("lr=1e-3,", "Bad --sweep item 'lr=1e-3,': an empty value; separate values with commas, e.g. lr=1e-5,2e-5"),
        ("", 'The sweep is empty: give NAME=V1,V2 items, e.g. --sweep "lr=1e-5,2e-5 batch_size=16,32"'),
    ],
)
def test_grid_errors_are_one_line(spec, message):
    with pytest.raises(InputError) as e:
        parse_grid(spec)
    assert str(e.value) == message


def test_sweep_files(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("lr: [1e-5, 2.0e-5]\nbatch_size: [16, 32]\nseed: 7\n")  # YAML reads 1e-5 as a string
    grid, metric = load_sweep_file(plain)
    assert grid.params == {"lr": [1e-5, 2e-5], "batch_size": [16, 32], "seed": [7]} and metric is None
    wandb = tmp_path / "wandb.yaml"
    wandb.write_text(
        "method: grid\nmetric: {name: eval/loss, goal: minimize}\n"
        "parameters:\n  learning_rate: {values: [0.001, 0.002]}\n  epochs: {value: 2}\n"
    )
    grid, metric = load_sweep_file(wandb)
    assert grid.params == {"lr": [0.001, 0.002], "epochs": [2.0]} and metric == "loss"
    bayes = tmp_path / "bayes.yaml"
    bayes.write_text("method: bayes\nparameters:\n  lr: {min: 0.0001, max: 0.1}\n")
    with pytest.raises(InputError, match=r"asks for method: bayes; newsclf runs grid sweeps: set method: grid$"):
        load_sweep_file(bayes)
    wrong_goal = tmp_path / "goal.yaml"
    wrong_goal.write_text("parameters:\n  lr: {values: [0.1]}\nmetric: {name: accuracy, goal: minimize}\n")
    with pytest.raises(InputError, match="accuracy is maximized, not minimized: fix the goal or pick another metric"):
        load_sweep_file(wrong_goal)
    ranges = tmp_path / "ranges.yaml"
    ranges.write_text("parameters:\n  lr: {min: 0.0001, max: 0.1}\n")
    with pytest.raises(InputError, match=r"lr has max, min; a grid sweep takes `values: \[...\]` or `value: x`"):
        load_sweep_file(ranges)


def test_metric_names_and_ranking():
    assert [resolve_metric(m) for m in ("macro_f1", "eval/accuracy", "val_loss", "F1", "macro-f1")] == [
        "macro_f1", "accuracy", "loss", "macro_f1", "macro_f1",
    ]  # fmt: skip
    with pytest.raises(InputError) as e:
        resolve_metric("acuracy")
    assert str(e.value) == (
        "Unknown --metric 'acuracy': did you mean accuracy? (choose from macro_f1, accuracy, precision, recall, loss; "
        "loss is minimized)"
    )
    sweep = Sweep.new("sweep-00000000", Grid({"lr": [1.0, 2.0, 3.0, 4.0]}))
    for t, (f1, loss) in zip(sweep.trials, [(0.8, 0.5), (0.9, 0.6), (None, None), (0.9, 0.4)]):
        t.status = FAILED if f1 is None else SUCCEEDED
        t.best_validation = None if f1 is None else {"macro_f1": f1, "loss": loss}
    by_f1 = sweep.summary()
    assert [(t["trial"], t["rank"], t["best"]) for t in by_f1["trials"]] == [
        (2, 1, True), (4, 2, False), (1, 3, False), (3, None, False),
    ]  # ties: grid order  # fmt: skip
    sweep.metric = "loss"
    by_loss = sweep.summary()
    assert [t["trial"] for t in by_loss["trials"]] == [4, 1, 2, 3] and by_loss["goal"] == "minimize"
    assert by_loss["best"]["trial"] == 4 and by_loss["best"]["objective"] == 0.4


def test_sweep_id_is_a_hash_of_grid_and_base_options():
    base = {"data_dir": "data/processed", "epochs": 1.0}
    a = make_sweep_id(parse_grid("lr=1e-3,2e-3 batch_size=8"), base)
    assert a == make_sweep_id(parse_grid("batch_size=8 lr=0.001,0.002"), dict(base))
    assert a.startswith("sweep-") and len(a) == len("sweep-") + 8
    assert a != make_sweep_id(parse_grid("lr=1e-3,2e-3 batch_size=8"), {**base, "epochs": 2.0})
    assert a != make_sweep_id(parse_grid("lr=1e-3,3e-3 batch_size=8"), base)


# ------------------------------------------------------------------------------------------ the CLI


def test_bad_sweeps_fail_before_training(cli, tiny_data):
    r = cli("train", "--data", str(tiny_data), "--sweep", "lrr=1e-3")
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: Unknown sweep parameter 'lrr': did you mean lr? (sweepable: {SWEEPABLE})"
    r = cli("train", "--data", str(tiny_data), "--sweep", "lr=1e-3,0 batch_size=8")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: Sweep value lr=0 is out of range (--lr must be > 0): fix the grid"
    r = cli("train", "--data", str(tiny_data), "--lr", "1e-3", "--sweep", "lr=1e-3,2e-3")
    assert r.exit_code == 2 and "--lr is both swept and given as a flag: drop one of the two" in r.stderr
    r = cli("train", "--data", str(tiny_data), "--metric", "loss")
    assert r.exit_code == 2 and "--metric picks a sweep's objective" in r.stderr
    r = cli("train", "--resume", "sweep-12345678")
    assert r.exit_code == 1
    assert r.stderr.strip() == "Error: No sweep sweep-12345678 in models/sweeps/: list them with `ls models/sweeps`"
    assert not Path("models").exists()


def test_local_sweep_table_summary_resume_and_exit_codes(cli, tiny_data, tiny_model, tmp_path):
    missing = tmp_path / "no-such-model"  # fails inside its trials, when the base model is loaded
    args = tiny_sweep(tiny_data, f"lr=3e-3,1e-3 model={tiny_model},{missing}")
    r = cli("--json", *args)
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    sid = data["sweep_id"]
    assert data["counts"] == {"trials": 4, "pending": 0, "running": 0, "succeeded": 2, "failed": 2, "interrupted": 0}
    assert data["metric"] == "macro_f1" and data["grid"] == {
        "lr": [3e-3, 1e-3],
        "base_model": [str(tiny_model), str(missing)],
    }
    rows = data["trials"]
    assert [(t["trial"], t["status"], t["rank"]) for t in rows[2:]] == [(2, "failed", None), (4, "failed", None)]
    assert {t["trial"] for t in rows[:2]} == {1, 3} and [t["rank"] for t in rows[:2]] == [1, 2]
    assert rows[0]["objective"] >= rows[1]["objective"] and rows[0]["best"] and data["best"] == rows[0]
    assert all(t["error"].startswith(f"Cannot load base model '{missing}'") for t in rows[2:])
    assert len(r.json["warnings"]) == 2 and r.json["warnings"][0].startswith(
        f"Trial 2/4 (lr=0.003 base_model={missing}) failed: "
    )

    # each trial is a normal run with its sweep and values in run_config.json; latest is the best one
    for t in rows[:2]:
        run = Path("models") / t["run_id"]
        metrics = json.loads((run / "metrics.json").read_text())
        assert t["objective"] == metrics["best_validation"]["macro_f1"] and t["test"] == metrics["test"]
        cfg = json.loads((run / "run_config.json").read_text())
        assert (cfg["sweep_id"], cfg["sweep_params"], cfg["sweep_trial"]) == (sid, t["params"], t["trial"])
        assert cfg["lr"] == t["params"]["lr"] and cfg["base_model"] == str(tiny_model)
    assert os.readlink("models/latest") == data["best"]["run_id"]
    summary = Path("models/sweeps") / sid / "summary.json"
    assert json.loads(summary.read_text()) == data  # summary.json is the --json document
    assert data["location"] == str(summary)

    # the same command again is refused; with --resume nothing new is trained and the table is the same
    again = cli(*args)
    assert again.exit_code == 1
    assert again.stderr.strip() == (
        f"Error: Sweep {sid} already exists (2 of 4 trials succeeded, {summary}): add --resume to continue it, "
        "or change the grid or options"
    )
    weights = {t["run_id"]: (Path("models") / t["run_id"] / "model.safetensors").stat().st_mtime_ns for t in rows[:2]}
    runs_before = sorted(p.name for p in Path("models").iterdir())
    resumed = cli("--json", *args, "--resume")
    assert resumed.exit_code == 0, resumed.stderr
    assert table(resumed.json["data"]) == table(data)
    assert sorted(p.name for p in Path("models").iterdir()) == runs_before
    assert {rid: (Path("models") / rid / "model.safetensors").stat().st_mtime_ns for rid in weights} == weights
    human = cli(*args, "--resume")
    assert human.exit_code == 0, human.stderr
    assert (
        f"sweep {sid}: 4 trials (2 succeeded, 2 failed); objective: validation macro_f1, higher is better"
        in human.stdout
    )
    assert f"trial 2 failed: Cannot load base model '{missing}'" in human.stdout
    assert f"* best: trial {data['best']['trial']} (lr=" in human.stdout
    assert f"Sweep {sid}: 4 trials (2 already succeeded)" in human.stderr

    # every trial failing: exit 1, the table still written
    bad = cli("--json", *tiny_sweep(tiny_data, f"model={missing},{tmp_path / 'also-missing'}"))
    assert bad.exit_code == 1
    assert bad.json["status"] == "error" and bad.json["data"]["counts"]["failed"] == 2
    message = bad.json["errors"][0]
    assert message.startswith(f"All 2 trials of sweep {bad.json['data']['sweep_id']} failed (trial 1: Cannot load")
    assert message.endswith("fix the cause and run the same command again with --resume")
    assert bad.stderr.strip().splitlines()[-1] == f"Error: {message}"


def _interrupt_when_running(trial: int, models: Path, sid_box: list) -> threading.Thread:
    """Ctrl-C (SIGINT to the main thread) once trial `trial` of the sweep is training."""

    def watch() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            for summary in models.glob("sweeps/*/summary.json"):
                try:
                    doc = json.loads(summary.read_text())
                except ValueError:
                    continue
                [t] = [t for t in doc["trials"] if t["trial"] == trial]
                if t["status"] == "running" and (models / t["run_id"] / "run_config.json").is_file():
                    sid_box.append(doc["sweep_id"])
                    _thread.interrupt_main()
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_ctrl_c_records_what_finished_then_resume_by_id(cli, tiny_data, tiny_model):
    args = tiny_sweep(tiny_data, "lr=3e-3,1e-3", "--model", str(tiny_model))
    box: list[str] = []
    watcher = _interrupt_when_running(2, Path("models"), box)
    r = cli("--json", *args)
    watcher.join(5)
    assert r.exit_code == 130, r.stderr
    [sid] = box
    data = r.json["data"]
    assert [(t["trial"], t["status"]) for t in data["trials"]] == [(1, "succeeded"), (2, "interrupted")]
    assert json.loads((Path("models/sweeps") / sid / "summary.json").read_text()) == data
    assert r.json["errors"] == [
        f"Sweep {sid} interrupted with 1 of 2 trials finished: continue it with `newsclf train --resume {sid}`"
    ]
    first = data["trials"][0]
    weights = (Path("models") / first["run_id"] / "model.safetensors").stat().st_mtime_ns

    done = cli("--json", "train", "--resume", sid)
    assert done.exit_code == 0, done.stderr
    trials = {t["trial"]: t for t in done.json["data"]["trials"]}
    assert trials[1] == {**first, "rank": trials[1]["rank"], "best": trials[1]["best"]}  # kept, not retrained
    assert (Path("models") / first["run_id"] / "model.safetensors").stat().st_mtime_ns == weights
    assert trials[2]["status"] == "succeeded" and trials[2]["run_id"] == data["trials"][1]["run_id"]  # same run dir
    assert done.json["data"]["counts"]["succeeded"] == 2


def _wandb_records(path: Path):
    """The Record protos of a .wandb file (a LevelDB-style log: 32 KiB blocks of 7-byte-headed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf = path.read_bytes(), 7, b""  # 7-byte file header: magic + version
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4) and buf:  # FULL or LAST
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            yield rec


@pytest.fixture
def fresh_wandb():
    """W&B keeps the directory of the process's first run for every later one: start and leave it fresh."""
    import wandb

    wandb.teardown()
    yield
    wandb.teardown()


def test_wandb_groups_trials_under_the_sweep_id(cli, tiny_data, tiny_model, fresh_wandb):
    r = cli("--json", *tiny_sweep(tiny_data, "seed=1", "--model", str(tiny_model), "--wandb-offline"))
    assert r.exit_code == 0, r.stderr
    sid, [trial] = r.json["data"]["sweep_id"], r.json["data"]["trials"]
    [run_file] = Path("wandb").glob("offline-run-*/run-*.wandb")
    [run] = [rec.run for rec in _wandb_records(run_file) if rec.WhichOneof("record_type") == "run"]
    assert (run.run_group, run.run_id) == (sid, trial["run_id"])


def test_sweep_file_through_the_cli(cli, tiny_data, tmp_path):
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(
        "method: grid\nmetric: {name: eval/loss, goal: minimize}\n"
        f"parameters:\n  model: {{values: ['{tmp_path / 'a'}', '{tmp_path / 'b'}']}}\n  seed: {{value: 3}}\n"
    )
    args = ["train", "--data", str(tiny_data), "--sweep-file", str(sweep_file)]
    r = cli("--json", *args)
    assert r.exit_code == 1  # every trial failed (no such models), each inside its own run
    data = r.json["data"]
    assert data["metric"] == "loss" and data["goal"] == "minimize"
    assert data["grid"] == {"base_model": [str(tmp_path / "a"), str(tmp_path / "b")], "seed": [3]}
    assert [t["status"] for t in data["trials"]] == ["failed", "failed"]
    assert (Path("models/sweeps") / data["sweep_id"] / "summary.json").is_file()
    again = cli("--json", *args, "--metric", "accuracy", "--resume")  # --metric wins over the file's
    assert again.json["data"]["sweep_id"] == data["sweep_id"] and again.json["data"]["metric"] == "accuracy"
    both = cli("train", "--data", str(tiny_data), "--sweep-file", str(sweep_file), "--sweep", "lr=1e-3")
    assert both.exit_code == 2 and "give --sweep or --sweep-file, not both" in both.stderr
