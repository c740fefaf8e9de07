"""Scoring: classification metrics in numpy, a trained model on a split or CSV, and plots."""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from newsclf.data import LABELS
from newsclf.errors import InputError

log = logging.getLogger(__name__)

SUMMARY_KEYS = ("accuracy", "macro_f1", "precision", "recall")


def confusion_matrix(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, num_labels: int = len(LABELS)
) -> np.ndarray:
    """counts[true, predicted]."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    return np.bincount(y * num_labels + p, minlength=num_labels * num_labels).reshape(num_labels, num_labels)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    # 0 where the denominator is 0 (a class never predicted / never present), like sklearn's zero_division=0
    return np.divide(num, den, out=np.zeros_like(num, dtype=np.float64), where=den > 0)


def classification_metrics(
    labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray, label_names: Sequence[str] = LABELS
) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix."""
    n = len(label_names)
    cm = confusion_matrix(labels, preds, n).astype(np.float64)
    tp = np.diag(cm)
    precision = _ratio(tp, cm.sum(axis=0))
    recall = _ratio(tp, cm.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    total = cm.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()),
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(cm[i].sum()),
            }
            for i, name in enumerate(label_names)
        },
        "confusion_matrix": cm.astype(np.int64).tolist(),
    }


def summary_metrics(labels: Sequence[int] | np.ndarray, preds: Sequence[int] | np.ndarray) -> dict[str, float]:
    """The four scalars the Trainer logs every epoch."""
    m = classification_metrics(labels, preds)
    return {k: m[k] for k in SUMMARY_KEYS}


def _label_id(value: str, where: str) -> int:
    v = value.strip().lower()
    if v in ("0", "fake"):
        return 0
    if v in ("1", "real", "true"):
        return 1
    raise InputError(f"{where}: label {value!r} is not fake/real or 0/1: fix the label column")


def read_labelled_csv(path: Path) -> tuple[list[str], list[int]]:
    """Texts and labels from a CSV with `text` and `label` columns (and an optional `title`)."""
    import io

    from newsclf.data import _decode, article_text  # _decode: the same UTF-8 check and fix as `data prepare`
    from newsclf.predict import csv_fields_up_to

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} not found: pass a prepared dataset directory or a CSV file to --data")
    reader = csv.DictReader(io.StringIO(_decode(path, path.read_bytes()), newline=""))
    texts, labels = [], []
    try:
        with csv_fields_up_to():
            columns = reader.fieldnames or []
            missing = [c for c in ("text", "label") if c not in columns]
            if missing:
                raise InputError(
                    f"{path} has no column {', '.join(map(repr, missing))} (found: {', '.join(columns) or 'none'}): "
                    "give --data a CSV with text and label columns"
                )
            for row in reader:
                texts.append(article_text(row.get("title"), row["text"] or ""))
                labels.append(_label_id(row["label"] or "", f"{path} line {reader.line_num}"))
    except csv.Error as e:
        raise InputError(
            f"{path} line {reader.line_num}: unparseable CSV ({e}): fix the quoting on that line"
        ) from None
    if not texts:
        raise InputError(f"{path} has no rows: give --data a CSV with text and label columns")
    return texts, labels


def read_split(data: Path, split: str = "test") -> tuple[list[str], list[int]]:
    """Texts and labels of one split of a prepared dataset directory, or of a labelled CSV file."""
    data = Path(data)
    if data.suffix.lower() == ".csv":
        return read_labelled_csv(data)
    import pyarrow.parquet as pq

    from newsclf.data import check_processed, split_path

    check_processed(data)
    table = pq.read_table(split_path(data, split), columns=["text", "label"])
    return table.column("text").to_pylist(), [int(x) for x in table.column("label").to_pylist()]


def default_data(run_dir: Path, fallback: Path) -> Path:
    """The dataset a run was trained on (run_config.json), else `fallback`."""
    try:
        dataset = json.loads((Path(run_dir) / "run_config.json").read_text()).get("dataset")
    except (OSError, ValueError):
        dataset = None
    if dataset and Path(dataset).is_dir():
        return Path(dataset)
    return Path(fallback)


def evaluate_model(
    run_dir: Path,
    data: Path,
    *,
    split: str = "test",
    batch_size: int = 32,
    predictor: Any = None,
    precision: str = "auto",
) -> dict[str, Any]:
    """Score the model in run_dir on `split` of a prepared dataset (or a labelled CSV)."""
    from newsclf.predict import Predictor

    texts, labels = read_split(data, split)
    predictor = predictor or Predictor(run_dir, precision=precision)
    probs = predictor.predict_proba(texts, batch_size=batch_size)
    preds = probs.argmax(axis=1)
    y = np.asarray(labels)
    loss = float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())
    metrics = classification_metrics(y, preds, predictor.labels)
    return {
        "model": str(run_dir),
        "run_id": Path(run_dir).resolve().name,
        "data": str(data),
        "split": None if Path(data).suffix.lower() == ".csv" else split,
        "examples": len(texts),
        **{k: metrics[k] for k in SUMMARY_KEYS},
        "loss": loss,
        "per_class": metrics["per_class"],
        "labels": list(predictor.labels),
        "confusion_matrix": metrics["confusion_matrix"],
    }


def _curves(trainer_state: Path) -> tuple[list, list, list]:
    """(train loss points, eval loss points, eval macro-F1 points) as (epoch, value) lists."""
    try:
        history = json.loads(Path(trainer_state).read_text()).get("log_history", [])
    except (OSError, ValueError):
        return [], [], []
    train = [(h["epoch"], h["loss"]) for h in history if "loss" in h and "epoch" in h]
    ev_loss = [(h["epoch"], h["eval_loss"]) for h in history if "eval_loss" in h]
    ev_f1 = [(h["epoch"], h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
    return train, ev_loss, ev_f1


def check_plot_path(out: Path) -> Path:
    """--plot's file name, checked before any work: a .png in a folder that exists or can be made, writable."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise InputError(f"--plot {out}: give a .png file name, e.g. --plot confusion.png")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(
            f"Cannot write --plot {out} ({e.strerror or type(e).__name__}): pick a folder you can write to"
        ) from None
    if out.is_dir():
        raise InputError(f"--plot {out} is a folder: give a .png file name, e.g. --plot {out / 'confusion.png'}")
    return out


def plot_evaluation(result: dict[str, Any], out: Path, trainer_state: Path | None = None) -> Path:
    """A PNG with the confusion matrix, plus loss and F1 per epoch when trainer_state has them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = check_plot_path(out)
    train, ev_loss, ev_f1 = _curves(trainer_state) if trainer_state else ([], [], [])
    panels = 1 + bool(train or ev_loss) + bool(ev_f1)
    fig, axes = plt.subplots(1, panels, figsize=(4.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    cm = np.asarray(result["confusion_matrix"])
    labels = result["labels"]
    ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")  # fmt: skip
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"accuracy {result['accuracy']:.3f}  macro-F1 {result['macro_f1']:.3f}")
    k = 1
    if train or ev_loss:
        ax = axes[0][k]
        k += 1
        if train:
            ax.plot(*zip(*train), label="train loss")
        if ev_loss:
            ax.plot(*zip(*ev_loss), marker="o", label="validation loss")
        ax.set_xlabel("epoch")
        ax.set_title("loss")
        ax.legend()
    if ev_f1:
        ax = axes[0][k]
        ax.plot(*zip(*ev_f1), marker="o")
        ax.set_xlabel("epoch")
        ax.set_title("validation macro-F1")
    fig.tight_layout()
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
        os.close(fd)
        fig.savefig(tmp, dpi=100)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o644 & ~mask)  # mkstemp made it 0600
        os.replace(tmp, out)
    except OSError as e:
        raise InputError(
            f"Cannot write --plot {out} ({e.strerror or type(e).__name__}): pick a folder you can write to"
        ) from None
    finally:
        plt.close(fig)
        if tmp:
            Path(tmp).unlink(missing_ok=True)
    return out
