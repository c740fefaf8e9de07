"""Training samples/s: newsclf (dynamic padding, length-grouped batches) vs the student project's
recipe (a plain Trainer, every example padded to 256, lr 2e-5, batch 16), same real rows and model.

Run by hand:  uv run python bench/train_throughput.py [--rows 160] [--isot DIR]
Only the time inside training steps is counted (no evaluation, no saving), on both sides.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ISOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "isot-sample"


def step_timer():
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Seconds spent inside optimizer steps, and how many examples they saw."""

        def __init__(self) -> None:
            self.seconds, self.steps, self._t = 0.0, 0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.seconds += time.perf_counter() - self._t
            self.steps += 1

    return StepTimer()


def baseline(data_dir: Path, rows: int, model_path: str, seed: int) -> tuple[float, int]:
    """The student recipe: pad to 256, fixed lr 2e-5, batch 16, plain random sampling."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from newsclf.data import load_processed

    train = load_processed(data_dir)["train"].shuffle(seed=seed).select(range(rows))
    tok = AutoTokenizer.from_pretrained(model_path)
    ds = train.map(lambda b: tok(b["text"], padding="max_length", truncation=True, max_length=256), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2, use_safetensors=True)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, learning_rate=2e-5, per_device_train_batch_size=16, num_train_epochs=1,
            eval_strategy="no", save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, seed=seed,
            logging_strategy="no",
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=ds.remove_columns(["text"]), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    return timer.seconds, rows


def newsclf_run(data_dir: Path, rows: int, model_path: str, seed: int) -> tuple[float, int, dict]:
    from newsclf.train import TrainOptions, run_training

    timer = step_timer()
    with tempfile.TemporaryDirectory() as models:
        options = TrainOptions(
            data_dir=data_dir, models_dir=Path(models), base_model=model_path, epochs=1, batch_size=16,
            max_length=256, max_train_samples=rows, max_eval_samples=16, seed=seed, cpu=True,
        )  # fmt: skip
        result = run_training(options, callbacks=[timer])
    return timer.seconds, rows, result.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160, help="training rows per side (10 steps of 16)")
    parser.add_argument("--isot", type=Path, default=ISOT, help="dir with the ISOT Fake.csv and True.csv")
    parser.add_argument("--model", default="", help="base model (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    import datasets
    import torch
    import transformers

    from newsclf.data import Source, prepare_dataset
    from newsclf.train import default_base_model

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    model_path = args.model or default_base_model()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "processed"
        prepare_dataset(Source.isot(args.isot / "Fake.csv", args.isot / "True.csv"), data_dir, seed=args.seed)
        ours_s, n, _ = newsclf_run(data_dir, args.rows, model_path, args.seed)
        base_s, _ = baseline(data_dir, args.rows, model_path, args.seed)
    ours, base = n / ours_s, n / base_s
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads)")  # fmt: skip
    print(f"rows: {n} real ISOT articles, model {args.model or 'all-MiniLM-L6-v2 (packaged)'}")
    print(f"newsclf train (dynamic padding, length-grouped): {ours:6.2f} samples/s ({ours_s:.1f} s in steps)")
    print(f"baseline Trainer (pad to 256, lr 2e-5, bs 16):   {base:6.2f} samples/s ({base_s:.1f} s in steps)")
    print(f"ratio newsclf / baseline: {ours / base:.2f}")


if __name__ == "__main__":
    main()
