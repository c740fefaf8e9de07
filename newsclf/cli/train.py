"""`newsclf train`, `newsclf evaluate`, `newsclf predict`: fine-tune, score and use a classifier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from newsclf.cli import _output

# cli/_sweep.py imports _progress_callback and _quiet_libraries from here (until the Batch sweep rework)
from newsclf.cli._progress import fmt as _fmt
from newsclf.cli._progress import progress_callback as _progress_callback
from newsclf.cli._progress import quiet_libraries as _quiet_libraries
from newsclf.errors import InputError, NewsclfError

SPLITS = ("train", "validation", "test")
# flags that define a run: fixed once it started, so --resume refuses them
RUN_FLAGS = ("data", "demo", "model", "epochs", "batch_size", "lr", "weight_decay", "warmup_ratio",
             "max_length", "patience", "seed", "max_train_samples", "keep_checkpoints", "attention_dropout")  # fmt: skip


INFERENCE_PRECISION_HELP = (
    "Number format of the weights (default: NEWSCLF_PRECISION or auto = TF32 on Ampere+ GPUs, fp16 "
    "on older ones, bf16 on CPUs with AMX, else fp32; fp32 scores do not depend on batching)."
)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


# -- rendering -------------------------------------------------------------------------------------


def _render_train(data: dict[str, Any]):  # noqa: ANN202
    def render(console: Any) -> None:
        from rich.table import Table

        m = data["metrics"]
        table = Table("", "epoch", "accuracy", "macro-F1", "precision", "recall", "loss", box=None,
                      title=f"run {data['run_id']}", title_justify="left")  # fmt: skip
        best = m.get("best_validation", {}).get("epoch")
        for row in m.get("validation", []):
            mark = "validation*" if row["epoch"] == best else "validation"
            table.add_row(mark, f"{row['epoch']:g}", *(_fmt(row.get(k)) for k in ("accuracy", "macro_f1",
                          "precision", "recall", "loss")))  # fmt: skip
        t = m.get("test", {})
        table.add_row("[bold]test[/bold]", "best", *(_fmt(t.get(k)) for k in ("accuracy", "macro_f1", "precision",
                      "recall", "loss")))  # fmt: skip
        console.print(table)
        tr = m.get("train", {})
        console.print(
            f"{tr.get('epochs_completed', 0):g} epochs in {tr.get('runtime_s', 0):.0f}s "
            f"({_fmt(tr.get('samples_per_second'), 1)} samples/s); * = best validation macro-F1, kept",
            highlight=False,
        )
        console.print(f"Saved to {data['run_dir']}", highlight=False)
        console.print(f'Next: newsclf predict --model {data["run_dir"]} "some headline and text"', highlight=False)

    return render


# -- train -----------------------------------------------------------------------------------------


def _child_args(options: Any, run_id: str, resume_dir: Path | None, n: int) -> list[str]:
    """argv for each process under torch.distributed.run: every setting explicit, no secrets."""
    from newsclf.train import PACKAGED_MODEL

    globals_ = [flag for flag, on in (("--json", _output.state.json), ("--quiet", _output.state.quiet),
                                      ("--debug", _output.state.debug)) if on]  # fmt: skip
    runtime = ["--num-processes", str(n)]
    runtime += ["--wandb"] if options.wandb else []
    runtime += ["--wandb-offline"] if options.wandb_offline else []
    runtime += ["--cpu"] if options.cpu else []
    runtime += ["--precision", options.precision]
    if resume_dir is not None:
        return [*globals_, "train", "--resume", str(resume_dir), *runtime]
    args = [
        "--data", str(options.data_dir), "--model", options.base_model or PACKAGED_MODEL,
        "--epochs", repr(options.epochs), "--batch-size", str(options.batch_size), "--lr", repr(options.lr),
        "--weight-decay", repr(options.weight_decay), "--warmup-ratio", repr(options.warmup_ratio),
        "--max-length", str(options.max_length), "--patience", str(options.patience), "--seed", str(options.seed),
    ]  # fmt: skip
    if options.max_train_samples:
        args += ["--max-train-samples", str(options.max_train_samples)]
    if options.attention_dropout is not None:
        args += ["--attention-dropout", repr(options.attention_dropout)]
    if options.keep_checkpoints:
        args += ["--keep-checkpoints"]
    return [*globals_, "train", *args, *runtime, "--run-id", run_id]


def _launch(options: Any, run_id: str, resume_dir: Path | None, n: int) -> None:
    """Re-run this command under torch.distributed.run with n processes; relay rank 0's stdout."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
           "-m", "newsclf", *_child_args(options, run_id, resume_dir, n)]  # fmt: skip
    _output.info(f"Starting {n} training processes (torch.distributed.run) for run {run_id}")
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))  # share the cores, not oversubscribe
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    captured = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if _output.state.json:
                captured.append(line)
            else:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    except KeyboardInterrupt:
        if _output.state.terminated:  # SIGTERM to this process only (`docker stop`): the ranks stop too
            proc.terminate()
        proc.wait()
        raise
    if _output.state.json:
        try:
            doc = json.loads("".join(captured))
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            sys.stdout.flush()
            _output.state.emitted = True  # rank 0 wrote the one document (ok or error)
    if rc != 0:
        if _output.state.emitted or not _output.state.json:
            raise typer.Exit(rc if rc in (1, 2, 130) else 1)
        raise NewsclfError(
            f"Distributed training failed (exit {rc}), see the log above: continue it with "
            f"`newsclf train --resume {run_id} --num-processes {n}`"
        )


def train(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Prepared dataset directory (default: DATA_DIR/processed)."
    ),
    demo: bool = typer.Option(
        False, "--demo", help="Prepare the built-in demo corpus and train on it quickly (offline)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Base model: a local directory or Hub id (default: the packaged all-MiniLM-L6-v2)."
    ),
    epochs: Optional[float] = typer.Option(None, "--epochs", help="Maximum epochs (default: NEWSCLF_EPOCHS or 3)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Examples per step and process (default: 16)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (default: 5e-5)."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help="AdamW weight decay (default: 0.01)."),
    warmup_ratio: Optional[float] = typer.Option(
        None, "--warmup-ratio", help="Fraction of steps warming up the lr (default: 0.1)."
    ),
    max_length: Optional[int] = typer.Option(None, "--max-length", help="Tokens kept per article (default: 128)."),
    attention_dropout: Optional[float] = typer.Option(
        None,
        "--attention-dropout",
        help="Dropout on attention probabilities (default: 0, 1.2-1.3x faster steps on CPUs than MiniLM's own 0.1 at the same F1).",
    ),
    patience: Optional[int] = typer.Option(
        None, "--patience", help="Epochs without macro-F1 gain before stopping (default: 2)."
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (default: 42)."),
    max_train_samples: Optional[int] = typer.Option(
        None, "--max-train-samples", help="Train on a random subset of this many rows (quick runs)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue an interrupted run: RUN, or the newest unfinished one."
    ),
    run: Optional[str] = typer.Argument(
        None, metavar="RUN", help="With --resume: the run id or directory to continue."
    ),
    wandb: bool = typer.Option(
        False, "--wandb", help="Report to Weights & Biases (on by default when WANDB_API_KEY is set)."
    ),
    wandb_offline: bool = typer.Option(
        False, "--wandb-offline", help="Write a local W&B run (sync it later with `wandb sync`)."
    ),
    num_processes: int = typer.Option(
        1,
        "--num-processes",
        min=1,
        max=1024,
        help="Data-parallel processes (torch distributed: gloo on CPU, NCCL on GPUs).",
    ),
    keep_checkpoints: bool = typer.Option(
        False, "--keep-checkpoints", help="Keep checkpoints/ after the run finishes."
    ),
    cpu: bool = typer.Option(False, "--cpu", help="Train on the CPU even when a GPU is present."),
    precision: Optional[str] = typer.Option(
        None,
        "--precision",
        metavar="auto|bf16|fp16|tf32|fp32",
        help="Number format (default: NEWSCLF_PRECISION or auto = TF32 on Ampere+ GPUs, fp16 on older ones, bf16 on CPUs with AMX, else fp32).",
    ),
    run_id: Optional[str] = typer.Option(None, "--run-id", hidden=True, help="Run id (set by --num-processes)."),
    sweep: Optional[str] = typer.Option(
        None,
        "--sweep",
        metavar="GRID",
        help='Sweep a grid: "lr=1e-5,2e-5 batch_size=16,32" runs one trial (a normal run) per combination and prints one table.',
    ),
    sweep_file: Optional[Path] = typer.Option(
        None,
        "--sweep-file",
        help="The grid from a YAML file: NAME: [values], or a W&B grid sweep (parameters: NAME: {values: [...]}).",
    ),
    metric: Optional[str] = typer.Option(
        None,
        "--metric",
        help="Sweep objective, a validation metric of each trial's kept epoch: macro_f1 (default), accuracy, precision, recall, or loss (lower is better).",
    ),
    sweep_id: Optional[str] = typer.Option(
        None, "--sweep-id", hidden=True, help="Sweep id (default: a hash of the grid and the other options)."
    ),
) -> None:
    """Fine-tune the classifier on a prepared dataset; save it to models/<run-id>/ (and models/latest).

    Fine-tunes the whole encoder with the Hugging Face Trainer.
    Evaluates every epoch; keeps the best epoch by validation macro-F1.
    Uses a GPU (CUDA, TF32 or fp16) automatically when present, and bf16 on CPUs with AMX (--precision).
    Settings: flag > NEWSCLF_* environment > .env > default.

    Examples:

      newsclf train --demo                      # offline, under a minute on 2 CPU cores

      newsclf train --data data/processed --epochs 2 --max-length 256

      newsclf train --resume                    # after Ctrl-C or a crash

    Sweeps: each trial is a normal run (its sweep id and values in run_config.json), one after
    another; the table (best validation macro-F1 first) is kept in models/sweeps/SWEEP_ID/summary.json.
    The sweep id is a hash of the grid and the other options, so the same command with --resume
    skips the trials that succeeded and continues the others (or: --resume SWEEP_ID).
    The exit code is 1 only when every trial failed.

      newsclf train --sweep "lr=1e-5,2e-5,5e-5 batch_size=16,32" --epochs 2

      newsclf train --sweep-file sweep.yaml --metric loss --resume
    """
    from newsclf.config import get_settings
    from newsclf.runs import new_run_id

    ctx_flags = {
        "data": data, "demo": demo or None, "model": model, "epochs": epochs, "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "max_length": max_length, "patience": patience,
        "seed": seed, "max_train_samples": max_train_samples, "keep_checkpoints": keep_checkpoints or None,
        "attention_dropout": attention_dropout,
    }  # fmt: skip
    if run is not None and not resume:
        raise typer.BadParameter(f"got RUN {run!r} without --resume: write `newsclf train --resume {run}`")
    if resume and run_id is not None:
        raise typer.BadParameter("--run-id starts a new run; it cannot be combined with --resume")
    settings = get_settings()
    sweeping = sweep is not None or sweep_file is not None
    if sweeping or metric is not None or sweep_id is not None:
        from newsclf.cli import _sweep

        _sweep.check_train_flags(sweeping=sweeping, metric=metric, resume=resume, run=run,
                                 num_processes=num_processes)  # fmt: skip
    if resume and not sweeping and run is not None:
        from newsclf.cli import _sweep

        if _sweep.is_local_sweep(Path(settings.models_dir), run):  # `--resume SWEEP_ID`
            _refuse_run_flags(ctx_flags, "a sweep being resumed")
            _sweep.resume_sweep(Path(settings.models_dir), run, metric=metric, cpu=cpu, wandb_offline=wandb_offline,
                                wandb=wandb or settings.wandb_api_key is not None)  # fmt: skip
            return
        if metric is not None:
            raise typer.BadParameter(f"--metric picks a sweep's objective; {run!r} is a run, not a sweep")
    child = "LOCAL_RANK" in os.environ  # started by torch.distributed.run
    if child and _rank() != 0:
        _output.state.quiet = True
        _output.state.emitted = True  # only rank 0 prints a result

    resume_dir: Path | None = None
    if resume and not sweeping:
        _refuse_run_flags(ctx_flags, "a run being resumed")
        options, resume_dir = _resumed_options(settings, run, wandb=wandb, wandb_offline=wandb_offline, cpu=cpu,
                                               precision=precision)  # fmt: skip
        run_dir = resume_dir
    else:
        options = _new_run_options(settings, ctx_flags, wandb=wandb, wandb_offline=wandb_offline, cpu=cpu,
                                   precision=precision)  # fmt: skip
        run_dir = Path(options.models_dir) / (run_id or new_run_id(str(options)))

    if sweeping:
        from newsclf.cli import _sweep

        given_flags = {"base_model" if k == "model" else k for k, v in ctx_flags.items() if v is not None}
        _sweep.train_sweep(options, spec=sweep, sweep_file=sweep_file, metric=metric, resume=resume,
                           given=given_flags, sweep_id=sweep_id)  # fmt: skip
        return
    if num_processes > 1 and not child:
        _launch(options, run_dir.name, resume_dir, num_processes)
        return
    _train_here(options, run_dir, resume_dir)


def _refuse_run_flags(ctx_flags: dict[str, Any], what: str) -> None:
    """Flags that define a run cannot change one that exists."""
    given = [f"--{k.replace('_', '-')}" for k in RUN_FLAGS if ctx_flags[k] is not None]
    if given:
        raise typer.BadParameter(f"{', '.join(given)} cannot change {what}: drop them")


def _resumed_options(settings: Any, run: str | None, *, wandb: bool, wandb_offline: bool, cpu: bool,
                     precision: str | None) -> tuple[Any, Path]:  # fmt: skip
    """`--resume [RUN]`: the run's own options (from its run_config.json) and its directory."""
    from newsclf.train import TrainOptions, resolve_resume

    resume_dir = resolve_resume(Path(settings.models_dir), run)
    options = TrainOptions.from_run_config(resume_dir)
    options.wandb = options.wandb or wandb or settings.wandb_api_key is not None
    options.wandb_offline, options.cpu = wandb_offline, cpu
    if precision is not None:
        options.precision = precision
        options.validate()
    return options, resume_dir


def _demo_data(settings: Any, seed: int | None) -> Path:
    """The built-in demo corpus, prepared under DATA_DIR/demo the first time."""
    from newsclf.data import check_processed

    demo_dir = Path(settings.data_dir) / "demo"
    try:
        check_processed(demo_dir)
    except InputError:
        from newsclf.demo import prepare_demo

        _output.info(f"Preparing the built-in demo corpus into {demo_dir}")
        prepare_demo(demo_dir, seed=seed if seed is not None else settings.seed, force=demo_dir.exists())
    return demo_dir


def _new_run_options(settings: Any, ctx_flags: dict[str, Any], *, wandb: bool, wandb_offline: bool, cpu: bool,
                     precision: str | None) -> Any:  # fmt: skip
    """A new run's options: flag > environment > .env > default, on a dataset that is there."""
    from newsclf.data import check_processed
    from newsclf.train import DEMO_OVERRIDES, TrainOptions

    overrides: dict[str, Any] = {}
    if ctx_flags["demo"]:
        overrides.update(DEMO_OVERRIDES, data_dir=_demo_data(settings, ctx_flags["seed"]))
    overrides.update({k: v for k, v in ctx_flags.items() if k not in ("data", "demo", "model") and v is not None})
    if ctx_flags["data"] is not None:
        overrides["data_dir"] = ctx_flags["data"]
    if ctx_flags["model"] is not None:
        overrides["base_model"] = ctx_flags["model"]
    if wandb or wandb_offline:
        overrides["wandb"] = wandb
    options = TrainOptions.from_settings(settings, **overrides, wandb_offline=wandb_offline, cpu=cpu,
                                         precision=precision)  # fmt: skip
    options.validate()
    if not ctx_flags["demo"]:
        check_processed(options.data_dir)
    return options


def _train_here(options: Any, run_dir: Path, resume_dir: Path | None) -> None:
    """Train in this process (one of several under torch.distributed.run, or the only one); rank 0 shows the result."""
    from newsclf.precision import resolve_precision
    from newsclf.train import run_training, use_cuda

    _quiet_libraries()
    resolve_precision(options.precision, use_cuda(options))  # a precision this machine lacks fails before the run
    callbacks = [] if (_output.state.quiet or _output.state.json) else [_progress_callback()]
    _output.info(
        f"Run {run_dir.name}: training {options.base_model or 'the packaged all-MiniLM-L6-v2'} on {options.data_dir}"
    )
    try:
        result = run_training(options, run_dir=run_dir, resume_from=resume_dir, callbacks=callbacks)
    except KeyboardInterrupt:
        if _rank() == 0:
            _output.warn(f"Training interrupted; continue it with `newsclf train --resume {run_dir.name}`")
        raise
    finally:
        for cb in callbacks:
            cb.close()
    if not result.is_main_process:
        return
    data_out = {
        "run_id": result.run_id,
        "run_dir": str(result.run_dir),
        "resumed_from": result.resumed_from,
        "metrics": result.metrics,
    }
    _output.emit(data_out, _render_train(data_out))


# -- evaluate --------------------------------------------------------------------------------------


def _check_batch_size(batch_size: int) -> None:
    from newsclf.config import MAX_BATCH_SIZE

    if batch_size > MAX_BATCH_SIZE:
        raise typer.BadParameter(f"--batch-size must be at most {MAX_BATCH_SIZE}, not {batch_size}")


def evaluate(
    model: str = typer.Option("latest", "--model", "-m", help="Run id, run directory, or `latest`."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="Prepared dataset dir or CSV (text,label) (default: the run's dataset)."
    ),
    split: str = typer.Option("test", "--split", help="Split of a prepared dataset: train, validation or test."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass."),
    plot: Optional[Path] = typer.Option(
        None, "--plot", help="Write a PNG: confusion matrix, plus loss/F1 curves per epoch."
    ),
    precision: Optional[str] = typer.Option(
        None, "--precision", metavar="auto|bf16|fp16|tf32|fp32", help=INFERENCE_PRECISION_HELP
    ),
) -> None:
    """Score a trained model: accuracy, macro-F1, per-class precision/recall/F1, confusion matrix.

    Examples:

      newsclf evaluate                          # models/latest on its dataset's test split

      newsclf evaluate --model 20261127-071500-1a2b3c --data other.csv --plot cm.png --json
    """
    if split not in SPLITS:
        raise typer.BadParameter(f"--split must be one of {', '.join(SPLITS)}, not {split!r}")
    from newsclf.config import get_settings
    from newsclf.runs import resolve_run

    settings = get_settings()
    _check_batch_size(batch_size)
    run = resolve_run(Path(settings.models_dir), model)
    _quiet_libraries()
    from newsclf.evaluate import check_plot_path, default_data, evaluate_model, plot_evaluation
    from newsclf.predict import Predictor

    if plot is not None:
        check_plot_path(plot)  # before the work, not after it
    predictor = Predictor(run, precision=precision or settings.precision)  # refuses an incomplete run
    data = data or default_data(run, Path(settings.data_dir) / "processed")
    _output.info(f"Evaluating {run} on {data}" + ("" if data.suffix.lower() == ".csv" else f" ({split})"))
    result = evaluate_model(run, data, split=split, batch_size=batch_size, predictor=predictor)
    if plot is not None:
        result["plot"] = str(plot_evaluation(result, plot, run / "trainer_state.json"))

    def render(console: Any) -> None:
        from rich.table import Table

        head = Table("examples", "accuracy", "macro-F1", "precision", "recall", "loss", box=None,
                     title=f"{result['run_id']} on {result['data']}", title_justify="left")  # fmt: skip
        head.add_row(str(result["examples"]), *(_fmt(result[k]) for k in ("accuracy", "macro_f1", "precision",
                     "recall", "loss")))  # fmt: skip
        console.print(head)
        per = Table("class", "precision", "recall", "F1", "support", box=None)
        for name, row in result["per_class"].items():
            per.add_row(name, _fmt(row["precision"]), _fmt(row["recall"]), _fmt(row["f1"]), str(row["support"]))
        console.print(per)
        cm = Table("true \\ predicted", *result["labels"], box=None)
        for name, row in zip(result["labels"], result["confusion_matrix"]):
            cm.add_row(name, *map(str, row))
        console.print(cm)
        if result.get("plot"):
            console.print(f"Plot: {result['plot']}", highlight=False)

    _output.emit(result, render)


# -- predict ---------------------------------------------------------------------------------------


def predict(
    texts: Optional[list[str]] = typer.Argument(
        None, metavar="TEXT", help="Texts to classify; `-` reads stdin, one text per line."
    ),
    file: Optional[str] = typer.Option(
        None, "--file", "-f", help="A .txt (one per line), .csv (text column) or .jsonl file; `-` for stdin."
    ),
    model: str = typer.Option("latest", "--model", "-m", help="Run id, run directory, or `latest`."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Texts per forward pass."),
    precision: Optional[str] = typer.Option(
        None, "--precision", metavar="auto|bf16|fp16|tf32|fp32", help=INFERENCE_PRECISION_HELP
    ),
) -> None:
    """Classify texts as fake or real with a trained model.

    Prints a table, or with --json one document (not JSON lines) whose data.predictions holds one {"index", "label", "probability", "scores"} object per input, in input order.

    Examples:

      newsclf predict "Senate passes the budget bill after a late-night session"

      newsclf predict --file articles.csv --json | jq -r '.data.predictions[].label'

      cat headlines.txt | newsclf predict -
    """
    texts = list(texts or [])
    if not texts and file is None:
        raise typer.BadParameter("give TEXT arguments, --file FILE, or - to read stdin")
    if texts and file is not None:
        raise typer.BadParameter("give TEXT arguments or --file, not both")
    from newsclf.config import get_settings
    from newsclf.runs import resolve_run

    settings = get_settings()
    _check_batch_size(batch_size)
    run = resolve_run(Path(settings.models_dir), model)
    _quiet_libraries()
    from newsclf.predict import Predictor, clean_texts, read_texts

    if file is not None:
        inputs = read_texts(file)
    elif texts == ["-"]:
        inputs = read_texts("-")
    else:
        if any(not t.strip() for t in texts):
            raise InputError("An input text is empty: give non-empty TEXT arguments")
        inputs = clean_texts(texts)
    predictor = Predictor(run, precision=precision or settings.precision)
    t0 = time.perf_counter()
    predictions = predictor.predict(inputs, batch_size=batch_size)
    elapsed = time.perf_counter() - t0
    data = {
        "model": str(run),
        "run_id": run.resolve().name,
        "count": len(predictions),
        "seconds": round(elapsed, 3),
        "predictions": predictions,
    }

    def render(console: Any) -> None:
        from rich.table import Table

        table = Table("#", "label", "probability", "text", box=None)
        for p, text in zip(predictions, inputs):
            short = text if len(text) <= 70 else text[:67] + "..."
            color = "red" if p["label"] == "fake" else "green"
            table.add_row(str(p["index"]), f"[{color}]{p['label']}[/{color}]", f"{p['probability']:.3f}", short)
        console.print(table)

    _output.emit(data, render)
