"""Training samples/s: newsclf train (default settings: 128 tokens, dynamic padding, length-grouped
batches, bf16 autocast on AMX CPUs) vs the student project's recipe (a plain Trainer, every example
padded to 256, lr 2e-5, batch 16, fp32), same real rows and model; with achieved GFLOP/s.

Run by hand:  uv run python bench/train_throughput.py [--rows 160] [--rounds 2] [--isot DIR]
Only the time inside training steps is counted (no evaluation, no saving), on both sides, less each
run's first step (warm-up). The sides
alternate, round after round, so load from other jobs hits both alike.

FLOP model (per optimizer step, forward + backward = 3x forward): 6 * N_nonembedding * tokens
+ 12 * layers * hidden * sum(seq_len^2) for attention scores and mixing, where tokens are the
tokens each side actually computes on (the baseline computes on its padding too; the "useful" figure
counts only real tokens). Compare with ~190 GFLOP/s, the fp32 peak quoted for this class of 2-core
machine; bf16 on AMX has a far higher peak, so the fp32 percentage is a yardstick, not a bound.
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
            self.seconds, self.cpu_seconds, self.steps, self._t, self._c = 0.0, 0.0, 0, 0.0, 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            if self.steps == 1:  # warm-up: oneDNN builds its kernels for the first shapes
                return
            self.seconds += time.perf_counter() - self._t
            self.cpu_seconds += time.process_time() - self._c  # all threads: load-independent

    return StepTimer()


def baseline(data_dir: Path, rows: int, model_path: str, seed: int) -> tuple[float, float, list[int], list[int]]:
    """The student recipe: pad to 256, fixed lr 2e-5, batch 16, plain random sampling, fp32."""
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
    useful = [sum(m) for m in ds["attention_mask"]]
    return timer.seconds, timer.cpu_seconds, [256] * (rows - 16), useful[16:]  # less the warm-up step


def newsclf_run(data_dir: Path, rows: int, model_path: str, seed: int) -> tuple[float, float, list[int], list[int]]:
    """`newsclf train` with its default settings on the same rows."""
    from transformers import AutoTokenizer

    from newsclf.data import load_processed
    from newsclf.train import TrainOptions, run_training

    timer = step_timer()
    with tempfile.TemporaryDirectory() as models:
        options = TrainOptions(
            data_dir=data_dir, models_dir=Path(models), base_model=model_path, epochs=1,
            max_train_samples=rows, max_eval_samples=16, seed=seed, cpu=True,
        )  # fmt: skip
        run_training(options, callbacks=[timer])
    train = load_processed(data_dir)["train"].shuffle(seed=seed).select(range(rows))
    lengths = [len(x) for x in AutoTokenizer.from_pretrained(model_path)(list(train["text"]), truncation=True,
                                                                          max_length=options.max_length)["input_ids"]]  # fmt: skip
    lengths = sorted(lengths)[:-16]  # less the warm-up step: the length-grouped sampler starts with the longest
    return timer.seconds, timer.cpu_seconds, lengths, lengths  # length-grouped batches: padding is negligible


def flops(model_path: str, lengths: list[int]) -> float:
    """Training FLOPs for sequences of these lengths (see the module docstring)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2, use_safetensors=True)
    n = sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)
    return 6 * n * sum(lengths) + 12 * cfg.num_hidden_layers * cfg.hidden_size * sum(t * t for t in lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=160, help="training rows per side and round (10 steps of 16)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides")
    parser.add_argument("--isot", type=Path, default=ISOT, help="dir with the ISOT Fake.csv and True.csv")
    parser.add_argument("--model", default="", help="base model (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--peak", type=float, default=190.0, help="fp32 peak GFLOP/s to compare with")
    args = parser.parse_args()

    import datasets
    import torch
    import transformers

    from newsclf.data import Source, prepare_dataset
    from newsclf.train import cpu_bf16_fast, default_base_model

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    model_path = args.model or default_base_model()
    load0 = os.getloadavg()[0]
    sides = {"newsclf train (defaults)": newsclf_run, "baseline Trainer (pad 256, fp32)": baseline}
    seconds = {k: 0.0 for k in sides}
    cpu = {k: 0.0 for k in sides}
    computed = {k: 0.0 for k in sides}
    useful = {k: 0.0 for k in sides}
    samples = {k: 0 for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "processed"
        prepare_dataset(Source.isot(args.isot / "Fake.csv", args.isot / "True.csv"), data_dir, seed=args.seed)
        for r in range(args.rounds):
            names = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in names:
                s, c, lengths, real = sides[name](data_dir, args.rows, model_path, args.seed)
                seconds[name] += s
                cpu[name] += c
                samples[name] += len(lengths)  # the rows of the timed steps
                computed[name] += flops(model_path, lengths)
                useful[name] += flops(model_path, real)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), AMX bf16: {cpu_bf16_fast()}, "
          f"load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print(f"rows: {args.rounds} x {args.rows} real ISOT articles per side, model "
          f"{args.model or 'all-MiniLM-L6-v2 (packaged)'}")  # fmt: skip
    base = list(sides)[1]
    for name in sides:
        rate = samples[name] / seconds[name]
        gf, gf_useful = computed[name] / seconds[name] / 1e9, useful[name] / seconds[name] / 1e9
        print(f"{name:34} {rate:6.2f} samples/s ({seconds[name]:.1f} s in steps), {gf:6.1f} GFLOP/s computed "
              f"({100 * gf / args.peak:.0f}% of {args.peak:.0f}), {gf_useful:6.1f} useful, "
              f"ratio {rate / (samples[base] / seconds[base]):.2f}")  # fmt: skip
        # what an idle machine would give: FLOPs per CPU-second of the process, times the cores
        idle = computed[name] / cpu[name] * torch.get_num_threads() / 1e9
        print(f"{'':34} per CPU-second: {samples[name] / cpu[name]:.2f} samples, {computed[name] / cpu[name] / 1e9:.1f} "
              f"GFLOP; x {torch.get_num_threads()} cores = {idle:.1f} GFLOP/s ({100 * idle / args.peak:.0f}% of "
              f"{args.peak:.0f}) on an idle machine")  # fmt: skip


if __name__ == "__main__":
    main()
