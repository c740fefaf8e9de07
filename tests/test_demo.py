"""The built-in demo corpus (newsclf/demo.py): offline, deterministic, learnable but not trivial."""

from __future__ import annotations

import collections
import json
import math
import re

import pytest

from newsclf.data import LABELS
from tests.test_data import read_all, sample_rows, snapshot


def test_demo_prepares_offline_in_seconds(cli, tmp_path):
    import time

    t = time.perf_counter()
    r = cli("--json", "data", "prepare", "--demo", "--out", "demo")
    assert time.perf_counter() - t < 10
    assert r.exit_code == 0, r.stderr
    data = r.json["data"]
    assert 400 <= data["rows_written"] <= 600
    assert data["splits"]["test"]["fake"] > 10 and data["splits"]["test"]["real"] > 10
    manifest = json.loads((tmp_path / "demo" / "manifest.json").read_text())
    assert manifest["source"] == "demo" and manifest["inputs"][0]["name"] == "newsclf-demo"
    bodies = [row["text"].split("\n", 1)[1] for rows in read_all(tmp_path / "demo").values() for row in rows]
    words = [len(b.split()) for b in bodies]
    assert min(words) >= 40 and max(words) <= 120


def test_demo_help_says_it_is_for_trying(cli):
    r = cli("data", "prepare", "--help")
    assert r.exit_code == 0
    assert "for trying the tool" in " ".join(r.stdout.split())


def test_prepare_demo_contract_is_deterministic(tmp_path):
    from newsclf.data import PrepareResult
    from newsclf.demo import prepare_demo

    a = prepare_demo(tmp_path / "a")
    b = prepare_demo(tmp_path / "b", seed=42)
    assert isinstance(a, PrepareResult) and a.out_dir == tmp_path / "a"
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    with pytest.raises(Exception, match="already exists"):
        prepare_demo(tmp_path / "a")
    c = prepare_demo(tmp_path / "a", seed=1, force=True)
    assert c.manifest["options"]["seed"] == 1 and b.manifest["inputs"] == c.manifest["inputs"]


def test_demo_is_learnable_but_not_trivial(tmp_path):
    """A bag-of-words naive Bayes learns the demo well, but not perfectly (shared vocabulary, noise)."""
    from newsclf.demo import prepare_demo

    prepare_demo(tmp_path / "d")
    splits = read_all(tmp_path / "d")

    def tokens(t: str) -> list[str]:
        return re.findall(r"[a-z']+", t.lower())

    counts = {0: collections.Counter(), 1: collections.Counter()}
    for row in splits["train"]:
        counts[row["label"]].update(tokens(row["text"]))
    vocab = set(counts[0]) | set(counts[1])
    totals = {c: sum(counts[c].values()) for c in counts}
    held_out = splits["validation"] + splits["test"]
    correct = 0
    for row in held_out:
        score = {c: sum(math.log((counts[c][w] + 1) / (totals[c] + len(vocab))) for w in tokens(row["text"]))
                 for c in counts}  # fmt: skip
        correct += max(score, key=score.get) == row["label"]
    accuracy = correct / len(held_out)
    assert 0.75 < accuracy < 0.995, accuracy
    shared = {w for w in vocab if counts[0][w] >= 5 and counts[1][w] >= 5}
    assert {"inflation", "officials", "vote"} & shared  # same topics in both classes
    assert LABELS == ("fake", "real")


def test_demo_text_is_generated_not_copied(isot_sample):
    """No demo article shares a 12-word run with the real rows (stock phrases like "did not respond to
    a request for comment" are shorter)."""
    from newsclf.demo import generate_articles

    demo = set()
    for _, text, _ in generate_articles():
        words = text.split()
        demo.update(tuple(words[i : i + 12]) for i in range(len(words) - 11))
    real = " ".join(r["text"] for name in ("Fake.csv", "True.csv") for r in sample_rows(isot_sample, name)).split()
    assert not [" ".join(real[i : i + 12]) for i in range(len(real) - 11) if tuple(real[i : i + 12]) in demo]
