"""Test helpers: a tiny random BERT, a WordPiece tokenizer built here, and small prepared datasets.

Nothing is downloaded. The corpus is synthetic but learnable (each class has its own words), so
a tiny model reaches high accuracy in seconds and tests can check that training did something.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAKE_WORDS = ["shocking", "unbelievable", "viral", "exposed", "hoax", "outrage", "secret", "destroyed",
              "insane", "watch", "caught", "furious"]  # fmt: skip
REAL_WORDS = ["said", "minister", "statement", "officials", "reported", "parliament", "agreement",
              "percent", "spokesman", "according", "committee", "quarter"]  # fmt: skip
COMMON_WORDS = ["the", "a", "of", "and", "in", "to", "government", "president", "people", "week", "on",
                "new", "city", "state", "report", "year", "is", "was", "for", "with"]  # fmt: skip


def vocab() -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces = [f"##{c}" for c in letters] + [str(d) for d in range(10)] + [".", ",", "!", "?", "-", "'", '"']
    return SPECIALS + COMMON_WORDS + FAKE_WORDS + REAL_WORDS + letters + pieces


def make_article(label: int, rng: random.Random, *, min_words: int = 8, max_words: int = 80) -> str:
    """A text whose label shows in its words (about a third of them are class words)."""
    own = REAL_WORDS if label == 1 else FAKE_WORDS
    n = rng.randint(min_words, max_words)
    words = [rng.choice(own) if rng.random() < 0.35 else rng.choice(COMMON_WORDS) for _ in range(n)]
    words[0] = rng.choice(own)
    return " ".join(words)


def make_rows(n: int, seed: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [(make_article(i % 2, rng), i % 2) for i in range(n)]


def write_dataset(out_dir: Path, *, n_train: int = 96, n_val: int = 32, n_test: int = 32, seed: int = 0) -> Path:
    """A prepared dataset in the contract layout (train/validation/test parquet + manifest.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for i, (split, n) in enumerate((("train", n_train), ("validation", n_val), ("test", n_test))):
        rows = make_rows(n, seed * 10 + i)
        table = pa.table(
            {"text": pa.array([t for t, _ in rows], pa.string()), "label": pa.array([y for _, y in rows], pa.int64())}
        )
        pq.write_table(table, out_dir / f"{split}.parquet")
        counts[split] = {"fake": sum(1 for _, y in rows if y == 0), "real": sum(1 for _, y in rows if y == 1)}
    manifest = {"format": "test", "source": "tests.tiny_model", "seed": seed, "splits": counts}
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out_dir


def build_tiny_model(out_dir: Path, *, seed: int = 0) -> Path:
    """A randomly initialised 2-layer BERT (hidden 32) plus its WordPiece tokenizer, saved to out_dir."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    out_dir = Path(out_dir)
    words = vocab()
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    BertModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of a tiny random BERT base model (built once per session)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """Path of a small learnable prepared dataset (96/32/32 rows)."""
    return write_dataset(tmp_path_factory.mktemp("tiny-data") / "processed")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_model, tiny_data) -> Path:
    """A finished training run of the tiny model (library API), shared by predict/evaluate tests."""
    from newsclf.train import TrainOptions, run_training

    models = tmp_path_factory.mktemp("tiny-run") / "models"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "disabled")
        mp.setenv("HF_HUB_OFFLINE", "1")
        opts = TrainOptions(
            data_dir=tiny_data, models_dir=models, base_model=str(tiny_model), epochs=4, batch_size=8,
            lr=3e-3, max_length=64, patience=4, warmup_ratio=0.0,
        )  # fmt: skip
        result = run_training(opts)
    return result.run_dir
