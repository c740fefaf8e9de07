"""`newsclf predict` and `newsclf evaluate` on a tiny trained run; the numpy metrics.

Faults covered here (issue 15): a CSV field over csv's 128 KiB default in `predict --file` and
`evaluate --data`, a latin-1 CSV (the same message as `data prepare`), an unwritable `evaluate --plot`.
Incomplete or damaged runs are in tests/test_runs.py.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.tiny_model import make_rows, tiny_data, tiny_model, tiny_run  # noqa: F401 (fixtures)

FAKE = "shocking viral hoax exposed watch the insane secret"
REAL = "the minister said in a statement the committee reported"


# -- metrics ---------------------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    from newsclf.evaluate import classification_metrics

    # true fake: 3 (2 right), true real: 2 (1 right)
    m = classification_metrics([0, 0, 0, 1, 1], [0, 0, 1, 1, 0])
    assert m["confusion_matrix"] == [[2, 1], [1, 1]]
    assert m["accuracy"] == pytest.approx(3 / 5)
    p_fake, r_fake = 2 / 3, 2 / 3
    p_real, r_real = 1 / 2, 1 / 2
    assert m["per_class"]["fake"] == pytest.approx({"precision": p_fake, "recall": r_fake, "f1": 2 / 3, "support": 3})
    assert m["per_class"]["real"] == pytest.approx({"precision": p_real, "recall": r_real, "f1": 1 / 2, "support": 2})
    assert m["precision"] == pytest.approx((p_fake + p_real) / 2)
    assert m["recall"] == pytest.approx((r_fake + r_real) / 2)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_metrics_when_a_class_is_never_predicted():
    from newsclf.evaluate import classification_metrics

    m = classification_metrics([0, 1, 1, 1], [1, 1, 1, 1])
    assert m["per_class"]["fake"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["real"]["recall"] == 1.0
    assert m["macro_f1"] == pytest.approx((0 + 2 * 0.75 / 1.75) / 2)


# -- predict ---------------------------------------------------------------------------------------


def test_predict_texts_table(cli, tiny_run):
    r = cli("predict", "--model", str(tiny_run), FAKE, REAL)
    assert r.exit_code == 0, r.stderr
    lines = [line.split() for line in r.stdout.strip().splitlines()]
    assert lines[0][:3] == ["#", "label", "probability"]
    assert [row[:2] for row in lines[1:]] == [["0", "fake"], ["1", "real"]]


def test_predict_json_is_one_document_in_input_order(cli, tiny_run):
    texts = [REAL, FAKE + " " + FAKE + " " + FAKE, "officials said", FAKE]  # lengths out of order
    r = cli("--json", "predict", "--model", str(tiny_run), *texts)
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert doc["status"] == "ok" and doc["command"] == "predict"
    preds = doc["data"]["predictions"]
    assert doc["data"]["count"] == 4 and [p["index"] for p in preds] == [0, 1, 2, 3]
    assert [p["label"] for p in preds] == ["real", "fake", "real", "fake"]
    for p in preds:
        assert set(p) == {"index", "label", "probability", "scores"}
        assert p["probability"] == max(p["scores"].values())
        assert sum(p["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    # each text alone gives the same answer: sorting by length never mixes rows up
    for i, text in enumerate(texts):
        alone = cli("--json", "predict", "--model", str(tiny_run), text).json["data"]["predictions"][0]
        assert alone["scores"] == pytest.approx(preds[i]["scores"], abs=2e-3)  # bf16 on AMX: ~2e-4 apart


def test_batching_and_padding_do_not_change_scores(tiny_run):
    from newsclf.predict import Predictor

    texts = [t for t, _ in make_rows(40, seed=7)]
    predictor = Predictor(tiny_run, precision="fp32")
    one = predictor.predict_proba(texts, batch_size=1)
    many = predictor.predict_proba(texts, batch_size=16)
    assert one.shape == (40, 2)
    np.testing.assert_allclose(one, many, atol=1e-5)


def test_auto_precision_is_bf16_on_amx_and_stays_close_to_fp32(tiny_run):
    from newsclf.predict import Predictor
    from newsclf.train import cpu_bf16_fast

    texts = [t for t, _ in make_rows(40, seed=7)]
    auto = Predictor(tiny_run)
    fp32 = Predictor(tiny_run, precision="fp32").predict_proba(texts, batch_size=16)
    if not cpu_bf16_fast():
        assert auto.precision == "fp32"
        return
    assert auto.precision == "bf16" and auto.model.dtype.is_floating_point and str(auto.model.dtype) == "torch.bfloat16"
    one, many = auto.predict_proba(texts, batch_size=1), auto.predict_proba(texts, batch_size=16)
    assert (many.argmax(1) == fp32.argmax(1)).all() and (one.argmax(1) == many.argmax(1)).all()
    assert np.abs(many - fp32).max() < 0.03  # bench/README.md: <= 0.026 on 1,000 ISOT articles
    assert np.abs(one - many).max() < 5e-3


@pytest.mark.parametrize(
    ("value", "error"),
    [("fp16", "--precision fp16 needs a CUDA GPU: use bf16 or fp32 on the CPU"),
     ("half", "--precision (or NEWSCLF_PRECISION) must be one of auto, bf16, fp16, tf32, fp32, not 'half'")],
)  # fmt: skip
def test_bad_precision_is_one_line(cli, tiny_run, value, error):
    r = cli("predict", "--model", str(tiny_run), "--precision", value, FAKE)
    assert r.exit_code == 1 and r.stdout == ""
    assert r.stderr.strip() == f"Error: {error}"


def test_predict_files(cli, tiny_run, tmp_path):
    (tmp_path / "a.txt").write_text(f"{FAKE}\n\n{REAL}\n")
    (tmp_path / "a.csv").write_text(f'id,title,text\n1,Wow,"{FAKE}"\n2,,"{REAL}"\n')
    (tmp_path / "a.jsonl").write_text(json.dumps({"text": FAKE}) + "\n" + json.dumps(REAL) + "\n")
    for name in ("a.txt", "a.csv", "a.jsonl"):
        r = cli("--json", "predict", "--model", str(tiny_run), "--file", str(tmp_path / name))
        assert r.exit_code == 0, (name, r.stderr)
        assert [p["label"] for p in r.json["data"]["predictions"]] == ["fake", "real"], name


def test_predict_stdin(cli, tiny_run, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{REAL}\n{FAKE}\n"))
    r = cli("--json", "predict", "--model", str(tiny_run), "-")
    assert r.exit_code == 0, r.stderr
    assert [p["label"] for p in r.json["data"]["predictions"]] == ["real", "fake"]


def test_predict_latest_by_default(cli, tiny_run):
    shutil.copytree(tiny_run, Path("models") / tiny_run.name)
    Path("models/latest").symlink_to(tiny_run.name)
    r = cli("--json", "predict", FAKE)
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["run_id"] == tiny_run.name


@pytest.mark.parametrize(
    ("content", "name", "error"),
    [
        ("", "empty.txt", "has no texts: give one article per line (or rows of a CSV/JSONL file)"),
        ("title,body\nx,y\n", "bad.csv",
         "has no column 'text' (found: title, body): name the article column text (an optional title column is used too)"),
        ('{"body": "x"}\n', "bad.jsonl", 'line 1 has no "text" string: write lines like {"text": "..."}'),
        ("not json\n", "broken.jsonl", "line 1 is not JSON: write one JSON object per line"),
    ],
)  # fmt: skip
def test_bad_input_files_are_one_line(cli, tiny_run, tmp_path, content, name, error):
    path = tmp_path / name
    path.write_text(content)
    r = cli("predict", "--model", str(tiny_run), "--file", str(path))
    assert r.exit_code == 1
    assert r.stderr.strip() == f"Error: {path} {error}"
    assert r.stdout == ""


def test_missing_file(cli, tiny_run, tmp_path):
    r = cli("--json", "predict", "--model", str(tiny_run), "--file", str(tmp_path / "nope.txt"))
    assert r.exit_code == 1
    assert r.json["errors"] == [
        f"{tmp_path / 'nope.txt'} not found: pass an existing .txt, .csv or .jsonl file to --file"
    ]


def test_model_dir_without_safetensors(cli, tiny_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "model.safetensors").unlink()
    r = cli("predict", "--model", str(broken), FAKE)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        f"Error: {broken} has no model.safetensors (unfinished run or not a newsclf model): "
        "pick another with --model, or finish it with `newsclf train --resume`"
    )


def test_no_model_yet(cli):
    r = cli("predict", FAKE)
    assert r.exit_code == 1
    assert r.stderr.strip() == (
        "Error: No trained model in models/: run `newsclf train --demo` or `newsclf models pull latest`"
    )


def test_predict_needs_input(cli, tiny_run):
    r = cli("predict", "--model", str(tiny_run))
    assert r.exit_code == 2
    assert "give TEXT arguments, --file FILE, or - to read stdin" in r.stderr


# -- evaluate --------------------------------------------------------------------------------------


def test_evaluate_matches_the_trainers_test_metrics(cli, tiny_run):
    r = cli("--json", "evaluate", "--model", str(tiny_run))
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    trained = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert data["split"] == "test" and data["examples"] == 32
    for key in ("accuracy", "macro_f1", "precision", "recall", "loss"):
        assert data[key] == pytest.approx(trained[key], abs=1e-4), key
    assert data["labels"] == ["fake", "real"]
    assert sum(map(sum, data["confusion_matrix"])) == 32
    assert {c: v["support"] for c, v in data["per_class"].items()} == {"fake": 16, "real": 16}


def test_evaluate_csv_with_plot(cli, tiny_run, tmp_path):
    rows = make_rows(20, seed=3)
    lines = ["text,label"] + [f"{t},{'real' if y else 'fake'}" for t, y in rows]
    (tmp_path / "eval.csv").write_text("\n".join(lines) + "\n")
    r = cli("evaluate", "--model", str(tiny_run), "--data", str(tmp_path / "eval.csv"), "--plot", "out/cm.png")
    assert r.exit_code == 0, r.stderr
    assert "true \\ predicted" in r.stdout and "macro-F1" in r.stdout and "Plot: out/cm.png" in r.stdout
    assert Path("out/cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_csv_without_label(cli, tiny_run, tmp_path):
    (tmp_path / "x.csv").write_text("text\nhello\n")
    r = cli("evaluate", "--model", str(tiny_run), "--data", str(tmp_path / "x.csv"))
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'x.csv'} has no column 'label' (found: text): give --data a CSV with text and label columns"
    )


def test_evaluate_another_split(cli, tiny_run, tiny_data):
    r = cli("--json", "evaluate", "--model", str(tiny_run), "--data", str(tiny_data), "--split", "validation")
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["split"] == "validation" and r.json["data"]["examples"] == 32
    bad = cli("evaluate", "--model", str(tiny_run), "--split", "dev")
    assert bad.exit_code == 2 and "--split must be one of train, validation, test, not 'dev'" in bad.stderr


# -- inputs that used to end as "unexpected" errors ----------------------------------------------


def test_csv_fields_over_128_kib(cli, tiny_run, tmp_path):
    """csv's default limit is 128 KiB a field; `data prepare` reads 12 MB articles, so predict and evaluate do too."""
    long_text = " ".join([REAL] * 4000)  # ~220 KB
    assert len(long_text) > 131072
    (tmp_path / "long.csv").write_text(f'text,label\n"{long_text}",real\n"{FAKE}",fake\n')
    r = cli("--json", "predict", "--model", str(tiny_run), "--file", str(tmp_path / "long.csv"))
    assert r.exit_code == 0, r.stderr
    assert [p["label"] for p in r.json["data"]["predictions"]] == ["real", "fake"]
    e = cli("--json", "evaluate", "--model", str(tiny_run), "--data", str(tmp_path / "long.csv"))
    assert e.exit_code == 0, e.stderr
    assert e.json["data"]["examples"] == 2
    import csv

    assert csv.field_size_limit() == 131072  # restored for everyone else


def test_latin1_csv_names_the_encoding_fix_like_data_prepare(cli, tiny_run, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"text,label\n{REAL} caf\xe9,real\n".encode("latin-1"))
    expected = (f"Error: {path} is not UTF-8 (invalid byte 0xe9 on line 2): re-save it as UTF-8, e.g. "
                f"`iconv -f latin1 -t utf-8 {path} > fixed.csv`")  # fmt: skip
    r = cli("evaluate", "--model", str(tiny_run), "--data", str(path))
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1] == expected
    p = cli("predict", "--model", str(tiny_run), "--file", str(path))
    assert p.exit_code == 1 and p.stderr.strip() == expected


def test_unwritable_plot_path_fails_before_evaluating(cli, tiny_run, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    plot = tmp_path / "a-file" / "cm.png"
    r = cli("--json", "evaluate", "--model", str(tiny_run), "--plot", str(plot))
    assert r.exit_code == 1
    assert r.json["errors"] == [f"Cannot write --plot {plot} (File exists): pick a folder you can write to"]
    assert r.stderr.strip() == f"Error: {r.json['errors'][0]}"
