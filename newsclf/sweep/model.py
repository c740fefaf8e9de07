"""Trials and the sweep's table: what became of each point of the grid, ranked by the objective."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from newsclf.runstate import RunState, now
from newsclf.sweep.grid import DEFAULT_METRIC, METRICS, Grid

SUMMARY_VERSION = 1

# one set of run states for runs, jobs and trials (newsclf.runstate)
PENDING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED = (
    RunState.PENDING,
    RunState.RUNNING,
    RunState.SUCCEEDED,
    RunState.FAILED,
    RunState.INTERRUPTED,
)
STATUSES = (PENDING, RUNNING, SUCCEEDED, FAILED, INTERRUPTED)


def _now() -> str:
    return now()  # status.json's format (newsclf.runstate), also for trials


def _created_now() -> str:
    """A run's created_at: microseconds, so that runs made in the same second still order by age."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def first_line(e: BaseException) -> str:
    """An exception as one line: newsclf's own message, else `Type: message`."""
    from newsclf.errors import NewsclfError

    text = (str(e).strip().splitlines() or [""])[0]
    if isinstance(e, NewsclfError):
        return text or type(e).__name__
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


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
    attempt: int | None = field(default=None, compare=False)  # cloud: the run's attempt (retries add one)

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
    def from_dict(cls, d: dict[str, Any]) -> Trial:
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
            location: str = "") -> Sweep:  # fmt: skip
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
    def from_summary(cls, doc: dict[str, Any]) -> Sweep:
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
