"""Training samples/s: newsclf train (default settings: 128 tokens, dynamic padding, length-grouped
batches, bf16 autocast on AMX CPUs) vs the student project's recipe (a plain Trainer, every example
padded to 256, lr 2e-5, batch 16, fp32), same real rows and model; with achieved GFLOP/s.

Run by hand:  uv run python bench/train_throughput.py [--rows 160] [--rounds 2] [--isot DIR]
On a GPU:     python bench/train_throughput.py --device cuda --data PREPARED_DIR --rows 2345 --rounds 3
              (newsclf at --precision auto (TF32 on Ampere+), bf16 and fp32, at each --batch-sizes, and the baseline)
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
            _sync()
            if PROFILE_STEPS and self.steps == 2:
                self._prof = _profiler()
                self._prof.__enter__()
                self._prof_t = time.perf_counter()
            self._t, self._c = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            _sync()  # CUDA kernels run asynchronously: count a step once its work is done
            self.steps += 1
            if PROFILE_STEPS and self.steps == 2 + PROFILE_STEPS:
                wall = time.perf_counter() - self._prof_t
                self._prof.__exit__(None, None, None)
                _profile_report(self._prof, PROFILE_STEPS, wall)
            if self.steps == 1:  # warm-up: oneDNN builds its kernels for the first shapes
                return
            self.seconds += time.perf_counter() - self._t
            self.cpu_seconds += time.process_time() - self._c  # all threads: load-independent

    return StepTimer()


PROFILE_STEPS = 0  # --profile N: torch.profiler over steps 3..N+2 of each side


def _profiler():
    import torch
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else []))


def _profile_report(prof, steps: int, wall: float) -> None:
    """Per step: wall time, GPU kernel time, kernel launches; then the top ops by self CPU time."""
    averages = prof.key_averages()
    gpu_us = sum(getattr(a, "self_device_time_total", getattr(a, "self_cuda_time_total", 0)) for a in averages)
    launches = sum(a.count for a in averages if a.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                                                          "cuLaunchKernelEx"))  # fmt: skip
    print(f"  profile, {steps} steps: {1000 * wall / steps:.1f} ms wall per step, GPU kernels busy "
          f"{gpu_us / 1000 / steps:.1f} ms per step ({100 * gpu_us / 1e6 / wall:.0f}% of wall), "
          f"{launches / steps:.0f} kernel launches per step", flush=True)  # fmt: skip
    print(averages.table(sort_by="self_cpu_time_total", row_limit=8), flush=True)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def baseline(
    data_dir: Path, rows: int, model_path: str, seed: int, cpu: bool = True
) -> tuple[float, float, list[int], list[int]]:
    """The student recipe: pad to 256, fixed lr 2e-5, batch 16, plain random sampling, fp32."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from newsclf.data import load_processed

    train = load_processed(data_dir)["train"].shuffle(seed=seed).select(range(rows))
    tok = AutoTokenizer.from_pretrained(model_path)
    ds = train.map(lambda b: tok(b["text"], padding="max_length", truncation=True, max_length=256), batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, use_safetensors=True, dtype=torch.float32
    )
    timer = step_timer()
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, learning_rate=2e-5, per_device_train_batch_size=16, num_train_epochs=1,
            eval_strategy="no", save_strategy="no", report_to=[], use_cpu=cpu, disable_tqdm=True, seed=seed,
            logging_strategy="no",
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=ds.remove_columns(["text"]), callbacks=[timer])
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    useful = [sum(m) for m in ds["attention_mask"]]
    return timer.seconds, timer.cpu_seconds, [256] * (rows - 16), useful[16:]  # less the warm-up step


def newsclf_run(
    data_dir: Path,
    rows: int,
    model_path: str,
    seed: int,
    cpu: bool = True,
    precision: str = "auto",
    batch_size: int = 16,
) -> tuple[float, float, list[int], list[int]]:
    """`newsclf train` with its default settings on the same rows."""
    from transformers import AutoTokenizer

    from newsclf.data import load_processed
    from newsclf.train import TrainOptions, run_training

    timer = step_timer()
    with tempfile.TemporaryDirectory() as models:
        options = TrainOptions(
            data_dir=data_dir, models_dir=Path(models), base_model=model_path, epochs=1,
            max_train_samples=rows, max_eval_samples=16, seed=seed, cpu=cpu, precision=precision,
            batch_size=batch_size,
        )  # fmt: skip
        run_training(options, callbacks=[timer])
    train = load_processed(data_dir)["train"].shuffle(seed=seed).select(range(rows))
    lengths = [len(x) for x in AutoTokenizer.from_pretrained(model_path)(list(train["text"]), truncation=True,
                                                                          max_length=options.max_length)["input_ids"]]  # fmt: skip
    lengths = sorted(lengths)[:-batch_size]  # less the warm-up step: the length-grouped sampler starts with the longest
    return timer.seconds, timer.cpu_seconds, lengths, lengths  # length-grouped batches: padding is negligible


def flops(model_path: str, lengths: list[int]) -> float:
    """Training FLOPs for sequences of these lengths (see the module docstring)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    cfg = AutoConfig.from_pretrained(model_path)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_path, num_labels=2, use_safetensors=True, dtype=torch.float32
    )
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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where both sides train")
    parser.add_argument("--data", type=Path, help="an already prepared dataset dir (instead of preparing --isot)")
    parser.add_argument(
        "--batch-sizes", default="16", help="with --device cuda: newsclf batch sizes to run, e.g. 16,64"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="profile N steps of each side")
    parser.add_argument(
        "--precisions",
        default="auto,bf16,fp32",
        help="with --device cuda: newsclf --precision values; ratios are to the last",
    )
    parser.add_argument("--no-baseline", action="store_true", help="with --device cuda: skip the student-style side")
    parser.add_argument("--no-cudnn-sdp", action="store_true", help="with --device cuda: no cuDNN attention kernels")
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
    cpu = args.device == "cpu"
    if cpu:
        sides = {"newsclf train (defaults)": newsclf_run, "baseline Trainer (pad 256, fp32)": baseline}
    else:
        from functools import partial

        sides = {}
        for bs in map(int, args.batch_sizes.split(",")):
            for precision in args.precisions.split(","):
                sides[f"newsclf --precision {precision} bs {bs}"] = partial(
                    newsclf_run, cpu=False, precision=precision, batch_size=bs
                )
        if not args.no_baseline:
            sides["baseline Trainer (pad 256, fp32)"] = partial(baseline, cpu=False)
        if args.no_cudnn_sdp:  # the cuDNN attention kernels' CPU-side cost showed in the profile
            torch.backends.cuda.enable_cudnn_sdp(False)
    global PROFILE_STEPS
    PROFILE_STEPS = args.profile
    seconds = {k: 0.0 for k in sides}
    cpu_s = {k: 0.0 for k in sides}
    computed = {k: 0.0 for k in sides}
    useful = {k: 0.0 for k in sides}
    samples = {k: 0 for k in sides}
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or Path(tmp) / "processed"
        if args.data is None:
            prepare_dataset(Source.isot(args.isot / "Fake.csv", args.isot / "True.csv"), data_dir, seed=args.seed)
        for r in range(args.rounds):
            names = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in names:
                if args.profile:
                    print(f"{name}, round {r + 1}:", flush=True)
                s, c, lengths, real = sides[name](data_dir, args.rows, model_path, args.seed)
                seconds[name] += s
                cpu_s[name] += c
                samples[name] += len(lengths)  # the rows of the timed steps
                computed[name] += flops(model_path, lengths)
                useful[name] += flops(model_path, real)
    if not cpu:
        print(
            f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, transformers {transformers.__version__}"
        )
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), AMX bf16: {cpu_bf16_fast()}, "
          f"load average {load0:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    print(f"rows: {args.rounds} x {args.rows} real ISOT articles per side, model "
          f"{args.model or 'all-MiniLM-L6-v2 (packaged)'}")  # fmt: skip
    base = list(sides)[-1]  # the baseline (last side)
    for name in sides:
        rate = samples[name] / seconds[name]
        gf, gf_useful = computed[name] / seconds[name] / 1e9, useful[name] / seconds[name] / 1e9
        print(f"{name:34} {rate:6.2f} samples/s ({seconds[name]:.1f} s in steps), {gf:6.1f} GFLOP/s computed "
              f"({100 * gf / args.peak:.0f}% of {args.peak:.0f}), {gf_useful:6.1f} useful, "
              f"ratio {rate / (samples[base] / seconds[base]):.2f}")  # fmt: skip
        if not cpu:
            ref = (
                name.split(" --precision ")[0]
                + f" --precision {args.precisions.split(',')[-1]} bs "
                + name.split(" bs ")[-1]
            )
            if ref in sides:
                print(f"{'':34} ratio to {ref}: {rate / (samples[ref] / seconds[ref]):.2f}")
            continue
        # what an idle machine would give: FLOPs per CPU-second of the process, times the cores
        idle = computed[name] / cpu_s[name] * torch.get_num_threads() / 1e9
        print(f"{'':34} per CPU-second: {samples[name] / cpu_s[name]:.2f} samples, {computed[name] / cpu_s[name] / 1e9:.1f} "
              f"GFLOP; x {torch.get_num_threads()} cores = {idle:.1f} GFLOP/s ({100 * idle / args.peak:.0f}% of "
              f"{args.peak:.0f}) on an idle machine")  # fmt: skip


if __name__ == "__main__":
    main()
