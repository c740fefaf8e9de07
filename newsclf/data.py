"""Datasets: the processed layout every command shares (prepare itself is added below)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from newsclf.errors import InputError

if TYPE_CHECKING:
    from datasets import DatasetDict

LABELS = ("fake", "real")  # label id 0 = fake, 1 = real
SPLITS = ("train", "validation", "test")
MANIFEST = "manifest.json"


def split_path(processed_dir: Path, split: str) -> Path:
    return Path(processed_dir) / f"{split}.parquet"


def manifest_hash(processed_dir: Path) -> str:
    """sha256 of manifest.json: identifies the exact prepared dataset a model was trained on."""
    return hashlib.sha256((Path(processed_dir) / MANIFEST).read_bytes()).hexdigest()


def read_manifest(processed_dir: Path) -> dict:
    return json.loads((Path(processed_dir) / MANIFEST).read_text())


def check_processed(processed_dir: Path) -> None:
    """Raise one actionable error if processed_dir is not a prepared dataset."""
    missing = [s for s in SPLITS if not split_path(processed_dir, s).is_file()]
    if not (Path(processed_dir) / MANIFEST).is_file():
        missing.append(MANIFEST)
    if missing:
        raise InputError(
            f"No prepared dataset in {processed_dir}/ (missing {', '.join(missing)}): run "
            "`newsclf data prepare --fake Fake.csv --true True.csv`, `newsclf data pull`, "
            "or try `newsclf train --demo`"
        )


def load_processed(processed_dir: Path) -> "DatasetDict":
    """The train/validation/test splits as a datasets.DatasetDict with columns text, label."""
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    check_processed(processed_dir)
    # in memory, straight from parquet: no copy into the datasets cache
    return DatasetDict({s: Dataset(pq.read_table(split_path(processed_dir, s))) for s in SPLITS})
