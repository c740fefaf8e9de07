"""Hyper-parameter sweeps: a grid over `newsclf train`'s options, one normal run per trial, one table.

A sweep's id is a hash of its grid and base options (`sweep-1a2b3c4d`): the same command names the
same sweep, which is how `newsclf train --sweep ... --resume` finds what it already did. Each trial
is an ordinary run (`models/<run-id>/`, or `runs/<run-id>/` in the bucket) whose run_config.json /
run.json carries `sweep_id` and `sweep_params`. A local sweep keeps its table in
`models/sweeps/<sweep-id>/summary.json` (rewritten atomically after every trial); a cloud sweep's
table is read back from the runs in the bucket (`remote_sweep`).

Library code: nothing here prints; the CLI renders the `Sweep.summary()` document.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from newsclf.errors import InputError
from newsclf.runstate import RunState, now

if TYPE_CHECKING:
    from newsclf.train import TrainOptions

log = logging.getLogger(__name__)

SWEEP_PREFIX = "sweep-"
SWEEPS_DIR = "sweeps"  # models/sweeps/<sweep-id>/summary.json
SUMMARY = "summary.json"
SUMMARY_VERSION = 1

# Options a grid may sweep: TrainOptions field -> the `newsclf train` flag (the cloud job gets flags).
SWEEPABLE: dict[str, str] = {
    "lr": "--lr",
    "batch_size": "--batch-size",
    "epochs": "--epochs",
    "weight_decay": "--weight-decay",
    "warmup_ratio": "--warmup-ratio",
    "max_length": "--max-length",
    "patience": "--patience",
    "seed": "--seed",
    "max_train_samples": "--max-train-samples",
    "base_model": "--model",
}
TYPES: dict[str, type] = {
    "lr": float, "batch_size": int, "epochs": float, "weight_decay": float, "warmup_ratio": float,
    "max_length": int, "patience": int, "seed": int, "max_train_samples": int, "base_model": str,
}  # fmt: skip
ALIASES = {"model": "base_model", "learning_rate": "lr"}
# train options that exist but are not hyper-parameters: a grid over them is refused, with the reason
NOT_SWEEPABLE = {
    "data": "the dataset", "data_dir": "the dataset", "demo": "the dataset", "models_dir": "where runs go",
    "wandb": "tracking", "wandb_offline": "tracking", "wandb_project": "tracking", "wandb_entity": "tracking",
    "keep_checkpoints": "housekeeping", "cpu": "the device", "num_processes": "the device",
    "resume": "a command", "max_eval_samples": "the evaluation set",
}  # fmt: skip
# settings that do not change what a trial learns: not part of the sweep id
RUNTIME_ONLY = ("models_dir", "wandb", "wandb_offline", "wandb_project", "wandb_entity", "keep_checkpoints", "cpu",
                "sweep_id", "sweep_params", "sweep_trial")  # fmt: skip

# the objective: a validation metric of each trial's kept (best macro-F1) epoch
METRICS: dict[str, str] = {"macro_f1": "max", "accuracy": "max", "precision": "max", "recall": "max", "loss": "min"}
DEFAULT_METRIC = "macro_f1"

# one set of run states for runs, jobs and trials (newsclf.runstate)
PENDING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED = (RunState.PENDING, RunState.RUNNING, RunState.SUCCEEDED,
                                                    RunState.FAILED, RunState.INTERRUPTED)
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED)

_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")  # also a Compute Engine label value


def _now() -> str:
    return now()  # status.json's format (newsclf.runstate), also for trials


def _created_now() -> str:
    """A run's created_at: microseconds, so that runs made in the same second still order by age."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def first_line(e: BaseException) -> str:
    """An exception as one line: newsclf's own message, else `Type: message`."""
    from newsclf.errors import NewsclfError

    text = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, NewsclfError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# -- the grid -----------------------------------------------------------------------------------------


def _valid_names() -> list[str]:
    return list(SWEEPABLE)


def canonical_name(raw: str) -> str:
    """`--batch-size`, `batch-size`, `batch_size` -> `batch_size`; `model` -> `base_model`.

    Unknown names raise InputError naming the closest valid one.
    """
    name = raw.strip().lstrip("-").replace("-", "_").lower()
    name = ALIASES.get(name, name)
    if name in SWEEPABLE:
        return name
    if name in NOT_SWEEPABLE:
        raise InputError(
            f"{raw!r} cannot be swept (it sets {NOT_SWEEPABLE[name]}, not a hyper-parameter): pass it as a flag; "
            f"sweepable: {', '.join(_valid_names())}"
        )
    candidates = [*SWEEPABLE, *ALIASES]
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    hint = f"did you mean {ALIASES.get(close[0], close[0])}? " if close else ""
    raise InputError(f"Unknown sweep parameter {raw!r}: {hint}(sweepable: {', '.join(_valid_names())})")


def coerce(name: str, raw: Any) -> Any:
    """A grid value as the option's type (strings from the command line, numbers from YAML/JSON)."""
    kind = TYPES[name]
    example = {int: "16,32", float: "1e-5,2e-5", str: "DIR_A,DIR_B"}[kind]
    bad = InputError(f"Bad sweep value {name}={raw!r}: {name} takes {kind.__name__} values (e.g. {name}={example})")
    if isinstance(raw, bool) or raw is None or isinstance(raw, (list, dict)):
        raise bad
    if kind is str:
        value = str(raw).strip()
        if not value:
            raise bad
        return value
    text = str(raw).strip()
    try:
        number = float(text)
    except ValueError:
        raise bad from None
    if number != number or number in (float("inf"), float("-inf")):
        raise bad
    if kind is int:
        if not number.is_integer():
            raise bad
        return int(number)
    return number


@dataclass
class Grid:
    """Swept option -> its values, in the order given; trials are the cartesian product."""

    params: dict[str, list[Any]]

    def __post_init__(self) -> None:
        if not self.params:
            raise InputError('The sweep is empty: give NAME=V1,V2 items, e.g. --sweep "lr=1e-5,2e-5 batch_size=16,32"')
        for name, values in self.params.items():
            if not values:
                raise InputError(f"Sweep parameter {name} has no values: give at least one, e.g. {name}=V1,V2")
            seen: list[Any] = []
            for v in values:
                if v in seen:
                    raise InputError(f"Sweep parameter {name} lists {fmt_value(v)} twice: drop the duplicate")
                seen.append(v)

    def __len__(self) -> int:
        n = 1
        for values in self.params.values():
            n *= len(values)
        return n

    def trials(self) -> list[dict[str, Any]]:
        names = list(self.params)
        return [dict(zip(names, combo)) for combo in itertools.product(*self.params.values())]

    def to_dict(self) -> dict[str, list[Any]]:
        return {k: list(v) for k, v in self.params.items()}

    def spec(self) -> str:
        """The grid as one JSON argument (what `cloud run` hands the job; --sweep reads it back exactly)."""
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], source: str = "--sweep") -> "Grid":
        params: dict[str, list[Any]] = {}
        for raw, values in mapping.items():
            name = canonical_name(str(raw))
            if name in params:
                raise InputError(f"{source} names {name} twice: give all its values in one item")
            if isinstance(values, dict):  # W&B style: {values: [...]} or {value: x}
                if "values" in values:
                    values = values["values"]
                elif "value" in values:
                    values = [values["value"]]
                else:
                    keys = ", ".join(sorted(map(str, values))) or "nothing"
                    raise InputError(
                        f"{source}: {name} has {keys}; a grid sweep takes `values: [...]` or `value: x` "
                        "for each parameter"
                    )
            if not isinstance(values, (list, tuple)):
                values = [values]
            params[name] = [coerce(name, v) for v in values]
        return cls(params)


def parse_grid(spec: str) -> Grid:
    """`lr=1e-5,2e-5 batch_size=16,32` (Hydra multirun style), or a JSON object {"lr": [1e-5, 2e-5]}."""
    text = spec.strip()
    if text.startswith("{"):
        try:
            mapping = json.loads(text)
        except ValueError as e:
            raise InputError(f"--sweep is not valid JSON ({e}): write NAME=V1,V2 items or a JSON object") from None
        if not isinstance(mapping, dict):
            raise InputError("--sweep JSON must be an object of NAME: [values]")
        return Grid.from_mapping(mapping)
    if not text:
        return Grid({})
    mapping: dict[str, Any] = {}
    # split at the spaces in front of `NAME=`, so `lr=1e-5, 2e-5` is still one item
    for item in re.split(r"\s+(?=-{0,2}[A-Za-z][\w-]*\s*=)", text):
        name, eq, values = item.partition("=")
        if not eq or not name.strip():
            raise InputError(
                f'Bad --sweep item {item!r}: write NAME=V1,V2,... (e.g. --sweep "lr=1e-5,2e-5 batch_size=16,32")'
            )
        key = name.strip()
        if canonical_name(key) in {canonical_name(k) for k in mapping}:
            raise InputError(f"--sweep names {canonical_name(key)} twice: give all its values in one item")
        parts = [v.strip() for v in values.split(",")]
        if any(not p for p in parts):
            raise InputError(
                f"Bad --sweep item {item!r}: an empty value; separate values with commas, e.g. lr=1e-5,2e-5"
            )
        mapping[key] = parts
    return Grid.from_mapping(mapping)


def load_sweep_file(path: Path) -> tuple[Grid, str | None]:
    """A YAML (or JSON) sweep file: `{lr: [1e-5, 2e-5], batch_size: [16, 32]}`, or a W&B grid sweep
    (`method: grid`, `parameters: {lr: {values: [...]}}`, `metric: {name: ..., goal: ...}`).

    Returns the grid and the file's metric (None when it names none).
    """
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise InputError(f"Cannot read --sweep-file {path} ({e.strerror or e}): check the path") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise InputError(f"--sweep-file {path} is not valid YAML{at}: fix it (see `newsclf train --help`)") from None
    if not isinstance(doc, dict):
        raise InputError(f"--sweep-file {path} must be a mapping of NAME: [values] (or a W&B sweep with parameters:)")
    metric = None
    if "parameters" in doc:
        method = doc.get("method", "grid")
        if method != "grid":
            raise InputError(
                f"--sweep-file {path} asks for method: {method}; newsclf runs grid sweeps: set method: grid"
            )
        m = doc.get("metric")
        if isinstance(m, dict):
            metric = resolve_metric(str(m.get("name", DEFAULT_METRIC)))
            goal = str(m.get("goal", "")).lower()
            want = {"maximize": "max", "minimize": "min"}.get(goal)
            if goal and want is None:
                raise InputError(f"--sweep-file {path}: metric goal {goal!r} must be maximize or minimize")
            if want is not None and want != METRICS[metric]:
                raise InputError(
                    f"--sweep-file {path}: {metric} is {'maximized' if METRICS[metric] == 'max' else 'minimized'}, "
                    f"not {goal}d: fix the goal or pick another metric"
                )
        elif m is not None:
            metric = resolve_metric(str(m))
        params = doc["parameters"]
        if not isinstance(params, dict):
            raise InputError(f"--sweep-file {path}: parameters must be a mapping of NAME: {{values: [...]}}")
    else:
        params = {k: v for k, v in doc.items() if k != "metric"}
        if "metric" in doc:
            metric = resolve_metric(str(doc["metric"]))
    return Grid.from_mapping(params, source=f"--sweep-file {path}"), metric


def resolve_metric(name: str) -> str:
    """`macro_f1` (default), `accuracy`, `precision`, `recall`, `loss`; W&B-style `eval/accuracy` works too."""
    key = name.strip().lower().replace("-", "_")
    for prefix in ("best_validation.", "validation/", "validation_", "eval/", "eval_", "val_", "val/"):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    key = {"f1": "macro_f1", "macrof1": "macro_f1", "acc": "accuracy"}.get(key, key)
    if key in METRICS:
        return key
    close = difflib.get_close_matches(key, list(METRICS), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]}? " if close else ""
    raise InputError(f"Unknown --metric {name!r}: {hint}(choose from {', '.join(METRICS)}; loss is minimized)")


def fmt_value(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def label(params: dict[str, Any]) -> str:
    """`lr=1e-05 batch_size=16`."""
    return " ".join(f"{k}={fmt_value(v)}" for k, v in params.items())


def params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


# -- identity -----------------------------------------------------------------------------------------


def check_sweep_id(sweep_id: str) -> str:
    if not _ID_RE.match(sweep_id):
        raise InputError(f"Bad sweep id {sweep_id!r}: use lowercase letters, digits, '-' and '_' (e.g. sweep-1a2b3c4d)")
    return sweep_id


def make_sweep_id(grid: Grid, base: dict[str, Any]) -> str:
    """`sweep-` + 8 hex digits of the grid and the base options (order of the grid's names does not matter)."""
    doc = json.dumps({"grid": grid.to_dict(), "base": base}, sort_keys=True, default=str)
    return SWEEP_PREFIX + hashlib.sha256(doc.encode()).hexdigest()[:8]


def short_id(sweep_id: str) -> str:
    """What VM names carry: the hex part of `sweep-1a2b3c4d`."""
    rest = sweep_id[len(SWEEP_PREFIX) :] if sweep_id.startswith(SWEEP_PREFIX) else sweep_id
    return re.sub(r"[^a-z0-9-]", "-", rest)[:12].strip("-") or "sweep"


def base_identity(options: "TrainOptions", grid: Grid) -> dict[str, Any]:
    """The base options that decide what the trials learn (the swept ones and runtime switches left out)."""
    d = options.to_dict()
    for name in (*RUNTIME_ONLY, *grid.params):
        d.pop(name, None)
    return d


def trial_options(base: "TrainOptions", trial: "Trial", sweep_id: str) -> "TrainOptions":
    """A copy of the base options with the trial's values (and its sweep, for run_config.json and W&B)."""
    return dataclasses.replace(
        base, **trial.params, sweep_id=sweep_id, sweep_params=dict(trial.params), sweep_trial=trial.trial
    )


def validate_trials(base: "TrainOptions", grid: Grid) -> None:
    """Every trial's options in range, checked before anything runs: one line naming the bad value."""
    for name, values in grid.params.items():
        for v in values:
            try:
                dataclasses.replace(base, **{name: v}).validate()
            except InputError as e:
                problem = str(e).split(": fix the flag")[0]
                raise InputError(
                    f"Sweep value {name}={fmt_value(v)} is out of range ({problem}): fix the grid"
                ) from None


# -- trials and the summary ---------------------------------------------------------------------------


@dataclass
class Trial:
    """One point of the grid and what became of it."""

    trial: int  # its number: position in the grid, from 1
    params: dict[str, Any]
    run_id: str | None = None
    status: str = PENDING
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    seconds: float | None = None
    best_validation: dict[str, Any] | None = None  # metrics of the kept epoch
    test: dict[str, Any] | None = None
    epochs_completed: float | None = None
    vm: str | None = None  # cloud sweeps: the VM that ran it
    # live state for displays, never saved
    progress: str | None = field(default=None, compare=False)
    live_best: float | None = field(default=None, compare=False)
    t0: float | None = field(default=None, compare=False)

    def objective(self, metric: str) -> float | None:
        value = (self.best_validation or {}).get(metric)
        return float(value) if isinstance(value, (int, float)) else None

    def elapsed(self) -> float | None:
        if self.status == RUNNING and self.t0 is not None:
            return time.monotonic() - self.t0
        return self.seconds

    def finish(self, status: str, *, error: str | None = None, metrics: dict[str, Any] | None = None) -> None:
        self.status, self.error = status, error
        self.finished_at = _now()
        if self.t0 is not None:
            self.seconds = round(time.monotonic() - self.t0, 2)
        self.progress = None
        if metrics:
            self.set_metrics(metrics)

    def set_metrics(self, metrics: dict[str, Any]) -> None:
        self.best_validation = metrics.get("best_validation") or None
        self.test = metrics.get("test") or None
        train = metrics.get("train") or {}
        self.epochs_completed = train.get("epochs_completed")
        if train.get("runtime_s") is not None and self.seconds is None:
            self.seconds = train.get("runtime_s")

    def to_dict(self, metric: str = DEFAULT_METRIC) -> dict[str, Any]:
        return {
            "trial": self.trial,
            "params": self.params,
            "run_id": self.run_id,
            "status": self.status,
            "objective": self.objective(metric),
            "error": self.error,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "seconds": self.seconds,
            "epochs_completed": self.epochs_completed,
            "best_validation": self.best_validation,
            "test": self.test,
            **({"vm": self.vm} if self.vm else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trial":
        names = {f.name for f in dataclasses.fields(cls) if f.compare}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Sweep:
    sweep_id: str
    grid: Grid
    trials: list[Trial]
    metric: str = DEFAULT_METRIC
    base: dict[str, Any] = field(default_factory=dict)
    location: str = ""  # models/sweeps/<id>/summary.json, or gs://bucket/runs/
    created_at: str = field(default_factory=_now)
    updated_at: str | None = None

    @classmethod
    def new(cls, sweep_id: str, grid: Grid, *, metric: str = DEFAULT_METRIC, base: dict[str, Any] | None = None,
            location: str = "") -> "Sweep":  # fmt: skip
        trials = [Trial(i, p) for i, p in enumerate(grid.trials(), start=1)]
        return cls(sweep_id, grid, trials, metric, dict(base or {}), location)

    def ranked(self) -> list[Trial]:
        """Trials with a score, best first (ties: grid order), then the others in grid order."""
        sign = -1.0 if METRICS[self.metric] == "max" else 1.0
        scored = [t for t in self.trials if t.status == SUCCEEDED and t.objective(self.metric) is not None]
        scored.sort(key=lambda t: (sign * (t.objective(self.metric) or 0.0), t.trial))
        rest = sorted((t for t in self.trials if t not in scored), key=lambda t: t.trial)
        return scored + rest

    def best(self) -> Trial | None:
        ranked = self.ranked()
        first = ranked[0] if ranked else None
        if first is None or first.status != SUCCEEDED or first.objective(self.metric) is None:
            return None
        return first

    def counts(self) -> dict[str, int]:
        out = {"trials": len(self.trials)}
        for s in STATUSES:
            out[s] = sum(1 for t in self.trials if t.status == s)
        return out

    def all_failed(self) -> bool:
        return bool(self.trials) and all(t.status == FAILED for t in self.trials)

    def summary(self) -> dict[str, Any]:
        """The sweep as one document: what summary.json, `--json` and the tables show."""
        best = self.best()
        rows = []
        rank = 0
        for t in self.ranked():
            d = t.to_dict(self.metric)
            if t.status == SUCCEEDED and t.objective(self.metric) is not None:
                rank += 1
                d["rank"] = rank
            else:
                d["rank"] = None
            d["best"] = best is not None and t.trial == best.trial
            rows.append(d)
        return {
            "sweep_version": SUMMARY_VERSION,
            "sweep_id": self.sweep_id,
            "metric": self.metric,
            "goal": "maximize" if METRICS[self.metric] == "max" else "minimize",
            "objective": f"best_validation.{self.metric}",
            "grid": self.grid.to_dict(),
            "base": self.base,
            "location": self.location,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "counts": self.counts(),
            "best": next((r for r in rows if r["best"]), None),
            "trials": rows,
        }

    @classmethod
    def from_summary(cls, doc: dict[str, Any]) -> "Sweep":
        grid = Grid({k: list(v) for k, v in doc["grid"].items()})
        trials = sorted((Trial.from_dict(t) for t in doc.get("trials", [])), key=lambda t: t.trial)
        return cls(
            sweep_id=doc["sweep_id"],
            grid=grid,
            trials=trials,
            metric=doc.get("metric", DEFAULT_METRIC),
            base=doc.get("base") or {},
            location=doc.get("location", ""),
            created_at=doc.get("created_at") or _now(),
            updated_at=doc.get("updated_at"),
        )


# -- local sweeps -------------------------------------------------------------------------------------


def sweep_dir(models_dir: Path, sweep_id: str) -> Path:
    return Path(models_dir) / SWEEPS_DIR / sweep_id


def summary_path(models_dir: Path, sweep_id: str) -> Path:
    return sweep_dir(models_dir, sweep_id) / SUMMARY


def load_local(models_dir: Path, sweep_id: str) -> Sweep | None:
    """The sweep recorded in models/sweeps/<id>/summary.json, or None."""
    path = summary_path(models_dir, sweep_id)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is unreadable ({e}): delete it to start the sweep again") from None
    try:
        return Sweep.from_summary(doc)
    except (KeyError, TypeError, InputError) as e:
        raise InputError(f"{path} is not a newsclf sweep summary ({e}): delete it to start the sweep again") from None


def save_local(models_dir: Path, sweep: Sweep) -> Path:
    """Write summary.json atomically (temp file, then rename)."""
    path = summary_path(models_dir, sweep.sweep_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep.updated_at = _now()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(sweep.summary(), indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def merge_previous(sweep: Sweep, previous: Sweep) -> Sweep:
    """Carry over what the earlier attempt recorded for each trial (matched by its parameters)."""
    before = {params_key(t.params): t for t in previous.trials}
    for i, t in enumerate(sweep.trials):
        old = before.get(params_key(t.params))
        if old is not None:
            sweep.trials[i] = dataclasses.replace(old, trial=t.trial, params=t.params)
    sweep.created_at = previous.created_at
    return sweep


def run_local(
    sweep: Sweep,
    base: "TrainOptions",
    *,
    on_change: Callable[[Sweep, Trial], None] | None = None,
    callbacks: Callable[[Trial], Sequence[Any]] | None = None,
) -> Sweep:
    """Run the sweep's unfinished trials one after another in this process; summary.json after each.

    Succeeded trials are skipped; an interrupted trial continues from its checkpoints; a failed one
    is tried again. A failing trial is recorded (status failed + its error line) and the sweep goes
    on. Ctrl-C records the running trial as interrupted and re-raises. At the end models/latest
    points at the best trial.
    """
    from newsclf.runs import RUN_CONFIG, is_complete, new_run_id, update_latest
    from newsclf.train import run_training

    models_dir = Path(base.models_dir)
    sweep.location = str(summary_path(models_dir, sweep.sweep_id))

    def changed(trial: Trial) -> None:
        save_local(models_dir, sweep)
        if on_change is not None:
            on_change(sweep, trial)

    save_local(models_dir, sweep)
    for trial in sorted(sweep.trials, key=lambda t: t.trial):
        if trial.status == SUCCEEDED:
            continue
        trial.run_id = trial.run_id or new_run_id(f"{sweep.sweep_id}{trial.trial}")
        run_dir = models_dir / trial.run_id
        if is_complete(run_dir):  # it finished just before an interruption reached summary.json
            trial.finish(SUCCEEDED, metrics=json.loads((run_dir / "metrics.json").read_text()))
            changed(trial)
            continue
        resume = run_dir if (run_dir / RUN_CONFIG).is_file() else None
        trial.status, trial.error, trial.started_at, trial.finished_at = RUNNING, None, _now(), None
        trial.seconds, trial.best_validation, trial.test, trial.t0 = None, None, None, time.monotonic()
        changed(trial)
        try:
            result = run_training(
                trial_options(base, trial, sweep.sweep_id),
                run_dir=run_dir,
                resume_from=resume,
                callbacks=list(callbacks(trial)) if callbacks else (),
            )
        except KeyboardInterrupt:
            trial.finish(INTERRUPTED, error="interrupted (Ctrl-C)")
            changed(trial)
            raise
        except Exception as e:  # noqa: BLE001 - one trial's failure is recorded, the sweep goes on
            trial.finish(FAILED, error=first_line(e))
            log.debug("Trial %d failed", trial.trial, exc_info=True)
            changed(trial)
            continue
        trial.finish(SUCCEEDED, metrics=result.metrics)
        changed(trial)
    best = sweep.best()
    if best is not None and best.run_id and is_complete(models_dir / best.run_id):
        update_latest(models_dir, best.run_id)
    return sweep


# -- cloud: trials as runs in the bucket ---------------------------------------------------------------

# keys of runs/<run-id>/run.json that tie a run to its sweep
RUN_SWEEP_ID, RUN_SWEEP_PARAMS, RUN_SWEEP_TRIAL, RUN_SWEEP_JOB = "sweep_id", "sweep_params", "sweep_trial", "sweep_job"


def plan_record(run_id: str, sweep_id: str, trial: Trial, grid: Grid) -> dict[str, Any]:
    """runs/<run-id>/run.json until the run publishes its own: the trial's sweep and parameters."""
    return {
        "run_id": run_id,
        "created_at": _created_now(),
        RUN_SWEEP_ID: sweep_id,
        RUN_SWEEP_PARAMS: trial.params,
        RUN_SWEEP_TRIAL: trial.trial,
        "sweep_grid": grid.to_dict(),
        "planned": True,
    }


def job_record(run_id: str, sweep_id: str, runs: dict[int, str], grid: Grid) -> dict[str, Any]:
    """runs/<job-run-id>/run.json of the job that runs a whole sweep on one VM (not a model)."""
    return {
        "run_id": run_id,
        "created_at": _created_now(),
        RUN_SWEEP_ID: sweep_id,
        RUN_SWEEP_JOB: True,
        "sweep_runs": {str(k): v for k, v in sorted(runs.items())},
        "sweep_grid": grid.to_dict(),
    }


def is_sweep_job(config: dict[str, Any] | None) -> bool:
    return bool((config or {}).get(RUN_SWEEP_JOB))


def _trial_from_run(run: Any, status: dict[str, Any] | None) -> Trial | None:
    config = run.config or {}
    index = config.get(RUN_SWEEP_TRIAL)
    params = config.get(RUN_SWEEP_PARAMS)
    if not isinstance(params, dict):
        return None
    t = Trial(int(index) if isinstance(index, int) else 0, params, run_id=run.run_id)
    status = status or {}
    state = status.get("state")
    t.started_at, t.finished_at = status.get("started_at"), status.get("finished_at")
    t.vm = status.get("host") or None
    if run.metrics:
        t.set_metrics(run.metrics)
    if run.complete or (state == SUCCEEDED and run.metrics):
        t.status = SUCCEEDED
    elif state == FAILED:
        t.status, t.error = FAILED, status.get("error") or f"exit code {status.get('exit_code')}"
    elif state == RUNNING:
        t.status = RUNNING
    else:
        t.status = PENDING
    if t.seconds is None and t.started_at and t.finished_at:
        try:
            start = datetime.fromisoformat(t.started_at.replace("Z", "+00:00"))
            end = datetime.fromisoformat(t.finished_at.replace("Z", "+00:00"))
            t.seconds = round((end - start).total_seconds(), 2)
        except ValueError:
            pass
    return t


_PREFERENCE: dict[str, int] = {SUCCEEDED: 3, RUNNING: 2, INTERRUPTED: 1, PENDING: 1, FAILED: 0}


def remote_trials(client: Any, bucket: str, sweep_id: str) -> tuple[list[Trial], dict[str, Any] | None]:
    """The sweep's trials from runs/*/run.json in the bucket (one per parameter set: a succeeded run
    wins, else the newest), plus the grid recorded with them (None when none is)."""
    from concurrent.futures import ThreadPoolExecutor

    from newsclf.cloud import layout
    from newsclf.cloud.storage.objects import read_json
    from newsclf.cloud.storage.runs import list_runs

    b = client.bucket(bucket)
    runs = [
        r for r in list_runs(client, bucket)
        if (r.config or {}).get(RUN_SWEEP_ID) == sweep_id and not is_sweep_job(r.config)
    ]  # fmt: skip
    grid = next((r.config.get("sweep_grid") for r in runs if isinstance(r.config.get("sweep_grid"), dict)), None)
    if not runs:
        return [], grid
    with ThreadPoolExecutor(max_workers=min(8, len(runs))) as pool:
        statuses = list(pool.map(lambda r: read_json(b, layout.RunLayout(r.run_id).status), runs))
    chosen: dict[str, tuple[tuple[int, str, str], Trial]] = {}
    for run, status in zip(runs, statuses):
        t = _trial_from_run(run, status if isinstance(status, dict) else None)
        if t is None:
            continue
        key = params_key(t.params)
        rank = (_PREFERENCE.get(t.status, 0), run.created_at or "", t.run_id or "")  # then the newest
        if key not in chosen or rank > chosen[key][0]:
            chosen[key] = (rank, t)
    return [t for _, t in chosen.values()], grid


def remote_sweep(client: Any, bucket: str, sweep_id: str, *, metric: str = DEFAULT_METRIC) -> Sweep | None:
    """The sweep's table, built from its runs in gs://bucket/runs/ (None when it has none)."""
    trials, grid_doc = remote_trials(client, bucket, sweep_id)
    if not trials:
        return None
    if grid_doc:
        grid = Grid.from_mapping(grid_doc)
    else:  # the values each parameter took, in trial order
        ordered = sorted(trials, key=lambda t: t.trial)
        params: dict[str, list[Any]] = {}
        for t in ordered:
            for k, v in t.params.items():
                if v not in params.setdefault(k, []):
                    params[k].append(v)
        grid = Grid(params)
    order = {params_key(p): i for i, p in enumerate(grid.trials(), start=1)}
    for t in trials:
        t.trial = order.get(params_key(t.params), t.trial)
    trials.sort(key=lambda t: t.trial)
    created = min((t.started_at for t in trials if t.started_at), default=None) or _now()
    return Sweep(sweep_id, grid, trials, metric, {}, f"gs://{bucket}/runs/", created_at=created, updated_at=_now())


def plan_remote(client: Any, bucket: str, sweep: Sweep) -> list[Trial]:
    """Match the sweep's trials with its runs already in the bucket: succeeded ones are kept (and not
    run again), unfinished ones keep their run id (they resume from their checkpoints), failed and new
    ones get a new run id. Returns the trials to run, in grid order."""
    from newsclf.runs import new_run_id

    existing, _ = remote_trials(client, bucket, sweep.sweep_id)
    by_key = {params_key(t.params): t for t in existing}
    todo = []
    for i, t in enumerate(sweep.trials):
        old = by_key.get(params_key(t.params))
        if old is not None and old.status == SUCCEEDED:
            sweep.trials[i] = dataclasses.replace(old, trial=t.trial, params=t.params)
            continue
        if old is not None and old.status != FAILED:
            t.run_id = old.run_id
        else:
            t.run_id = new_run_id(f"{sweep.sweep_id}{t.trial}")
        todo.append(t)
    return todo


def write_plans(client: Any, bucket: str, sweep: Sweep, trials: Iterable[Trial]) -> None:
    """runs/<run-id>/run.json for each trial that has none yet, so the bucket knows the whole sweep."""
    from newsclf.cloud import layout
    from newsclf.cloud.storage.errors import ConflictError
    from newsclf.cloud.storage.objects import write_json

    b = client.bucket(bucket)
    for t in trials:
        assert t.run_id is not None
        try:
            write_json(b, layout.RunLayout(t.run_id).config, plan_record(t.run_id, sweep.sweep_id, t, sweep.grid),
                       if_generation_match=0)  # fmt: skip
        except ConflictError:
            pass  # an unfinished trial being resumed: its record is there


def runs_arg(trials: Iterable[Trial]) -> str:
    """`--sweep-runs`: which trials the job runs, under which run ids ({"0": "RUN_ID", ...})."""
    return json.dumps({str(t.trial): t.run_id for t in trials}, separators=(",", ":"))


def parse_runs_arg(text: str, grid: Grid) -> dict[int, str]:
    from newsclf.cloud import layout

    try:
        doc = json.loads(text)
        runs = {int(k): str(v) for k, v in doc.items()}
    except (ValueError, AttributeError, TypeError):
        raise InputError(
            '--sweep-runs must be a JSON object {"TRIAL": "RUN_ID"} (set by `newsclf cloud run`)'
        ) from None
    for i, run_id in runs.items():
        if not 1 <= i <= len(grid) or not layout.is_valid_run_id(run_id):
            raise InputError(f"--sweep-runs names trial {i} / run {run_id!r}, which this grid does not have")
    return runs


# -- the job on the VM ----------------------------------------------------------------------------


def run_sweep_job(
    client: Any,
    bucket: str,
    job_run_id: str,
    base: "TrainOptions",
    workdir: Path,
    sweep: Sweep,
    runs: dict[int, str],
    *,
    callbacks: Callable[[Trial], Sequence[Any]] = lambda t: (),
    on_change: Callable[[Sweep, Trial], None] | None = None,
) -> int:
    """In the container: the trials in `runs` one after another, each an ordinary `newsclf job` run
    (runs/<run-id>/, status.json, checkpoint sync, resume). When the VM's own run id is the only
    trial's, that run is the job; otherwise runs/<job_run_id>/status.json follows the whole sweep.

    Returns the exit code: 0 unless every trial failed (130 re-raised as KeyboardInterrupt).
    """

    from newsclf.cloud import layout
    from newsclf.cloud.storage.objects import read_json
    from newsclf.job import FAILED as JOB_FAILED
    from newsclf.job import SUCCEEDED as JOB_SUCCEEDED
    from newsclf.job import run_job, running_status
    from newsclf.runstate import write_status

    by_index = {t.trial: t for t in sweep.trials}
    todo = [by_index[i] for i in sorted(runs)]
    for t in todo:
        t.run_id = runs[t.trial]
    single = len(todo) == 1 and todo[0].run_id == job_run_id
    b = client.bucket(bucket)
    lay = layout.RunLayout(job_run_id)
    status: dict[str, Any] = {}
    if not single:
        previous = read_json(b, lay.status) or {}
        status = {
            **running_status(job_run_id, previous),
            RUN_SWEEP_ID: sweep.sweep_id,
            "trials": {t.run_id: PENDING for t in todo},
        }
        write_status(b, job_run_id, status)
    for t in todo:
        assert t.run_id is not None
        t.status, t.started_at, t.t0 = RUNNING, _now(), time.monotonic()
        if on_change:
            on_change(sweep, t)
        options = trial_options(base, t, sweep.sweep_id)  # a copy: run_job sets its paths
        try:
            result = run_job(client, bucket, t.run_id, options, workdir, callbacks=tuple(callbacks(t)))
        except KeyboardInterrupt:
            t.finish(INTERRUPTED, error="interrupted")
            if on_change:
                on_change(sweep, t)
            raise  # the sweep's status stays `running`: a restarted VM carries on with it
        ok = result.state == JOB_SUCCEEDED
        t.finish(SUCCEEDED if ok else FAILED, error=None if ok else result.error, metrics=result.metrics)
        if on_change:
            on_change(sweep, t)
        if not single:
            status["trials"][t.run_id] = t.status
            write_status(b, job_run_id, status)
            shutil.rmtree(Path(workdir) / "models" / t.run_id, ignore_errors=True)  # it is in the bucket now
    failed = [t for t in todo if t.status == FAILED]
    code = 1 if todo and len(failed) == len(todo) else 0
    if not single:
        status.update(
            state=JOB_FAILED if code else JOB_SUCCEEDED,
            exit_code=code,
            finished_at=_now(),
            error=f"all {len(todo)} trials failed; first: {failed[0].error}" if code else None,
        )
        write_status(b, job_run_id, status)
    return code


# -- cloud: up to N VMs at once, driven from here -------------------------------------------------------


def slot_vm_name(vm_name: str, sweep_id: str, slot: int) -> str:
    """`newsclf-train-1a2b3c4d-0`: the slot's VM (reused for its next trial), a valid instance name."""
    name = f"{vm_name}-{short_id(sweep_id)}-{slot}"
    if len(name) > 63:
        name = f"{vm_name[: 63 - len(name)]}-{short_id(sweep_id)}-{slot}".replace("--", "-")
    return name


@dataclass
class CloudEvent:
    """What happens to a trial on its VM (for the CLI's table and lines)."""

    trial: Trial
    kind: str  # starting | started | tick | line | finished | vm_stopped | error
    vm: str | None = None
    text: str | None = None


_EVAL_RE = re.compile(r"epoch [\d.]+ validation: accuracy ([\d.]+)\s+macro-F1 ([\d.]+)\s+loss ([\d.]+)")


def run_cloud_parallel(
    make_clients: Callable[[], Any],
    project: str,
    bucket: str,
    sweep: Sweep,
    todo: list[Trial],
    make_request: Callable[[Trial, str], Any],
    *,
    vm_names: list[str],
    poll_s: float,
    keep_vm: bool = False,
    on_event: Callable[[CloudEvent], None] | None = None,
    stop: threading.Event | None = None,
) -> list[str]:
    """Run `todo` on up to len(vm_names) VMs at once: each trial is created/started, followed and
    stopped exactly like a single `cloud run` (start_run / follow / stop_vm). A VM already
    running one of these trials (an earlier, detached attempt) is followed, not restarted.

    Returns the VM names used. Setting `stop` makes the workers stop taking new trials and stop
    following (the VMs finish their current trial and power off by themselves).
    """
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from newsclf.cloud.compute.follow import JobLine, Outcome, Tick, follow as compute_follow
    from newsclf.cloud.compute.lifecycle import start_run, stop_vm
    from newsclf.cloud.compute.store import RunStore
    from newsclf.cloud.compute.vm import ACTIVE_STATES, DOWN_STATES, get_vm, list_vms

    stop = stop or threading.Event()
    emit = on_event or (lambda e: None)
    pending: "queue.Queue[Trial]" = queue.Queue()
    lock = threading.Lock()
    metric_idx = {"accuracy": 1, "macro_f1": 2, "loss": 3}.get(sweep.metric)

    # trials already running on one of our VMs are followed by that VM's worker first
    first = make_clients()
    running = {}
    for vm in list_vms(first, project):
        if vm.name in vm_names and vm.status in ACTIVE_STATES and vm.run_id:
            running[vm.run_id] = vm
    attached: dict[str, Trial] = {}
    for t in todo:
        vm = running.get(t.run_id or "")
        if vm is not None:
            attached[vm.name] = t
        else:
            pending.put(t)
    used: list[str] = []

    def follow(clients: Any, store: Any, trial: Trial, vm: Any) -> None:
        trial.vm = vm.name
        outcome = None
        for ev in compute_follow(clients, project, vm, trial.run_id, store, poll_s=poll_s):
            if isinstance(ev, JobLine):
                m = _EVAL_RE.search(ev.text)
                if m and metric_idx:
                    value = float(m.group(metric_idx))
                    better = max if METRICS[sweep.metric] == "max" else min
                    trial.live_best = value if trial.live_best is None else better(trial.live_best, value)
                emit(CloudEvent(trial, "line", vm.name, ev.text))
            elif isinstance(ev, Tick):
                trial.progress = f"VM {ev.vm_status}" + (f" · {ev.phase}" if ev.phase else "")
                emit(CloudEvent(trial, "tick", vm.name))
            elif isinstance(ev, Outcome):
                outcome = ev
            if stop.is_set():
                return  # detached: the VM carries on and powers off by itself
        if outcome is None:
            return
        state = outcome.state if outcome.state in (SUCCEEDED, FAILED) else INTERRUPTED
        trial.finish(state, error=outcome.error, metrics=outcome.metrics)
        emit(CloudEvent(trial, "finished", vm.name))
        if outcome.vm_status not in (None, *DOWN_STATES) and not keep_vm:
            current = get_vm(clients, project, vm.zone, vm.name)
            if current is not None and current.status not in DOWN_STATES and current.run_id == trial.run_id:
                stop_vm(clients, project, current, poll_s=poll_s)
                emit(CloudEvent(trial, "vm_stopped", vm.name))

    def worker(name: str) -> None:
        clients = make_clients()
        store = RunStore(clients.storage_client(), bucket)
        trial = attached.pop(name, None)
        while not stop.is_set():
            if trial is None:
                try:
                    trial = pending.get_nowait()
                except queue.Empty:
                    return
                with lock:
                    if name not in used:
                        used.append(name)
                trial.status, trial.t0, trial.started_at, trial.vm = RUNNING, time.monotonic(), _now(), name
                trial.error, trial.progress = None, "starting VM"
                emit(CloudEvent(trial, "starting", name))
                try:
                    started = start_run(clients, project, make_request(trial, name), store=store, poll_s=poll_s)
                except Exception as e:  # noqa: BLE001 - this trial failed to start; the others go on
                    trial.finish(FAILED, error=first_line(e))
                    emit(CloudEvent(trial, "error", name, first_line(e)))
                    trial = None
                    continue
                vm = started.vm
                emit(CloudEvent(trial, "started", vm.name, vm.zone))
            else:
                with lock:
                    if name not in used:
                        used.append(name)
                vm = running[trial.run_id or ""]
                trial.status, trial.t0, trial.vm, trial.progress = RUNNING, time.monotonic(), name, "following"
                emit(CloudEvent(trial, "started", vm.name, vm.zone))
            try:
                follow(clients, store, trial, vm)
            except Exception as e:  # noqa: BLE001 - e.g. the API unreachable for many polls
                trial.finish(FAILED, error=first_line(e))
                emit(CloudEvent(trial, "error", name, first_line(e)))
            trial = None

    with ThreadPoolExecutor(max_workers=len(vm_names), thread_name_prefix="sweep-vm") as pool:
        futures = [pool.submit(worker, n) for n in vm_names]
        try:
            while not all(f.done() for f in futures):
                time.sleep(0.1)
        except KeyboardInterrupt:
            stop.set()
            for f in futures:
                try:
                    f.result(timeout=max(30.0, poll_s * 4))
                except Exception:  # noqa: BLE001 - already on the way out
                    pass
            raise
        for f in futures:
            f.result()
    return sorted(used, key=vm_names.index)
