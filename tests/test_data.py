"""`newsclf data prepare`: the real ISOT rows in, clean stratified splits and a manifest out."""

from __future__ import annotations

import collections
import csv
import hashlib
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from newsclf.data import SPLITS

# Our own dateline pattern, independent of newsclf.data's: "LONDON/BEIJING (Reuters) - ",
# "By Name GENEVA (Reuters) — ", "(Reuters) -", "NEW YORK (IFR) -", "BEIJING - ".
DATELINE = re.compile(
    r"^[^()]{0,160}?\((?:Reuters|Thomson Reuters|IFR)[^()]{0,40}\)"  # agency datelines
    r"|^[A-Z][A-Z./ ]{2,}(?:, [A-Za-z ]+)? [-—–] "  # plain ones
)
CREDIT = re.compile(r"(?:Featured (?:image|photo)|Photo by|Image via|Getty Images|Image credit)", re.I)


def read_split(out: Path, split: str) -> list[dict]:
    return pq.read_table(out / f"{split}.parquet").to_pylist()


def read_all(out: Path) -> dict[str, list[dict]]:
    return {s: read_split(out, s) for s in SPLITS}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def tiny_pair(tmp: Path, n: int = 6) -> tuple[Path, Path]:
    """A small valid ISOT-layout pair (made-up sentences) for the error and --force tests."""
    fake = write_csv(
        tmp / "Fake.csv",
        ["title", "text", "subject", "date"],
        [[f"Shocking claim {i}", f"You will not believe story number {i}!", "News", "2017"] for i in range(n)],
    )
    true = write_csv(
        tmp / "True.csv",
        ["title", "text", "subject", "date"],
        [
            [f"Report {i}", f"WASHINGTON (Reuters) - Officials said item {i} was approved.", "politicsNews", "2017"]
            for i in range(n)
        ],  # fmt: skip
    )
    return fake, true


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())} if d.exists() else {}


@pytest.fixture(scope="module")
def sample_out(isot_sample, tmp_path_factory) -> Path:
    """The sample prepared once with default options, through the library."""
    from newsclf.data import Source, prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "processed"
    prepare_dataset(Source.isot(isot_sample / "Fake.csv", isot_sample / "True.csv"), out)
    return out


@pytest.fixture(scope="module")
def sample_body_only(isot_sample, tmp_path_factory) -> Path:
    from newsclf.data import Source, prepare_dataset

    out = tmp_path_factory.mktemp("prepared") / "body"
    prepare_dataset(Source.isot(isot_sample / "Fake.csv", isot_sample / "True.csv"), out, title=False)
    return out


# -- the happy path on the real rows ---------------------------------------------------------------


def test_prepare_sample_writes_splits_and_manifest(cli, isot_sample, tmp_path):
    r = cli("data", "prepare", "--fake", isot_sample / "Fake.csv", "--true", isot_sample / "True.csv", "--out", "ds")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "ds"
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json", "test.parquet", "train.parquet", "validation.parquet"
    ]  # fmt: skip
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]  # no temp dir left behind
    manifest = json.loads((out / "manifest.json").read_text())
    # inputs identified by content
    assert [(i["name"], i["role"], i["rows"]) for i in manifest["inputs"]] == [
        ("Fake.csv", "fake", 1500),
        ("True.csv", "real", 1500),
    ]
    for entry in manifest["inputs"]:
        assert entry["sha256"] == hashlib.sha256((isot_sample / entry["name"]).read_bytes()).hexdigest()
    assert manifest["options"]["seed"] == 42 and manifest["options"]["split"] == [0.8, 0.1, 0.1]
    assert manifest["rows_read"] == {"fake": 1500, "real": 1500, "total": 3000}
    # the sample's known defects: 40 blank Fake texts, 6 that are just a URL, some duplicates
    assert manifest["dropped"]["empty_text"] == 40
    assert manifest["dropped"]["url_only_text"] == 6
    assert manifest["dropped"]["duplicate"] > 0
    splits = read_all(out)
    for s in SPLITS:
        counts = collections.Counter(row["label"] for row in splits[s])
        assert manifest["splits"][s] == {"fake": counts[0], "real": counts[1], "total": len(splits[s])}
    assert manifest["rows_written"] == sum(len(v) for v in splits.values())
    assert manifest["rows_read"]["total"] - sum(manifest["dropped"].values()) == manifest["rows_written"]
    # the human summary on stdout
    assert "train" in r.stdout and "validation" in r.stdout and "Dropped: empty text 40" in r.stdout


def test_default_out_is_data_dir_processed(cli, tmp_path, monkeypatch):
    fake, true = tiny_pair(tmp_path)
    monkeypatch.setenv("NEWSCLF_DATA_DIR", str(tmp_path / "mydata"))
    r = cli("--quiet", "data", "prepare", "--fake", fake, "--true", true)
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "mydata" / "processed" / "manifest.json").is_file()


def test_columns_are_exactly_text_and_label(sample_out):
    """The subject column separates the classes perfectly: it must never reach the splits."""
    for s in SPLITS:
        schema = pq.read_schema(sample_out / f"{s}.parquet")
        assert schema.names == ["text", "label"]
        assert str(schema.field("text").type) == "string" and str(schema.field("label").type) == "int64"
    subjects = {"politicsNews", "worldnews", "left-news", "US_News", "Government News", "Middle-east"}
    manifest = json.loads((sample_out / "manifest.json").read_text())
    assert manifest["options"]["ignored_columns"] == ["subject", "date"]
    texts = [row["text"] for rows in read_all(sample_out).values() for row in rows]
    assert not [t for t in texts if any(s in t for s in subjects - {"worldnews"}) or " worldnews" in t]


def test_datelines_stripped_from_every_real_row(sample_body_only):
    splits = read_all(sample_body_only)
    texts = [row["text"] for rows in splits.values() for row in rows]
    assert len(texts) > 2900
    assert [t[:80] for t in texts if DATELINE.match(t)] == []
    assert [t[:200] for t in texts if "Reuters)" in t[:200]] == []
    # the Twitter preface and correction notes are gone too
    assert not [t for t in texts if t.startswith(("The following statements", "(This"))]
    manifest = json.loads((sample_body_only / "manifest.json").read_text())
    assert manifest["leaks_stripped"]["reuters_dateline"] >= 1480
    assert manifest["options"]["title"] is False


def test_reuters_not_near_the_start_with_titles(sample_out):
    texts = [row["text"] for rows in read_all(sample_out).values() for row in rows]
    assert [t[:300] for t in texts if "(Reuters)" in t[:300]] == []
    assert all("\n" in t for t in texts)  # title, newline, body


def test_image_credits_stripped_from_fake_rows(sample_body_only):
    fake = [row["text"] for rows in read_all(sample_body_only).values() for row in rows if row["label"] == 0]
    assert [t[-120:] for t in fake if CREDIT.search(t[-120:])] == []
    assert [t[-40:] for t in fake if t.endswith("Featured")] == []
    manifest = json.loads((sample_body_only / "manifest.json").read_text())
    assert manifest["leaks_stripped"]["image_credit"] > 500


def test_keep_leaks_keeps_them(cli, isot_sample, tmp_path):
    r = cli("data", "prepare", "--fake", isot_sample / "Fake.csv", "--true", isot_sample / "True.csv",
            "--keep-leaks", "--no-title", "--out", "raw")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    real = [row["text"] for rows in read_all(tmp_path / "raw").values() for row in rows if row["label"] == 1]
    assert sum(bool(DATELINE.match(t)) for t in real) > 1400  # the check above is not vacuous
    assert json.loads((tmp_path / "raw" / "manifest.json").read_text())["options"]["strip_leaks"] is False


def test_whitespace_normalised(sample_out):
    for rows in read_all(sample_out).values():
        for row in rows:
            t = row["text"]
            title, _, body = t.partition("\n")
            assert body and body == " ".join(body.split()) and title == " ".join(title.split())


def test_no_duplicates_and_no_text_in_two_splits(sample_out):
    splits = read_all(sample_out)
    keys = [row["text"].casefold() for rows in splits.values() for row in rows]
    assert len(keys) == len(set(keys))


def test_stratified_split(sample_out):
    splits = read_all(sample_out)
    total = [row["label"] for rows in splits.values() for row in rows]
    overall = sum(total) / len(total)
    sizes = {s: len(splits[s]) / len(total) for s in SPLITS}
    assert sizes["train"] == pytest.approx(0.8, abs=0.01)
    assert sizes["validation"] == pytest.approx(0.1, abs=0.01) and sizes["test"] == pytest.approx(0.1, abs=0.01)
    for s in SPLITS:
        share = sum(row["label"] for row in splits[s]) / len(splits[s])
        assert abs(share - overall) < 0.015, (s, share, overall)
        assert splits[s][:50] != sorted(splits[s][:50], key=lambda r: r["label"])  # classes interleaved


def test_same_seed_same_bytes_other_seed_other_split(cli, isot_sample, tmp_path):
    args = ["data", "prepare", "--fake", isot_sample / "Fake.csv", "--true", isot_sample / "True.csv"]
    assert cli(*args, "--out", "a").exit_code == 0
    assert cli(*args, "--out", "b").exit_code == 0
    assert cli(*args, "--out", "c", "--seed", "7").exit_code == 0
    a, b, c = (snapshot(tmp_path / d) for d in "abc")
    assert a == b and len(a) == 4
    assert c["train.parquet"] != a["train.parquet"]
    ma, mc = json.loads(a["manifest.json"]), json.loads(c["manifest.json"])
    assert mc["options"]["seed"] == 7 and mc["splits"] == ma["splits"]


def test_split_option(cli, isot_sample, tmp_path):
    r = cli("--json", "data", "prepare", "--fake", isot_sample / "Fake.csv", "--true", isot_sample / "True.csv",
            "--split", "0.6,0.2,0.2", "--out", "s")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    splits = r.json["data"]["splits"]
    total = sum(v["total"] for v in splits.values())
    assert splits["validation"]["total"] / total == pytest.approx(0.2, abs=0.01)
    assert splits["train"]["total"] / total == pytest.approx(0.6, abs=0.01)


def test_json_counts_equal_manifest(cli, isot_sample, tmp_path):
    r = cli("data", "prepare", "--json", "--fake", isot_sample / "Fake.csv", "--true", isot_sample / "True.csv",
            "--out", "j")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = r.json
    assert doc["status"] == "ok" and doc["command"] == "data prepare"
    manifest_bytes = (tmp_path / "j" / "manifest.json").read_bytes()
    manifest = json.loads(manifest_bytes)
    data = doc["data"]
    for key in ("rows_read", "dropped", "leaks_stripped", "splits", "rows_written"):
        assert data[key] == manifest[key], key
    assert data["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert data["out_dir"] == "j"


def test_library_does_not_print(isot_sample, tmp_path, capsys):
    from newsclf.data import PrepareResult, Source, prepare_dataset

    result = prepare_dataset(Source.isot(isot_sample / "Fake.csv", isot_sample / "True.csv"), tmp_path / "lib")
    out, err = capsys.readouterr()
    assert (out, err) == ("", "")
    assert isinstance(result, PrepareResult) and result.splits["train"]["total"] > 2000


def test_load_processed_reads_the_splits(sample_out):
    from newsclf.data import load_processed

    ds = load_processed(sample_out)
    assert set(ds) == set(SPLITS)
    assert ds["train"].column_names == ["text", "label"]
    assert set(ds["test"]["label"]) == {0, 1}


# -- --input: one CSV or JSONL file with any column names --------------------------------------------


def sample_rows(isot_sample: Path, name: str) -> list[dict]:
    with open(isot_sample / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_input_csv_custom_columns_and_label_map(cli, isot_sample, tmp_path):
    fake, true = sample_rows(isot_sample, "Fake.csv")[:200], sample_rows(isot_sample, "True.csv")[:200]
    rows = [[r["title"], r["text"], "FAKE"] for r in fake] + [[r["title"], r["text"], "REAL"] for r in true]
    write_csv(tmp_path / "news.csv", ["headline", "body", "verdict"], rows)
    r = cli("--json", "data", "prepare", "--input", "news.csv", "--text-column", "body", "--title-column",
            "headline", "--label-column", "verdict", "--label-map", "FAKE=fake,REAL=real", "--out", "o")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert data["rows_read"] == {"fake": 200, "real": 200, "total": 400}
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["options"]["label_map"] == {"fake": "fake", "real": "real"}
    assert manifest["options"]["title_column"] == "headline"
    texts = {row["text"].split("\n", 1)[0]: row["label"] for rows in read_all(tmp_path / "o").values() for row in rows}
    assert texts[" ".join(true[0]["title"].split())] == 1
    assert texts[" ".join(fake[1]["title"].split())] == 0


def test_input_jsonl_numeric_labels_reversed(cli, isot_sample, tmp_path):
    """Kaggle's fake-news competition uses 1 = unreliable: --label-map says so."""
    fake, true = sample_rows(isot_sample, "Fake.csv")[:150], sample_rows(isot_sample, "True.csv")[:150]
    with open(tmp_path / "news.jsonl", "w", encoding="utf-8") as f:
        for row, y in [(r, 1) for r in fake] + [(r, 0) for r in true]:
            f.write(json.dumps({"id": len(row["text"]), "content": row["text"], "is_fake": y}) + "\n")
    r = cli("--json", "data", "prepare", "--input", "news.jsonl", "--text-column", "content",
            "--label-column", "is_fake", "--label-map", "1=fake,0=real", "--out", "o")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert data["rows_read"] == {"fake": 150, "real": 150, "total": 300}
    real = [row["text"] for rows in read_all(tmp_path / "o").values() for row in rows if row["label"] == 1]
    assert real and not any("\n" in t for t in real)  # no title column: body only
    assert sum(1 for t in real if "Reuters" in t) > 0 and not [t for t in real if DATELINE.match(t)]


def test_input_default_label_map_and_drop(cli, tmp_path):
    rows = [[f"Wire story {i} said officials.", "REAL"] for i in range(5)]
    rows += [[f"Unbelievable claim {i}!!", "fake"] for i in range(5)]
    rows += [["A satirical piece.", "satire"], ["Another satire.", "Satire"]]
    write_csv(tmp_path / "n.csv", ["text", "label"], rows)
    r = cli("data", "prepare", "--input", "n.csv", "--out", "o")
    assert r.exit_code == 1
    assert r.stderr == (
        "Error: n.csv: label 'satire' (2 rows, first on line 12) is not in the label map "
        "{fake=fake, real=real, 0=fake, 1=real}: map it to fake, real or drop, "
        'e.g. --label-map "fake=fake,real=real,satire=drop"\n'
    )
    r = cli("--json", "data", "prepare", "--input", "n.csv", "--out", "o",
            "--label-map", "fake=fake,real=real,SATIRE=drop")  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert r.json["data"]["dropped"]["label_dropped"] == 2
    assert r.json["data"]["rows_written"] == 10


def test_drops_empty_url_only_duplicates_and_conflicts(cli, tmp_path):
    rows = [[f"Article number {i} about the budget.", "fake" if i % 2 else "real"] for i in range(12)]
    rows += [
        ["   ", "fake"],  # whitespace only
        ["", "real"],  # empty
        ["https://example.com/a-story", "fake"],  # URL only
        ["http://a.example/x  https://b.example/y", "real"],
        ["article   number 1 about the budget.", "fake"],  # same text (case/space) and label: a duplicate
        ["Both sides  claim this one.", "fake"],
        ["Both sides claim this one.", "real"],  # under both labels: every copy goes
        ["both sides claim this one.", "real"],
    ]
    write_csv(tmp_path / "n.csv", ["text", "label"], rows)
    r = cli("--json", "data", "prepare", "--input", "n.csv", "--out", "o")
    assert r.exit_code == 0, r.stderr
    d = r.json["data"]["dropped"]
    assert (d["empty_text"], d["url_only_text"], d["duplicate"], d["conflicting_labels"]) == (2, 2, 1, 3)
    texts = [row["text"] for rows in read_all(tmp_path / "o").values() for row in rows]
    assert len(texts) == 12 and not [t for t in texts if "both sides" in t.lower()]


def test_control_characters_are_stripped(cli, tmp_path):
    """NUL (binary junk pasted into a CSV), ESC and DEL leave no trace in the text, nor in predict's input."""
    from newsclf.data import article_text

    rows = [[f"Wire\x00 story {i}", f"Officials\x00 said \x1b[1mitem\x7f {i}\x00\x00 was approved.", "real"]
            for i in range(5)]  # fmt: skip
    rows += [[f"Claim {i}", f"You will\x00not believe \x00 story {i}!", "fake"] for i in range(5)]
    write_csv(tmp_path / "n.csv", ["title", "text", "label"], rows)
    r = cli("--json", "data", "prepare", "--input", "n.csv", "--out", "o")
    assert r.exit_code == 0, r.stderr
    texts = sorted(row["text"] for rows in read_all(tmp_path / "o").values() for row in rows)
    assert not [t for t in texts if re.search(r"[\x00-\x08\x0e-\x1f\x7f]", t)]
    assert "Wire story 0\nOfficials said [1mitem 0 was approved." in texts  # the text around them stays
    assert "Claim 0\nYou willnot believe story 0!" in texts
    assert article_text("Wire\x00 story 0", "Officials\x00 said \x1b[1mitem\x7f 0\x00\x00 was approved.") == (
        "Wire story 0\nOfficials said [1mitem 0 was approved."
    )


# -- leak stripping, unit by unit (patterns seen in the real rows) ----------------------------------


@pytest.mark.parametrize(
    "raw, body, kinds",
    [
        ("WASHINGTON (Reuters) - The U.S. Senate voted.", "The U.S. Senate voted.", ["reuters_dateline"]),
        ("LONDON/BEIJING (Reuters) - Talks resumed.", "Talks resumed.", ["reuters_dateline"]),
        ("WASHINGTON (Reuters) — Talks resumed.", "Talks resumed.", ["reuters_dateline"]),
        ("(Reuters) - Shares rose.", "Shares rose.", ["reuters_dateline"]),
        ("KITCHANGA, Democratic Republic of Congo (Reuters) - Rebels left.", "Rebels left.", ["reuters_dateline"]),
        ("WASHINGTON (Reuters on Friday ) - Mueller unveiled evidence.", "Mueller unveiled evidence.",
         ["reuters_dateline"]),
        ("NEW YORK (IFR) - Kushner divested.", "Kushner divested.", ["reuters_dateline"]),
        ("LONDON (Thomson Reuters Foundation) - Homes could help.", "Homes could help.", ["reuters_dateline"]),
        ("(This Nov. 24 story has been refiled to correct paragraph eight) By Jane Doe GENEVA (Reuters) - "
         "Aid arrived.", "Aid arrived.", ["correction_note", "reuters_dateline"]),
        ("BEIJING - China will expand a pilot.", "China will expand a pilot.", ["dateline"]),
        ("CHARLOTTE, North Carolina - A promise.", "A promise.", ["dateline"]),
        ("The following statements were posted to the verified Twitter accounts of U.S. President Donald Trump, "
         "@realDonaldTrump and @POTUS. The opinions expressed are his own. Reuters has not edited the statements "
         "or confirmed their accuracy. @realDonaldTrump : - Great day!", "@realDonaldTrump : - Great day!",
         ["twitter_boilerplate"]),
        ("He lost.Featured image via Chip Somodevilla/Getty Images", "He lost.", ["image_credit"]),
        ("He lost. Photo by Win McNamee via Getty Images.", "He lost.", ["image_credit"]),
        ("He lost.Featured Image: Wikimedia", "He lost.", ["image_credit"]),
        ("He lost. pic.twitter.com/x (@Someone) May 12, 2017Featured", "He lost. pic.twitter.com/x (@Someone) May 12, 2017",
         ["image_credit"]),
        ("He lost.Image credit: Wikipedia", "He lost.", ["image_credit"]),
        ("They left. Via: Breitbart News", "They left.", ["source_credit"]),
        ("They left. Via: Daily CallerFeatured image via Flickr", "They left.", ["image_credit", "source_credit"]),
        ("War again.READ MORE SYRIA NEWS AT: 21st Century Wire Syria FilesSUPPORT OUR WORK BY SUBSCRIBING & "
         "BECOMING A MEMBER @21WIRE.TV", "War again.", ["source_credit"]),
        ("BREAKING - They did it again!", "BREAKING - They did it again!", []),  # a style cue, not a dateline
        ("Trump also featured on the front page.", "Trump also featured on the front page.", []),
    ],
)  # fmt: skip
def test_strip_leaks(raw, body, kinds):
    from newsclf.data import strip_leaks

    assert strip_leaks(raw) == (body, kinds)


def test_article_text_matches_prepare(sample_out, isot_sample):
    """predict/evaluate build their inputs with article_text: it must equal what training saw."""
    from newsclf.data import article_text

    true = sample_rows(isot_sample, "True.csv")
    texts = {row["text"] for rows in read_all(sample_out).values() for row in rows}
    built = [article_text(r["title"], r["text"]) for r in true[:50]]
    assert sum(t in texts for t in built) >= 48  # a few are duplicates dropped from the splits
