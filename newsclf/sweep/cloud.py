"""Cloud sweeps: trials as runs in the bucket (runs/<run-id>/run.json carries the sweep), the trial plan
the Batch job's tasks read, and the sweep's table read back from the bucket."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from newsclf.errors import InputError
from newsclf.sweep.grid import DEFAULT_METRIC, METRICS, Grid, params_key
from newsclf.sweep.model import (
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    SUCCEEDED,
    Sweep,
    Trial,
    _created_now,
    _now,
)

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
    grids = ((r.config or {}).get("sweep_grid") for r in runs)
    grid = next((g for g in grids if isinstance(g, dict)), None)
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


# -- the trial plan: what each Batch task runs ---------------------------------------------------------

PLAN_VERSION = 1


def plan_object(sweep_id: str, job_id: str) -> str:
    """gs://BUCKET/sweeps/<sweep-id>/<job-id>.json: the plan of one submission (task i runs tasks[i])."""
    return f"sweeps/{sweep_id}/{job_id}.json"


def write_trial_plan(
    client: Any, bucket: str, sweep: Sweep, todo: list[Trial], job_id: str, train_args: list[str]
) -> str:
    """Write the plan before the job exists, so that every task finds its trial; returns its object name."""
    from newsclf.cloud.storage.objects import write_json

    name = plan_object(sweep.sweep_id, job_id)
    doc = {
        "plan_version": PLAN_VERSION,
        "sweep_id": sweep.sweep_id,
        "job_id": job_id,
        "metric": sweep.metric,
        "grid": sweep.grid.to_dict(),
        "train_args": list(train_args),
        "tasks": [{"trial": t.trial, "run_id": t.run_id, "params": t.params} for t in todo],
    }
    write_json(client.bucket(bucket), name, doc)
    return name


@dataclass
class PlannedTask:
    """What one task of a sweep job runs: a trial of the plan, as an ordinary run."""

    sweep_id: str
    trial: Trial
    train_args: list[str]
    index: int
    count: int


def read_task(client: Any, bucket: str, plan: str, index: int) -> PlannedTask:
    """Task `index` of the plan at gs://bucket/<plan> (what `newsclf job --sweep-plan` runs)."""
    from newsclf.cloud import layout
    from newsclf.cloud.storage.objects import read_json

    doc = read_json(client.bucket(bucket), plan)
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list):
        raise InputError(
            f"No sweep plan at gs://{bucket}/{plan}: `newsclf cloud run --sweep` writes it before it submits the job"
        )
    tasks = doc["tasks"]
    if not 0 <= index < len(tasks):
        raise InputError(f"Task {index} is not in the plan gs://{bucket}/{plan} ({len(tasks)} tasks)")
    entry = tasks[index]
    run_id = str(entry.get("run_id") or "")
    if not layout.is_valid_run_id(run_id) or not isinstance(entry.get("params"), dict):
        raise InputError(f"Task {index} of gs://{bucket}/{plan} names no valid run: submit the sweep again")
    grid = Grid.from_mapping(doc.get("grid") or {k: [v] for k, v in entry["params"].items()})
    params = {k: grid.params[k][grid.params[k].index(v)] if v in grid.params.get(k, []) else v
              for k, v in entry["params"].items()}  # fmt: skip
    trial = Trial(int(entry.get("trial") or index + 1), params, run_id=run_id)
    return PlannedTask(
        str(doc.get("sweep_id")), trial, [str(a) for a in doc.get("train_args") or []], index, len(tasks)
    )


def upload_task_log(client: Any, bucket: str, run_id: str, path: Path) -> str:
    """A task's own log to runs/<run-id>/logs/<file name> (what `cloud logs RUN` prints); returns the object."""
    from newsclf.cloud import layout

    name = layout.RunLayout(run_id).logs + path.name
    client.bucket(bucket).blob(name).upload_from_filename(str(path), content_type="text/plain")
    return name


# -- cloud sweeps on Batch: submit, follow from the bucket ---------------------------------------------


@dataclass
class CloudSweep:
    """A sweep's submission: the Batch job running its trials (None when all had succeeded already)."""

    sweep: Sweep
    todo: list[Trial]  # the trials this job runs, in task order
    job: Any = None  # newsclf.cloud.batch.SweepJob
    attached: bool = False  # an earlier submission still running: followed, not submitted again


def start_cloud_sweep(
    batch_client: Any,
    storage_client: Any,
    bucket: str,
    sweep: Sweep,
    *,
    project: str,
    region: str,
    train_args: list[str],
    make_request: Callable[[str, str, int], Any],
) -> CloudSweep:
    """Submit the sweep's unfinished trials as one Batch job (one task each), or attach to the sweep's
    job still running. Succeeded trials are kept; unfinished ones keep their run id (their retry resumes
    from the checkpoints); failed ones start anew. `make_request(job_id, plan, task_count)` gives the
    batch.SweepJobRequest."""
    from newsclf.cloud import batch

    todo = plan_remote(storage_client, bucket, sweep)
    if not todo:
        return CloudSweep(sweep, [])
    running = [j for j in batch.list_jobs(batch_client, project, region, sweep_id=sweep.sweep_id) if j.active]
    if running:  # e.g. the same command after a detach: follow that job, submit nothing
        job = running[0]
        run_ids = read_plan_tasks(storage_client, bucket, sweep.sweep_id, job.job_id) or []
        existing, _ = remote_trials(storage_client, bucket, sweep.sweep_id)
        by_key = {params_key(t.params): t for t in existing}
        for i, t in enumerate(sweep.trials):
            old = by_key.get(params_key(t.params))
            if old is not None:
                sweep.trials[i] = dataclasses.replace(old, trial=t.trial, params=t.params)
        by_run = {t.run_id: t for t in sweep.trials}
        todo = [by_run[r] for r in run_ids if r in by_run]
        return CloudSweep(sweep, todo, job, attached=True)
    write_plans(storage_client, bucket, sweep, todo)
    job_id = batch.job_id_for(sweep.sweep_id)
    plan = write_trial_plan(storage_client, bucket, sweep, todo, job_id, train_args)
    job = batch.submit(batch_client, make_request(job_id, plan, len(todo)))
    return CloudSweep(sweep, todo, job)


def read_plan_tasks(client: Any, bucket: str, sweep_id: str, job_id: str) -> list[str] | None:
    """The run ids of a submission's tasks, in task order (None without a readable plan)."""
    from newsclf.cloud.storage.objects import read_json

    doc = read_json(client.bucket(bucket), plan_object(sweep_id, job_id))
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list):
        return None
    return [str(t.get("run_id")) for t in doc["tasks"] if isinstance(t, dict)]


def task_error(status: dict[str, Any], info: Any) -> str:
    """Why a task Batch failed: the run's own error, else what Batch saw (a run still `running` was stopped
    from outside: preempted or lost VMs, a crash, the run limit, each attempt)."""
    if status.get("state") == FAILED and status.get("error"):
        return str(status["error"])
    codes = ", ".join(str(c) for c in info.exit_codes) or "none"
    return f"Batch gave up on its task after {info.attempts} attempts (exit codes {codes})"


def final_sweep(storage_client: Any, bucket: str, started: CloudSweep) -> Sweep:
    """The sweep's table from the bucket once its job has ended, with the trials Batch gave up on marked
    failed (their runs never wrote a final status)."""
    final = remote_sweep(storage_client, bucket, started.sweep.sweep_id, metric=started.sweep.metric) or started.sweep
    given_up = {t.run_id: t for t in started.todo if t.status == FAILED}
    for t in final.trials:
        gone = given_up.get(t.run_id)
        if gone is not None and t.status not in (SUCCEEDED, FAILED):
            t.status, t.error, t.finished_at = FAILED, gone.error, gone.finished_at
    return final


@dataclass
class CloudEvent:
    """What the CLI renders while it follows a sweep job."""

    kind: str  # trial (a trial started, retried or ended) | tick (a poll) | done (the job ended or is gone)
    trial: Trial | None = None
    job: Any = None  # the job as last read (None: gone)
    cost_usd: float | None = None
    attempt: int | None = None


def follow_cloud_sweep(
    batch_client: Any, storage_client: Any, bucket: str, started: CloudSweep, *, poll_s: float
) -> Iterator[CloudEvent]:
    """Follow the job until it ends: the job's state and task counts from Batch, each trial's state and
    live metrics from its runs/<run-id>/status.json. Stopping the iteration leaves the job running."""
    from newsclf.cloud import batch, layout
    from newsclf.cloud.storage.objects import read_json

    b = storage_client.bucket(bucket)
    sweep = started.sweep
    better = max if METRICS[sweep.metric] == "max" else min
    job = started.job
    while True:
        job = batch.get_job(batch_client, job.name) if job is not None else None
        infos = batch.tasks(batch_client, job.name) if job is not None else {}
        for i, t in enumerate(started.todo):
            if t.status in (SUCCEEDED, FAILED) or not t.run_id:
                continue
            status = read_json(b, layout.RunLayout(t.run_id).status) or {}
            state = status.get("state")
            info = infos.get(i)
            progress = status.get("progress") or {}
            value = (progress.get("validation") or {}).get(sweep.metric)
            if isinstance(value, (int, float)):
                t.live_best = value if t.live_best is None else better(t.live_best, value)
            if progress.get("max_steps"):
                t.progress = (
                    f"epoch {progress.get('epoch') or 0:g} · step {progress.get('step')}/{progress['max_steps']}"
                )
            attempt = int(status.get("attempt") or 0)
            waiting = info is not None and info.state == "PENDING" and t.status != RUNNING
            if state == RUNNING and waiting:
                pass  # an earlier job's attempt left `running`: this job's task has not started yet
            elif state == RUNNING and (t.status != RUNNING or attempt > (t.attempt or 0)):
                retried = t.status == RUNNING or (t.attempt or 0) > 0
                t.status, t.started_at, t.t0 = RUNNING, status.get("started_at"), time.monotonic()
                t.attempt = attempt
                yield CloudEvent("trial", t, job, attempt=attempt if retried or attempt > 1 else None)
            elif state == SUCCEEDED and status.get("finished_at"):
                metrics = read_json(b, layout.RunLayout(t.run_id).metrics) or {}
                t.finish(SUCCEEDED, metrics=metrics)
                t.started_at, t.finished_at = status.get("started_at"), status.get("finished_at")
                yield CloudEvent("trial", t, job)
            elif info is not None and info.state == "FAILED":  # Batch's last word: no retry follows
                t.finish(FAILED, error=task_error(status, info))
                yield CloudEvent("trial", t, job)
            elif info is not None and t.status == PENDING and info.state in ("ASSIGNED", "RUNNING"):
                t.progress = "starting" if info.state == "RUNNING" else "VM assigned"
        cost = batch.cost_so_far(job, infos) if job is not None else None
        if job is None or not job.active:
            yield CloudEvent("done", None, job, cost)
            return
        yield CloudEvent("tick", None, job, cost)
        time.sleep(poll_s)
