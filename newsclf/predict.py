"""Inference: load a trained run once, classify many texts fast (length-sorted batches, dynamic padding)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from newsclf.errors import InputError
from newsclf.runs import RUN_CONFIG, check_run

log = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
MAX_POSITIONS = 512  # BERT-family limit when a run records no max_length
CHARS_PER_TOKEN = 8  # generous: English wordpieces average ~4-5 characters
CSV_FIELD_LIMIT = 1 << 30  # as `data prepare`: ISOT has 50k-character articles; csv's default is 128 KiB


@contextmanager
def csv_fields_up_to(limit: int = CSV_FIELD_LIMIT) -> Iterator[None]:
    """csv's process-wide field size limit raised while reading, then restored."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, limit))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def read_texts(source: str | Path, *, stdin: io.TextIOBase | None = None) -> list[str]:
    """Inputs from a file: .csv (a `text` column, optional `title`), .jsonl (objects with `text`,
    or strings), anything else one text per line; `-` reads lines from stdin."""
    from newsclf.data import article_text

    name = str(source)
    if name == "-":
        lines = (stdin or sys.stdin).read().splitlines()
        texts = [article_text(None, line) for line in lines if line.strip()]
        if not texts:
            raise InputError("stdin has no texts: pipe one text per line, e.g. `cat articles.txt | newsclf predict -`")
        return texts
    path = Path(source)
    if not path.is_file():
        raise InputError(f"{path} not found: pass an existing .txt, .csv or .jsonl file to --file")
    suffix = path.suffix.lower()
    from newsclf.data import _decode  # the same UTF-8 check and fix as `data prepare`

    raw = _decode(path, path.read_bytes())
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(raw, newline=""))
        try:
            with csv_fields_up_to():
                columns = reader.fieldnames or []
                if "text" not in columns:
                    raise InputError(
                        f"{path} has no column 'text' (found: {', '.join(columns) or 'none'}): "
                        "name the article column text (an optional title column is used too)"
                    )
                texts = [article_text(row.get("title"), row["text"] or "") for row in reader]
        except csv.Error as e:
            raise InputError(
                f"{path} line {reader.line_num}: unparseable CSV ({e}): fix the quoting on that line"
            ) from None
    elif suffix in (".jsonl", ".ndjson"):
        texts = []
        for i, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                raise InputError(f"{path} line {i} is not JSON: write one JSON object per line") from None
            if isinstance(obj, str):
                texts.append(article_text(None, obj))
            elif isinstance(obj, dict) and isinstance(obj.get("text"), str):
                texts.append(article_text(obj.get("title") or None, obj["text"]))
            else:
                raise InputError(f'{path} line {i} has no "text" string: write lines like {{"text": "..."}}')
    else:
        texts = [article_text(None, line) for line in raw.splitlines() if line.strip()]
    if not texts:
        raise InputError(f"{path} has no texts: give one article per line (or rows of a CSV/JSONL file)")
    return texts


def clean_texts(texts: Iterable[str]) -> list[str]:
    """Texts as the model saw them in training (whitespace normalised, known label leaks removed)."""
    from newsclf.data import article_text

    return [article_text(None, t) for t in texts]


def _max_length(run_dir: Path, tokenizer: Any, config: Any) -> int:
    try:
        length = int(json.loads((run_dir / RUN_CONFIG).read_text())["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        length = MAX_POSITIONS
    limits = [length, getattr(config, "max_position_embeddings", MAX_POSITIONS)]
    if 0 < getattr(tokenizer, "model_max_length", 0) < 100_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


class Predictor:
    """A trained classifier loaded once; `predict_proba` keeps the input order.

    precision (newsclf.precision.resolve_precision): auto = bf16 weights on CPUs with AMX (Sapphire Rapids
    and newer; 2.8x fp32 there, probabilities within ~0.03 and no label changed on 1,000 ISOT articles:
    bench/README.md), TF32 matmuls on Ampere+ GPUs (fp16 weights on older ones), else fp32. In fp32 a
    text's scores do not depend on what it is batched with; in bf16 they move slightly (~2e-4 in the
    tests) with the padding of its batch.
    """

    def __init__(
        self, run_dir: Path, *, device: str | None = None, max_length: int | None = None, precision: str = "auto"
    ):
        run_dir = Path(run_dir)
        check_run(run_dir)  # a missing tokenizer loads as a 5-token one and labels everything alike
        import torch
        from safetensors import SafetensorError
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from newsclf.precision import PRECISIONS, resolve_precision

        if precision not in PRECISIONS:
            raise InputError(
                f"--precision (or NEWSCLF_PRECISION) must be one of {', '.join(PRECISIONS)}, not {precision!r}"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.precision = resolve_precision(precision, self.device.type == "cuda")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(run_dir)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                run_dir, use_safetensors=True, dtype=torch.float32
            )
        except (OSError, ValueError, SafetensorError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise InputError(f"Cannot load the model in {run_dir} ({first}): pull or train it again, or pick "
                             "another with --model") from e  # fmt: skip
        self.run_dir = run_dir
        if self.precision in ("bf16", "fp16"):
            self.model.to(torch.bfloat16 if self.precision == "bf16" else torch.float16)
        elif self.device.type == "cuda":  # TF32 matmuls unless fp32 was asked for
            torch.set_float32_matmul_precision("high" if self.precision == "tf32" else "highest")
        self.model.to(self.device).eval()
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.max_length = max_length or _max_length(run_dir, self.tokenizer, config)

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
        """Class probabilities, shape (len(texts), num_labels), rows in input order."""
        import torch

        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        if not texts:
            return out
        enc = self._encode(list(texts))
        ids = enc["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch: less padding
        keys = [k for k in enc.keys()]
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                padded = self.tokenizer.pad({k: [enc[k][i] for i in idx] for k in keys}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in padded.items()}
                logits = self.model(**batch).logits.float()
                out[idx] = torch.softmax(logits, dim=-1).cpu().numpy()
        return out

    def _encode(self, texts: list[str]) -> Any:
        """Token ids as `tokenizer(texts, truncation=True)` gives them, without tokenizing whole articles.

        Only the first max_length tokens are kept, so each long text is cut at a space after
        CHARS_PER_TOKEN * max_length characters first (tokenizing the rest was ~60% of the tokenizer's
        time on ISOT, whose median article is ~2,200 characters); a cut text that comes out shorter
        than max_length tokens is tokenized again whole, so the ids never change.
        """
        limit = CHARS_PER_TOKEN * self.max_length
        cut = list(texts)
        for i, text in enumerate(texts):
            if len(text) > limit:
                space = text.rfind(" ", 0, limit)
                if space > 0:
                    cut[i] = text[:space]
        enc = self.tokenizer(cut, truncation=True, max_length=self.max_length)
        redo = [i for i, t in enumerate(cut) if t is not texts[i] and len(enc["input_ids"][i]) < self.max_length]
        if redo:
            again = self.tokenizer([texts[i] for i in redo], truncation=True, max_length=self.max_length)
            for k in enc.keys():
                for j, i in enumerate(redo):
                    enc[k][i] = again[k][j]
        return enc

    def predict(self, texts: Sequence[str], *, batch_size: int = DEFAULT_BATCH_SIZE) -> list[dict[str, Any]]:
        """One {"index", "label", "probability", "scores"} per text, in input order."""
        probs = self.predict_proba(texts, batch_size=batch_size)
        return [
            {
                "index": i,
                "label": self.labels[int(p.argmax())],
                "probability": round(float(p.max()), 6),
                "scores": {name: round(float(v), 6) for name, v in zip(self.labels, p)},
            }
            for i, p in enumerate(probs)
        ]


def predict_texts(
    run_dir: Path, texts: Iterable[str], *, batch_size: int = DEFAULT_BATCH_SIZE, precision: str = "auto"
) -> list[dict[str, Any]]:
    """Convenience: load the model in run_dir and classify texts."""
    return Predictor(run_dir, precision=precision).predict(list(texts), batch_size=batch_size)
