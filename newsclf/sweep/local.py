"""Local sweeps: every trial in this process, one after another, the table in models/sweeps/<id>/summary.json
(rewritten atomically after every trial)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.errors import InputError
from newsclf.sweep.grid import SWEEPS_DIR, params_key, trial_options
from newsclf.sweep.model import (
    FAILED,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    Sweep,
    Trial,
    _now,
    first_line,
)

if TYPE_CHECKING:
    from newsclf.train import TrainOptions

log = logging.getLogger(__name__)

SUMMARY = "summary.json"

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
    base: TrainOptions,
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
        except Exception as e:
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
