"""Inference articles/s: newsclf predict (length-sorted batches, dynamic padding, inference_mode, the
run's max_length, the default precision: bf16 weights on CPUs with AMX; and with --precision fp32) vs
`transformers.pipeline("text-classification", batch_size=32)` truncating at 256 (the tokenizer's
maximum), same model and 1,000 real articles, with the macro-F1 of each. One more side, the pipeline
truncating at the run's max_length, shows how much of the gain is the shorter input alone.

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
    parser.add_argument("--chunks", type=int, default=4, help="interleave the sides over this many slices")
    parser.add_argument("--isot", type=Path, default=ISOT, help="dir with the ISOT Fake.csv and True.csv")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import numpy as np
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
    load0 = os.getloadavg()

    loads = {}
    t0 = time.perf_counter()
    ours = Predictor(run)  # the default: auto precision, the run's max_length, length-sorted batches
    loads["newsclf predict"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_fp32 = Predictor(run, precision="fp32")
    loads["newsclf predict --precision fp32"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pipe = pipeline("text-classification", model=str(run), tokenizer=str(run), batch_size=32, device=-1)
    loads["pipeline(batch_size=32)"] = time.perf_counter() - t0
    # the student project's call: truncate at 256 (or the tokenizer's maximum if lower)
    pipe_max = min(256, pipe.tokenizer.model_max_length)
    loads[f"pipeline, max_length {ours.max_length}"] = loads["pipeline(batch_size=32)"]
    label2id = {name: i for i, name in enumerate(ours.labels)}

    def piped(max_length: int):
        return lambda xs: [label2id[o["label"]] for o in pipe(xs, truncation=True, max_length=max_length)]

    sides = {
        "newsclf predict": lambda xs: list(ours.predict_proba(xs, batch_size=32).argmax(axis=1)),
        "newsclf predict --precision fp32": lambda xs: list(ours_fp32.predict_proba(xs, batch_size=32).argmax(axis=1)),
        f"pipeline, max_length {ours.max_length}": piped(ours.max_length),
        "pipeline(batch_size=32)": piped(pipe_max),
    }
    seconds = {k: 0.0 for k in sides}
    preds: dict[str, list[int]] = {k: [] for k in sides}
    # slices in turn, each side on each slice in rotated order: load from other jobs hits all sides alike
    bounds = np.linspace(0, len(texts), args.chunks + 1).astype(int)
    names = list(sides)
    for c in range(args.chunks):
        chunk = texts[bounds[c] : bounds[c + 1]]
        for name in names[c % len(names) :] + names[: c % len(names)]:
            t0 = time.perf_counter()
            out = sides[name](chunk)
            seconds[name] += time.perf_counter() - t0
            preds[name].extend(int(y) for y in out)
    n = len(texts)
    f1 = {k: classification_metrics(labels, v)["macro_f1"] for k, v in preds.items()}
    base = "pipeline(batch_size=32)"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"load average {load0[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print(f"model: {run} (trained at max_length {ours.max_length}; the pipeline truncates at {pipe_max}); "
          f"newsclf predict's default precision here: {ours.precision}; "
          f"{n} real ISOT articles in {args.chunks} interleaved slices")  # fmt: skip
    for k in sides:
        print(f"{k:34} {n / seconds[k]:7.1f} articles/s ({seconds[k]:.1f} s, load {loads[k]:.1f} s), "
              f"macro-F1 {f1[k]:.4f}, ratio {seconds[base] / seconds[k]:.2f}, "
              f"F1 change {100 * (f1[k] - f1[base]):+.2f} pt")  # fmt: skip


if __name__ == "__main__":
    main()
