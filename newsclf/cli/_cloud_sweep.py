"""Cloud sweeps in the CLI: `cloud run --sweep` (submit and follow the Batch job), `newsclf job --sweep-plan`
(one task's trial), and the sweep parts of `cloud status` / `cloud stop`.

Apart from cli/_sweep.py (tables and local sweeps) because these parse train flags with the train
command, which itself calls cli/_sweep.py for `train --sweep`. Heavy imports stay inside functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from newsclf.cli import _output
from newsclf.cli._sweep import SWEEP_OPTIONS, SweepView, _finish, resolve_grid

if TYPE_CHECKING:
    from newsclf.sweep import Grid


# -- newsclf job --sweep-plan (a Batch task) -----------------------------------------------------------


def job_trial(client: Any, bucket: str, plan: str, workdir: Path) -> None:
    """`newsclf job --sweep-plan OBJECT`: this task's trial (BATCH_TASK_INDEX) as an ordinary run.

    Exits 0 when the trial succeeded (or had already), batch.TRIAL_FAILED_EXIT when it failed by
    itself (Batch does not retry that), 130 when stopped (Batch retries: the run resumes)."""
    import logging
    import os
    import tempfile

    from newsclf import sweep as sw
    from newsclf.cli._progress import progress_callback as _progress_callback
    from newsclf.cli._progress import quiet_libraries as _quiet_libraries
    from newsclf.cli._train_args import train_options as _train_options
    from newsclf.cloud.batch import TRIAL_FAILED_EXIT
    from newsclf.job import run_job

    raw = os.environ.get("BATCH_TASK_INDEX", "")
    if not raw.isdigit():
        raise typer.BadParameter(
            "BATCH_TASK_INDEX is not set: --sweep-plan runs as a task of the Batch job `newsclf cloud run --sweep` "
            "submits", param_hint="--sweep-plan",
        )  # fmt: skip
    task = sw.read_task(client, bucket, plan, int(raw))
    trial = task.trial
    assert trial.run_id is not None
    options = sw.trial_options(_train_options(task.train_args), trial, task.sweep_id)
    from newsclf.job import allow_hub_downloads, hub_env

    online = hub_env(options.base_model, os.environ)
    if online:
        _output.info(f"Downloading {options.base_model} from the Hugging Face Hub (HF_HUB_OFFLINE=0 for this job)")
    allow_hub_downloads(online)
    _output.info(
        f"Sweep {task.sweep_id}, task {task.index + 1}/{task.count}: trial {trial.trial} ({sw.label(trial.params)}) "
        f"as run {trial.run_id} in gs://{bucket}/runs/{trial.run_id}/"
    )
    _quiet_libraries()
    callbacks = () if (_output.state.quiet or _output.state.json) else (_progress_callback(),)
    # the task's own log goes to runs/<run-id>/logs/ too (Cloud Logging has it live): `cloud logs RUN`
    attempt = os.environ.get("BATCH_TASK_RETRY_ATTEMPT", "0")
    log_name = f"batch-{os.environ.get('BATCH_JOB_ID', 'job')}-task{task.index}-attempt{attempt}.log"
    Path(workdir).mkdir(parents=True, exist_ok=True)
    log_file = Path(tempfile.mkdtemp(dir=workdir)) / log_name
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%SZ"))
    handler.setLevel(logging.INFO)
    logger = logging.getLogger("newsclf")
    logger.addHandler(handler)
    try:
        result = run_job(client, bucket, trial.run_id, options, workdir, callbacks=callbacks)
    finally:
        for cb in callbacks:
            cb.close()
        logger.removeHandler(handler)
        handler.close()
        try:
            sw.upload_task_log(client, bucket, trial.run_id, log_file)
        except Exception as e:  # noqa: BLE001 - the trial's outcome matters more than its log
            _output.warn(f"Could not upload the task's log: {e}")
    data = {"sweep_id": task.sweep_id, "trial": trial.trial, "params": trial.params, "task_index": task.index,
            **dataclasses.asdict(result)}  # fmt: skip
    if result.exit_code != 0:
        message = (
            f"Trial {trial.trial} ({sw.label(trial.params)}) failed: {result.error} "
            f"(recorded in gs://{bucket}/runs/{trial.run_id}/status.json)"
        )
        _output.emit(data, None, exit_code=TRIAL_FAILED_EXIT, errors=[message])
        _output.emit_error(message, TRIAL_FAILED_EXIT)
        raise typer.Exit(TRIAL_FAILED_EXIT)
    _output.emit(data, lambda c: c.print(f"Run {trial.run_id} succeeded", highlight=False))


# -- newsclf cloud run --sweep ------------------------------------------------------------------------


def cloud_base(train_args: list[str], grid: Grid) -> tuple[Any, dict[str, Any]]:
    """The train options a cloud sweep's trials share: (TrainOptions, for range checks) and the
    explicit flags (what identifies the sweep, independent of this machine's settings)."""
    from newsclf import sweep as sw
    from newsclf.cli._train_args import train_command
    from newsclf.cli._train_args import train_options as _train_options

    train_cmd = train_command()
    ctx = train_cmd.make_context("newsclf cloud run --", list(train_args))
    given = [k for k in SWEEP_OPTIONS if ctx.params.get(k) is not None]
    if given:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in given)
        raise typer.BadParameter(f"{flags} after `--`: give the sweep to `newsclf cloud run` itself, before `--`")
    options = _train_options(train_args)  # refuses flags a job cannot take
    defaults = {p.name: p.default for p in train_cmd.params}
    explicit = {
        sw.ALIASES.get(k, k): (str(v) if isinstance(v, Path) else v)
        for k, v in ctx.params.items()
        if v != defaults.get(k) and k not in sw.RUNTIME_ONLY
    }
    clash = [sw.SWEEPABLE[n] for n in grid.params if n in explicit]
    if clash:
        raise typer.BadParameter(f"{', '.join(clash)} is both swept and given after `--`: drop one of the two")
    return options, explicit


# `cloud run` options that concern the single run's own VM, not a sweep's Batch job
SINGLE_RUN_ONLY = {"resume": "--resume", "keep_vm": "--keep-vm", "force": "--force", "zone": "--zone",
                   "wandb_key_in_metadata": "--wandb-key-in-metadata"}  # fmt: skip


def check_cloud_flags(*, sweeping: bool, parallel: int | None, given: set[str] | None = None) -> None:
    if not sweeping:
        if parallel is not None:
            raise typer.BadParameter(
                "--parallel runs a sweep's trials on several VMs: use it with --sweep or --sweep-file"
            )
        return
    if "resume" in (given or set()):
        raise typer.BadParameter(
            "--resume RUN_ID restarts one run; a sweep carries on when you run the same command again"
        )
    bad = [flag for name, flag in SINGLE_RUN_ONLY.items() if name in (given or set())]
    if bad:
        raise typer.BadParameter(
            f"{', '.join(bad)} concern a single run's VM; a sweep runs on Cloud Batch VMs in NEWSCLF_REGION "
            "(the W&B key from NEWSCLF_WANDB_SECRET): drop them"
        )


def cloud_run(
    settings: Any,
    project: str,
    store: Any,
    *,
    image: str,
    train_args: list[str],
    spec: str | None,
    sweep_file: Path | None,
    metric: str | None,
    parallel: int | None,
    machine_type: str,
    gpu: tuple[str, int] | None,
    spot: bool,
    max_hours: float,
    disk_gb: int,
    detach: bool,
    poll_s: float,
) -> None:
    """`newsclf cloud run --sweep ...`: one Cloud Batch job, one task per unfinished trial, at most
    --parallel at once; followed here until it ends (detachable), then the table from the bucket."""
    from newsclf import sweep as sw
    from newsclf.cloud import batch
    from newsclf.cloud.compute.hardware import check_hardware
    from newsclf.cloud.compute.request import check_max_hours
    from newsclf.cloud.iam import vm_service_account

    grid, metric = resolve_grid(spec, sweep_file, metric)
    options, explicit = cloud_base(list(train_args), grid)
    sw.validate_trials(options, grid)
    check_hardware(machine_type, gpu)  # the same VM rules as a single run: refused before anything is submitted
    check_max_hours(max_hours)
    sid = sw.make_sweep_id(grid, {"cloud": explicit})
    bucket, client = store.bucket, store.client
    sweep = sw.Sweep.new(sid, grid, metric=metric, base=explicit, location=f"gs://{bucket}/runs/")
    account = vm_service_account(settings, project)
    n = parallel or 1

    def make_request(job_id: str, plan: str, task_count: int) -> batch.SweepJobRequest:
        return batch.SweepJobRequest(
            project=project, region=settings.region, job_id=job_id, sweep_id=sid, bucket=bucket, plan=plan,
            task_count=task_count, parallel=n, image=image, machine_type=machine_type, gpu=gpu, spot=spot,
            max_hours=max_hours, disk_gb=disk_gb, service_account=account, wandb_secret=settings.wandb_secret,
        )  # fmt: skip

    batch_client = batch.make_client(settings)
    started = sw.start_cloud_sweep(batch_client, client, bucket, sweep, project=project, region=settings.region,
                                   train_args=list(train_args), make_request=make_request)  # fmt: skip
    done = sum(1 for t in sweep.trials if t.status == sw.SUCCEEDED)
    if started.job is None:
        _output.info(f"Sweep {sid}: all {len(sweep.trials)} trials already succeeded in gs://{bucket}/runs/")
        final = sw.remote_sweep(client, bucket, sid, metric=metric) or sweep
        _finish(final.summary(), final, pull_hint=True)
        return
    job = started.job
    extra: dict[str, Any] = {"job_id": job.job_id, "region": job.region, "attached": started.attached}
    kept = f"{done} of {len(sweep.trials)} trials already succeeded; " if done else ""
    hourly = job.hourly_usd
    if started.attached:
        _output.info(f"Sweep {sid}: {kept}following Batch job {job.job_id} ({job.state}), submitted earlier")
    else:
        _output.info(
            f"Sweep {sid}: {kept}{len(started.todo)} trials in Batch job {job.job_id} ({job.region}), at most "
            f"{min(n, len(started.todo))} at once on {compute_hardware(machine_type, gpu, spot)} "
            f"(est. {'?' if hourly is None else f'${hourly:,.2f}'}/h per VM; each trial stops after {max_hours:g} h)"
        )
    if detach:
        _output.info(
            f"The sweep runs on without this command: newsclf cloud status · newsclf models list --sweep {sid} "
            f"· stop it: newsclf cloud stop --sweep {sid}"
        )
        data = {"sweep_id": sid, "state": "detached", **extra, "trials": len(started.todo)}
        _output.emit(data, lambda c: c.print(sid, highlight=False))
        return
    view = SweepView(sweep)
    last = None
    try:
        with view:
            for event in sw.follow_cloud_sweep(batch_client, client, bucket, started, poll_s=poll_s):
                if event.kind == "trial" and event.trial is not None:
                    if event.attempt and event.trial.status == sw.RUNNING:
                        view.say(f"Trial {event.trial.trial}/{len(sweep.trials)}: attempt {event.attempt} "
                                 "(retried by Batch), resuming from its checkpoints")  # fmt: skip
                    view.changed(sweep, event.trial)
                last = event
    except KeyboardInterrupt:
        _cloud_detached(sid, f"Batch job {job.job_id} goes on running its trials", extra)
    if last is not None and last.job is not None and last.job.state == "CANCELLED":
        _output.warn(f"Batch job {job.job_id} was cancelled (newsclf cloud stop --sweep {sid})")
    if last is not None and last.cost_usd is not None:
        extra["est_usd"] = last.cost_usd
    final = sw.final_sweep(client, bucket, started)
    _finish(final.summary(), final, pull_hint=True, extra=extra)


def compute_hardware(machine_type: str, gpu: tuple[str, int] | None, spot: bool) -> str:
    g = f" + {gpu[1]} x {gpu[0]}" if gpu else ""
    return f"{machine_type}{g}{' (spot)' if spot else ''}"


def _cloud_detached(sweep_id: str, what: str, extra: dict[str, Any]) -> None:
    message = f"Detached from sweep {sweep_id}: {what}; run the same command again to follow it"
    _output.emit({"sweep_id": sweep_id, "state": "detached", **extra}, lambda c: c.print(sweep_id, highlight=False),
                 exit_code=130, errors=[message])  # fmt: skip
    _output.warn(message)
    if not _output.state.quiet:
        _output.stderr().print(f"The table so far: newsclf models list --sweep {sweep_id}", highlight=False)
    raise typer.Exit(130)


# -- newsclf cloud status / stop --sweep --------------------------------------------------------------


def status_jobs(settings: Any, project: str) -> list[dict[str, Any]]:
    """`cloud status`: newsclf's sweep jobs on Cloud Batch in NEWSCLF_REGION (a warning, not a failure,
    when Batch cannot be asked: the VMs are still worth showing)."""
    from newsclf.cloud import batch
    from newsclf.cloud.google.endpoints import is_local_endpoint
    from newsclf.errors import NewsclfError

    if settings.batch_api_endpoint is None and is_local_endpoint(settings.compute_api_endpoint):
        return []  # Compute on a local stand-in: never mix in the real Batch API
    try:
        return batch.describe_jobs(batch.make_client(settings), project, settings.region)
    except NewsclfError as e:
        _output.warn(f"Cannot list the sweep jobs on Cloud Batch: {e}")
        return []


def render_jobs(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    def _money(usd: float | None) -> str:
        return "?" if usd is None else f"${usd:,.2f}"

    if not console.is_terminal:
        console.width = max(console.width, 200)
    table = Table("sweep job", "sweep", "state", "tasks", "retries", "machine", "spot", "est. $/h", "est. so far",
                  box=None, title="Sweep jobs on Cloud Batch", title_justify="left")  # fmt: skip
    for r in rows:
        tasks = ", ".join(f"{n} {s.lower()}" for s, n in r["tasks"].items()) or "-"
        machine = r["machine_type"] + (f" + {r['gpu']}" if r["gpu"] else "")
        table.add_row(r["job_id"], r["sweep_id"] or "-", r["state"], f"{tasks} (of {r['task_count']})",
                      str(r["retries"]), machine, "yes" if r["spot"] else "no", _money(r["est_usd_per_hour"]),
                      _money(r["est_usd_so_far"]))  # fmt: skip
    console.print(table)


def stop_sweep(sweep_id: str, *, yes: bool, poll_s: float, confirm: Callable[[str], None]) -> None:
    """`cloud stop --sweep SWEEP_ID`: cancel the sweep's Batch jobs (their running trials stop; Batch
    deletes the VMs), then delete them and wait until Batch no longer lists them."""
    from newsclf import sweep as sw
    from newsclf.cloud import batch
    from newsclf.cloud.google.project import resolve_project
    from newsclf.config import get_settings

    sw.check_sweep_id(sweep_id)
    settings = get_settings()
    project = resolve_project(settings, endpoint=settings.batch_api_endpoint)
    client = batch.make_client(settings)
    jobs = batch.list_jobs(client, project, settings.region, sweep_id=sweep_id)
    if not jobs:
        data = {"sweep_id": sweep_id, "jobs": []}
        _output.emit(
            data,
            lambda c: c.print(
                f"No Batch job of sweep {sweep_id} in {settings.region} (project {project}): nothing to stop",
                highlight=False,
            ),
        )
        return
    busy = [j for j in jobs if j.active]
    if busy and not yes:
        running = sum(j.counts.get("RUNNING", 0) + j.counts.get("ASSIGNED", 0) for j in busy)
        confirm(
            f"Cancel Batch job {', '.join(j.job_id for j in busy)} of sweep {sweep_id}, stopping {running} running trials"
        )
    results = []
    for job in jobs:
        if job.active:
            _output.info(f"Cancelling Batch job {job.job_id} ({job.state}); waiting until it is gone")
        results.append(batch.stop_job(client, job, poll_s=poll_s))
    rows = [{"job_id": r.job_id, "before": r.before, "cancelled": r.cancelled, "deleted": r.deleted} for r in results]

    def render(console: Any) -> None:
        for r in results:
            what = "Cancelled and deleted" if r.cancelled else "Deleted"
            console.print(f"{what} Batch job {r.job_id} (was {r.before})", highlight=False)
        if busy:
            console.print(f"Run the same `newsclf cloud run --sweep ...` again to finish sweep {sweep_id}",
                          highlight=False)  # fmt: skip

    _output.emit({"sweep_id": sweep_id, "jobs": rows}, render)
