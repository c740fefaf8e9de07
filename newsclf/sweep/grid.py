"""A sweep's grid: the swept options and their values, parsed from the command line or a file, and its id.

A sweep's id is a hash of its grid and base options (`sweep-1a2b3c4d`): the same command names the
same sweep, which is how a rerun finds what it already did.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.errors import InputError

if TYPE_CHECKING:
    from newsclf.sweep.model import Trial
    from newsclf.train import TrainOptions


SWEEP_PREFIX = "sweep-"
SWEEPS_DIR = "sweeps"  # models/sweeps/<sweep-id>/summary.json

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


_ID_RE = re.compile(r"^[a-z][a-z0-9_-]{0,40}$")  # also a Compute Engine label value


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
    def from_mapping(cls, mapping: dict[str, Any], source: str = "--sweep") -> Grid:
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
            doc = json.loads(text)
        except ValueError as e:
            raise InputError(f"--sweep is not valid JSON ({e}): write NAME=V1,V2 items or a JSON object") from None
        if not isinstance(doc, dict):
            raise InputError("--sweep JSON must be an object of NAME: [values]")
        return Grid.from_mapping(doc)
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
        key = key.removeprefix(prefix)
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
    rest = sweep_id.removeprefix(SWEEP_PREFIX)
    return re.sub(r"[^a-z0-9-]", "-", rest)[:12].strip("-") or "sweep"


def base_identity(options: TrainOptions, grid: Grid) -> dict[str, Any]:
    """The base options that decide what the trials learn (the swept ones and runtime switches left out)."""
    d = options.to_dict()
    for name in (*RUNTIME_ONLY, *grid.params):
        d.pop(name, None)
    return d


def trial_options(base: TrainOptions, trial: Trial, sweep_id: str) -> TrainOptions:
    """A copy of the base options with the trial's values (and its sweep, for run_config.json and W&B)."""
    return dataclasses.replace(
        base, **trial.params, sweep_id=sweep_id, sweep_params=dict(trial.params), sweep_trial=trial.trial
    )


def validate_trials(base: TrainOptions, grid: Grid) -> None:
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
