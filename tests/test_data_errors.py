"""`newsclf data prepare` on bad input: one `Error:` line, exit 1, nothing written or replaced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_data import snapshot, tiny_pair, write_csv

# -- bad input: one line, exit 1, nothing written ---------------------------------------------------


def _bad_inputs(tmp: Path, isot_sample: Path) -> dict[str, tuple[list, str]]:
    fake, true = tiny_pair(tmp)
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "blank.csv").write_bytes(b"\n  \n")
    write_csv(tmp / "cols.csv", ["headline", "body", "subject", "date"], [["a", "b", "c", "d"]])
    (tmp / "latin1.csv").write_bytes(
        "title,text,subject,date\nok,fine,a,b\nbad,caf\u00e9 au lait,a,b\n".encode("latin-1")
    )
    (tmp / "quote.csv").write_text('title,text,subject,date\nok,fine,a,b\nbad,"never closed,a,b\nx,y,a,b\n')
    (tmp / "wide.csv").write_text("title,text,subject,date\nok,fine,a,b\nok,too,many,fields,here\n")
    (tmp / "header.csv").write_text("title,text,subject,date\n")
    write_csv(tmp / "onlyfake.csv", ["text", "label"], [[f"story {i}", "fake"] for i in range(9)])
    write_csv(tmp / "nolabel.csv", ["text", "label"], [["a story", "fake"], ["another", " "], ["more", ""]])
    (tmp / "bad.jsonl").write_text('{"text": "a", "label": "fake"}\n{"text": "b", "label": \n')
    isot = ["--fake", fake, "--true", true]
    return {
        "missing file": (["--fake", "nope.csv", "--true", true], "Input file nope.csv not found: check the --fake path"),
        "empty file": (["--fake", fake, "--true", "empty.csv"],
                       "Input file empty.csv is empty: pass a file with a header row and articles to --true"),
        "whitespace file": (["--input", "blank.csv"],
                            "Input file blank.csv is empty: pass a file with a header row and articles to --input"),
        "header only": (["--fake", "header.csv", "--true", true], "header.csv has a header but no rows: pass a file with articles in it"),
        "missing columns": (
            ["--fake", "cols.csv", "--true", true],
            "cols.csv has no columns 'title', 'text' (found: headline, body, subject, date): expected the ISOT "
            "layout title,text,subject,date (or use --input FILE --text-column NAME)",
        ),
        "missing input columns": (
            ["--input", "cols.csv", "--text-column", "body"],
            "cols.csv has no column 'label' (found: headline, body, subject, date): name the right one with "
            "--label-column NAME",
        ),
        "not utf-8": (
            ["--fake", "latin1.csv", "--true", true],
            "latin1.csv is not UTF-8 (invalid byte 0xe9 on line 3): re-save it as UTF-8, "
            "e.g. `iconv -f latin1 -t utf-8 latin1.csv > fixed.csv`",
        ),
        "unclosed quote": (["--fake", "quote.csv", "--true", true],
                           "quote.csv line 3: unparseable CSV (unexpected end of data): fix the quoting on that line"),
        "too many fields": (["--fake", "wide.csv", "--true", true],
                            "wide.csv line 3: unparseable CSV (5 fields, the header has 4): fix the quoting on that line"),
        "empty label": (["--input", "nolabel.csv"],
                        "nolabel.csv: 2 rows have an empty 'label' (first on line 3): fill in the labels or remove those rows"),
        "bad jsonl": (["--input", "bad.jsonl"],
                      "bad.jsonl line 2: not valid JSON (Expecting value): each line must be one JSON object"),
        "single class": (
            ["--input", "onlyfake.csv"],
            "Only fake articles are left after cleaning (0 real; dropped: none): both classes are needed; "
            "check the labels and --label-map",
        ),
        "same file twice": (
            ["--fake", fake, "--true", fake],
            "No articles are left after cleaning (conflicting labels 12): check the input files",
        ),
        "bad split": ([*isot, "--split", "0.9,0.2"], "Bad --split '0.9,0.2': give three positive train,validation,test "
                      "fractions that sum to 1, e.g. --split 0.8,0.1,0.1"),
        "bad label map": (["--input", "onlyfake.csv", "--label-map", "fake=bogus"],
                          "Bad --label-map target 'bogus' for 'fake': use fake, real, 0, 1 or drop, "
                          'e.g. --label-map "FAKE=fake,REAL=real"'),
        "two sources": ([*isot, "--demo"], "Pass only one of --fake/--true, --demo: use --fake Fake.csv --true True.csv, "
                        "--input FILE, or --demo"),
        "no source": ([], "No input given: use --fake Fake.csv --true True.csv, --input FILE, or --demo"),
        "half a pair": (["--fake", fake], "--fake and --true go together: add --true True.csv"),
    }  # fmt: skip


BAD = [
    "missing file", "empty file", "whitespace file", "header only", "missing columns", "missing input columns",
    "not utf-8", "unclosed quote", "too many fields", "empty label", "bad jsonl", "single class", "same file twice", "bad split",
    "bad label map", "two sources", "no source", "half a pair",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_input_one_line_exit_1_nothing_written(cli, isot_sample, tmp_path, case):
    args, message = _bad_inputs(tmp_path, isot_sample)[case]
    before = sorted(p.name for p in tmp_path.iterdir())
    r = cli("data", "prepare", *args, "--out", "out")
    assert r.exit_code == 1
    assert r.stderr == f"Error: {message}\n"
    assert r.stdout == ""
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temp dir either


def test_bad_input_json_document(cli, tmp_path):
    r = cli("--json", "data", "prepare", "--fake", "nope.csv", "--true", "nope2.csv", "--out", "out")
    assert r.exit_code == 1
    assert r.json["status"] == "error" and r.json["errors"] == ["Input file nope.csv not found: check the --fake path"]


def test_existing_out_dir_is_left_alone_without_force(cli, tmp_path):
    fake, true = tiny_pair(tmp_path)
    assert cli("data", "prepare", "--fake", fake, "--true", true, "--out", "o").exit_code == 0
    before = snapshot(tmp_path / "o")
    r = cli("data", "prepare", "--fake", fake, "--true", true, "--out", "o", "--seed", "3")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: Output directory o already exists: pass --force to replace it, or choose another --out DIR\n"
    )
    assert snapshot(tmp_path / "o") == before


def test_force_replaces_atomically(cli, tmp_path):
    fake, true = tiny_pair(tmp_path)
    assert cli("data", "prepare", "--fake", fake, "--true", true, "--out", "o").exit_code == 0
    old = snapshot(tmp_path / "o")
    r = cli("data", "prepare", "--fake", fake, "--true", true, "--out", "o", "--seed", "3", "--force")
    assert r.exit_code == 0, r.stderr
    new = snapshot(tmp_path / "o")
    assert set(new) == set(old) and new["manifest.json"] != old["manifest.json"]
    assert json.loads(new["manifest.json"])["options"]["seed"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Fake.csv", "True.csv", "o"]  # no tmp/old dirs left
    # a failing run with --force leaves the old dataset in place
    r = cli("data", "prepare", "--fake", fake, "--true", "nope.csv", "--out", "o", "--force")
    assert r.exit_code == 1 and snapshot(tmp_path / "o") == new


def test_force_will_not_replace_something_else(cli, tmp_path):
    fake, true = tiny_pair(tmp_path)
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.tex").write_text("keep me")
    r = cli("data", "prepare", "--fake", fake, "--true", true, "--out", "precious", "--force")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: precious is not a prepared dataset (no manifest.json), so --force will not replace it: "
        "choose another --out DIR\n"
    )
    assert (tmp_path / "precious" / "thesis.tex").read_text() == "keep me"
