"""Inference articles/s: newsclf predict (length-sorted batches, dynamic padding, inference_mode) vs
`transformers.pipeline("text-classification", batch_size=32)`, same model and 1,000 real articles,
with the macro-F1 of both.

Run by hand after training a model:  uv run python bench/predict_throughput.py [--model latest] [--n 1000]
Model loading is timed separately; the rates count classification only.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ISOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "isot-sample"


def articles(isot: Path, n: int, seed: int) -> tuple[list[str], list[int]]:
    """n real ISOT articles (title + body, cleaned exactly as for training), both classes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from newsclf.data import SPLITS, Source, prepare_dataset, split_path

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "processed"
        prepare_dataset(Source.isot(isot / "Fake.csv", isot / "True.csv"), out, seed=seed)
        # test and validation first: rows the model has not trained on come first
        table = pa.concat_tables([pq.read_table(split_path(out, s)) for s in reversed(SPLITS)])
    texts, labels = table.column("text").to_pylist()[:n], table.column("label").to_pylist()[:n]
    return texts, [int(y) for y in labels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="latest", help="run id, run directory or latest (in ./models)")
    parser.add_argument("--n", type=int, default=1000, help="articles")
    parser.add_argument("--isot", type=Path, default=ISOT, help="dir with the ISOT Fake.csv and True.csv")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import torch
    import transformers
    from transformers import pipeline

    from newsclf.evaluate import classification_metrics
    from newsclf.predict import Predictor
    from newsclf.runs import resolve_run

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    run = resolve_run(Path("models"), args.model)
    texts, labels = articles(args.isot, args.n, args.seed)

    t0 = time.perf_counter()
    predictor = Predictor(run)
    load_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = predictor.predict_proba(texts, batch_size=32)
    ours_s = time.perf_counter() - t0
    ours_f1 = classification_metrics(labels, probs.argmax(axis=1))["macro_f1"]

    t0 = time.perf_counter()
    pipe = pipeline("text-classification", model=str(run), tokenizer=str(run), batch_size=32, device=-1)
    load_pipe = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = pipe(texts, truncation=True, max_length=predictor.max_length)
    pipe_s = time.perf_counter() - t0
    label2id = {name: i for i, name in enumerate(predictor.labels)}
    pipe_f1 = classification_metrics(labels, [label2id[o["label"]] for o in out])["macro_f1"]

    n = len(texts)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"model: {run} (max_length {predictor.max_length}); {n} real ISOT articles")
    print(f"newsclf predict:           {n / ours_s:7.1f} articles/s ({ours_s:.1f} s, load {load_ours:.1f} s), "
          f"macro-F1 {ours_f1:.4f}")  # fmt: skip
    print(f"pipeline(batch_size=32):   {n / pipe_s:7.1f} articles/s ({pipe_s:.1f} s, load {load_pipe:.1f} s), "
          f"macro-F1 {pipe_f1:.4f}")  # fmt: skip
    print(f"ratio newsclf / pipeline: {pipe_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
