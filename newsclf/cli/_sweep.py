"""Sweeps in the CLI: `train --sweep`, the job's `--sweep`, `cloud run --sweep`, `models list --sweep`.

The live table (stderr, terminals only), plain progress lines otherwise, and the final table on stdout.
Heavy imports stay inside functions (this module is imported by command bodies only).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import typer

from newsclf.cli import _output
from newsclf.errors import InputError

if TYPE_CHECKING:
    from newsclf.sweep import Grid, Sweep, Trial

METRIC_NAMES = {"macro_f1": "macro-F1", "accuracy": "accuracy", "precision": "precision", "recall": "recall",
                "loss": "loss"}  # fmt: skip
STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "yellow", "interrupted": "yellow", "pending": "dim"}
SWEEP_OPTIONS = ("sweep", "sweep_file", "metric", "sweep_id")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _took(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def _short_value(value: Any, width: int = 28) -> str:
    from newsclf.sweep import fmt_value

    text = fmt_value(value)
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def resolve_grid(spec: str | None, sweep_file: Path | None, metric: str | None) -> tuple["Grid", str]:
    """The grid (from --sweep or --sweep-file) and the objective (--metric > the file's > macro_f1)."""
    from newsclf import sweep as sw

    if spec is not None and sweep_file is not None:
        raise typer.BadParameter("give --sweep or --sweep-file, not both")
    file_metric = None
    if sweep_file is not None:
        grid, file_metric = sw.load_sweep_file(sweep_file)
    else:
        grid = sw.parse_grid(spec or "")
    return grid, sw.resolve_metric(metric) if metric else (file_metric or sw.DEFAULT_METRIC)


# -- tables ------------------------------------------------------------------------------------------


def _cells(t: dict[str, Any] | "Trial", names: list[str], metric: str, *, live: bool, wide: bool) -> list[Any]:
    """One row: parameter values, status, the objective, [test macro-F1, time], run id."""
    from rich.text import Text

    d = t if isinstance(t, dict) else None
    get = (lambda k: d.get(k)) if d is not None else (lambda k: getattr(t, k))  # noqa: E731
    status = str(get("status"))
    shown = status
    if live and status == "running" and get("progress"):
        shown = f"running · {get('progress')}"
    params = get("params") or {}
    if d is not None:
        objective, seconds = d.get("objective"), d.get("seconds")
    else:
        assert not isinstance(t, dict)
        objective, seconds = t.objective(metric), t.elapsed()
        if objective is None and status == "running":
            objective = t.live_best  # best so far
    test = (get("test") or {}).get("macro_f1")
    return [
        *(_short_value(params.get(n, "-")) for n in names),
        Text(shown, style=STATUS_STYLE.get(status, "")),
        _fmt(objective),
        *([_fmt(test), _took(seconds)] if wide else []),
        get("run_id") or "-",
    ]


def _table(title: str, first: list[str], names: list[str], objective: str, *, wide: bool) -> Any:
    """Numbers and run ids are never cut; on a narrow terminal test macro-F1 and time are left out."""
    from rich.table import Column, Table

    def num(header: str) -> Column:
        return Column(header, min_width=6)

    return Table(
        *(num(h) for h in first), *(Column(n, max_width=30) for n in names), Column("status", no_wrap=True),
        num(objective), *([num("test macro-F1"), num("time")] if wide else []),
        Column("run", no_wrap=True, min_width=22), box=None, title=title, title_justify="left",
    )  # fmt: skip


def live_table(sweep: "Sweep") -> Any:
    names = list(sweep.grid.params)
    done = sum(1 for t in sweep.trials if t.status in ("succeeded", "failed"))
    wide = _output.stderr().width >= 110
    table = _table(f"sweep {sweep.sweep_id}: {done}/{len(sweep.trials)} trials done", ["trial"], names,
                   f"best val {METRIC_NAMES[sweep.metric]}", wide=wide)  # fmt: skip
    for t in sorted(sweep.trials, key=lambda t: t.trial):
        table.add_row(str(t.trial), *_cells(t, names, sweep.metric, live=True, wide=wide))
    return table


def render_summary(doc: dict[str, Any], *, pull_hint: bool = False) -> Callable[[Any], None]:
    """The final table: trials best first (by the objective), the best one marked, failures explained."""

    def render(console: Any) -> None:
        if not console.is_terminal:
            console.width = max(console.width, 160)  # a pipe gets whole cells
        wide = console.width >= 110
        metric = doc["metric"]
        names = list(doc["grid"])
        counts = doc["counts"]
        better = "higher" if doc["goal"] == "maximize" else "lower"
        states = ("succeeded", "failed", "running", "interrupted", "pending")
        parts = [f"{counts[s]} {s}" for s in states if counts.get(s)]
        title = (
            f"sweep {doc['sweep_id']}: {counts['trials']} trials ({', '.join(parts)}); "
            f"objective: validation {metric}, {better} is better"
        )
        table = _table(title, ["rank", "trial"], names, f"val {METRIC_NAMES[metric]}", wide=wide)
        for t in doc["trials"]:
            rank = "-" if t.get("rank") is None else str(t["rank"])
            if t.get("best"):
                rank = f"[bold]{rank} *[/bold]"
            table.add_row(rank, str(t["trial"]), *_cells(t, names, metric, live=False, wide=wide))
        console.print(table)
        for t in sorted(doc["trials"], key=lambda t: t["trial"]):
            if t["status"] == "failed":
                error = t.get("error") or "unknown error"
                console.print(f"trial {t['trial']} failed: {error}", markup=False, highlight=False)
        best = doc.get("best")
        if best:
            console.print(
                f"* best: trial {best['trial']} ({_params_line(best['params'])}), run {best['run_id']}",
                markup=False, highlight=False,
            )  # fmt: skip
            if pull_hint:
                console.print(f"Pull it: newsclf models pull {best['run_id']}", highlight=False)
            else:
                use = f'Use it: newsclf predict --model {best["run_id"]} "some headline and text"'
                console.print(use, highlight=False)
        if doc.get("location"):
            console.print(f"Summary: {doc['location']}", highlight=False)

    return render


def _params_line(params: dict[str, Any]) -> str:
    from newsclf.sweep import label

    return label(params)


class SweepView:
    """A live table on stderr for a person at a terminal; otherwise one line per trial event."""

    def __init__(self, sweep: "Sweep") -> None:
        self.sweep = sweep
        self.live: Any = None
        self.lines = not (_output.state.quiet or _output.state.json)
        self.lock = threading.RLock()

    def __enter__(self) -> "SweepView":
        if _output.show_progress():
            from rich.live import Live

            self.live = Live(
                console=_output.stderr(), refresh_per_second=4, transient=True,
                get_renderable=lambda: live_table(self.sweep),
            )  # fmt: skip
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)
            self.live = None

    def say(self, text: str) -> None:
        with self.lock:
            if self.live is not None:
                self.live.console.print(text, markup=False, highlight=False)
            elif self.lines:
                _output.stderr().print(text, markup=False, highlight=False)

    def changed(self, sweep: "Sweep", trial: "Trial") -> None:
        """A trial started or ended."""
        from newsclf.sweep import label

        n = len(sweep.trials)
        head = f"Trial {trial.trial}/{n} ({label(trial.params)})"
        if trial.status == "running":
            where = f" on VM {trial.vm}" if trial.vm else ""
            self.say(f"{head}: run {trial.run_id}{where}")
        elif trial.status == "succeeded":
            value = trial.objective(sweep.metric)
            self.say(f"{head} succeeded in {_took(trial.seconds)}: validation {sweep.metric} {_fmt(value)}")
        elif trial.status == "failed":
            _output.warn(f"{head} failed: {trial.error}")
        elif trial.status == "interrupted":
            self.say(f"{head} interrupted")
        if self.live is not None:
            self.live.refresh()

    def callbacks(self, trial: "Trial") -> list[Any]:
        """TrainerCallbacks feeding the table (steps, best value so far) and per-epoch lines."""
        if not self.lines:
            return []
        from transformers import TrainerCallback

        view, metric = self, self.sweep.metric

        class Progress(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                trial.progress = f"step {state.global_step}/{state.max_steps}"

            def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
                if not state.is_world_process_zero or not metrics or "eval_macro_f1" not in metrics:
                    return
                value = metrics.get(f"eval_{metric}")
                if isinstance(value, (int, float)):
                    pick = min if metric == "loss" else max
                    trial.live_best = value if trial.live_best is None else pick(trial.live_best, value)
                if view.live is None:
                    view.say(
                        f"  trial {trial.trial}: epoch {state.epoch:g} validation: accuracy "
                        f"{_fmt(metrics.get('eval_accuracy'))}  macro-F1 {_fmt(metrics.get('eval_macro_f1'))}  "
                        f"loss {_fmt(metrics.get('eval_loss'))}"
                    )

        return [Progress()]


def _finish(
    doc: dict[str, Any], sweep: "Sweep", *, pull_hint: bool = False, extra: dict[str, Any] | None = None
) -> None:
    """Emit the summary; exit 1 when every trial failed."""
    data = {**doc, **(extra or {})}
    render = render_summary(doc, pull_hint=pull_hint)
    if sweep.all_failed():
        first = min(sweep.trials, key=lambda t: t.trial)
        message = (
            f"All {len(sweep.trials)} trials of sweep {sweep.sweep_id} failed (trial {first.trial}: {first.error}): "
            "fix the cause and run the same command again"
            + (" with --resume" if not pull_hint else "")
        )
        _output.emit(data, render, exit_code=1, errors=[message])
        _output.emit_error(message, 1)
        raise typer.Exit(1)
    _output.emit(data, render)


# -- newsclf train --sweep ----------------------------------------------------------------------------


def check_train_flags(
    *, sweeping: bool, metric: str | None, resume: bool, run: str | None, num_processes: int
) -> None:
    if not sweeping:
        if metric is not None and not (resume and run):
            raise typer.BadParameter("--metric picks a sweep's objective: use it with --sweep or --sweep-file")
        return
    if resume and run is not None:
        raise typer.BadParameter(
            "give the sweep or its id, not both: "
            f"`newsclf train --sweep ... --resume` or `newsclf train --resume {run}`"
        )
    if num_processes > 1:
        raise typer.BadParameter("--num-processes cannot be combined with --sweep: trials run one after another here")


def is_local_sweep(models_dir: Path, ref: str) -> bool:
    from newsclf.sweep import summary_path

    return ref.startswith("sweep-") or summary_path(models_dir, ref).is_file()


def train_sweep(
    options: Any,
    *,
    spec: str | None,
    sweep_file: Path | None,
    metric: str | None,
    resume: bool,
    given: set[str],
    sweep_id: str | None = None,
) -> None:
    """`newsclf train --sweep ...`: every trial in this process, one after another."""
    from newsclf import sweep as sw

    grid, metric = resolve_grid(spec, sweep_file, metric)
    clash = [sw.SWEEPABLE[n] for n in grid.params if n in given]
    if clash:
        raise typer.BadParameter(f"{', '.join(clash)} is both swept and given as a flag: drop one of the two")
    sw.validate_trials(options, grid)
    identity = sw.base_identity(options, grid)
    sid = sw.check_sweep_id(sweep_id) if sweep_id else sw.make_sweep_id(grid, identity)
    models_dir = Path(options.models_dir)
    previous = sw.load_local(models_dir, sid)
    if previous is not None and not resume:
        ok = sum(1 for t in previous.trials if t.status == sw.SUCCEEDED)
        raise InputError(
            f"Sweep {sid} already exists ({ok} of {len(previous.trials)} trials succeeded, "
            f"{sw.summary_path(models_dir, sid)}): add --resume to continue it, or change the grid or options"
        )
    if resume and previous is None:
        raise InputError(
            f"No sweep {sid} to resume in {models_dir / sw.SWEEPS_DIR}/ (the grid and the other options must match "
            "the first run): drop --resume to start it"
        )
    sweep = sw.Sweep.new(sid, grid, metric=metric, base=identity)
    if previous is not None:
        sw.merge_previous(sweep, previous)
    _run_local(sweep, options)


def resume_sweep(
    models_dir: Path, sweep_id: str, *, metric: str | None, wandb: bool, wandb_offline: bool, cpu: bool
) -> None:
    """`newsclf train --resume SWEEP_ID`: the sweep's grid and options from its summary.json."""
    import dataclasses

    from newsclf import sweep as sw
    from newsclf.train import TrainOptions

    previous = sw.load_local(models_dir, sweep_id)
    if previous is None:
        raise InputError(
            f"No sweep {sweep_id} in {models_dir / sw.SWEEPS_DIR}/: list them with `ls {models_dir / sw.SWEEPS_DIR}`"
        )
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    values = {k: v for k, v in previous.base.items() if k in names}
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    options = TrainOptions(**values, models_dir=Path(models_dir), wandb=wandb, wandb_offline=wandb_offline, cpu=cpu)
    sweep = sw.Sweep.new(sweep_id, previous.grid, metric=sw.resolve_metric(metric) if metric else previous.metric,
                         base=previous.base)  # fmt: skip
    sw.merge_previous(sweep, previous)
    _run_local(sweep, options)


def _run_local(sweep: "Sweep", options: Any) -> None:
    from newsclf import sweep as sw
    from newsclf.cli.train import _quiet_libraries

    todo = [t for t in sweep.trials if t.status != sw.SUCCEEDED]
    done = len(sweep.trials) - len(todo)
    kept = f" ({done} already succeeded)" if done else ""
    model = "the swept base models" if "base_model" in sweep.grid.params else (
        options.base_model or "the packaged all-MiniLM-L6-v2"
    )
    _output.info(
        f"Sweep {sweep.sweep_id}: {len(sweep.trials)} trials{kept} over {', '.join(sweep.grid.params)}; "
        f"objective: validation {sweep.metric}; training {model} on {options.data_dir}"
    )
    _quiet_libraries()
    view = SweepView(sweep)
    try:
        with view:
            sw.run_local(sweep, options, on_change=view.changed, callbacks=view.callbacks)
    except KeyboardInterrupt:
        finished = sum(1 for t in sweep.trials if t.status in (sw.SUCCEEDED, sw.FAILED))
        message = (
            f"Sweep {sweep.sweep_id} interrupted with {finished} of {len(sweep.trials)} trials finished: "
            f"continue it with `newsclf train --resume {sweep.sweep_id}`"
        )
        doc = sweep.summary()
        _output.emit(doc, render_summary(doc), exit_code=130, errors=[message])
        _output.warn(message)
        raise typer.Exit(130) from None
    _finish(sweep.summary(), sweep)


# -- newsclf job --sweep-plan (a Batch task) -----------------------------------------------------------


def job_trial(client: Any, bucket: str, plan: str, workdir: Path) -> None:
    """`newsclf job --sweep-plan OBJECT`: this task's trial (BATCH_TASK_INDEX) as an ordinary run.

    Exits 0 when the trial succeeded (or had already), batch.TRIAL_FAILED_EXIT when it failed by
    itself (Batch does not retry that), 130 when stopped (Batch retries: the run resumes)."""
    import logging
    import os
    import tempfile

    from newsclf import sweep as sw
    from newsclf.cli.job import _train_options
    from newsclf.cli.train import _progress_callback, _quiet_libraries
    from newsclf.cloud import layout
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
            blob = client.bucket(bucket).blob(layout.RunLayout(trial.run_id).logs + log_name)
            blob.upload_from_filename(str(log_file), content_type="text/plain")
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


def cloud_base(train_args: list[str], grid: "Grid") -> tuple[Any, dict[str, Any]]:
    """The train options a cloud sweep's trials share: (TrainOptions, for range checks) and the
    explicit flags (what identifies the sweep, independent of this machine's settings)."""
    from newsclf import sweep as sw
    from newsclf.cli import app
    from newsclf.cli.job import _train_options

    train_cmd = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
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
            raise typer.BadParameter("--parallel runs a sweep's trials on several VMs: use it with --sweep or --sweep-file")
        return
    if "resume" in (given or set()):
        raise typer.BadParameter("--resume RUN_ID restarts one run; a sweep carries on when you run the same command again")
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
    from newsclf.cloud.iam import vm_service_account

    from newsclf.cloud.compute.hardware import check_hardware
    from newsclf.cloud.compute.request import check_max_hours

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


# -- newsclf models list --sweep ----------------------------------------------------------------------


def models_list_sweep(client: Any, bucket: str, sweep_id: str, metric: str | None) -> None:
    from newsclf import sweep as sw

    final = sw.remote_sweep(client, bucket, sweep_id, metric=sw.resolve_metric(metric) if metric else sw.DEFAULT_METRIC)
    if final is None:
        raise InputError(
            f"No runs of sweep {sweep_id} in gs://{bucket}/runs/: see the sweep column of `newsclf models list`"
        )
    doc = final.summary()
    _output.emit({"bucket": bucket, **doc}, render_summary(doc, pull_hint=True))


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
        _output.emit(data, lambda c: c.print(
            f"No Batch job of sweep {sweep_id} in {settings.region} (project {project}): nothing to stop", highlight=False))
        return
    busy = [j for j in jobs if j.active]
    if busy and not yes:
        running = sum(j.counts.get("RUNNING", 0) + j.counts.get("ASSIGNED", 0) for j in busy)
        confirm(f"Cancel Batch job {', '.join(j.job_id for j in busy)} of sweep {sweep_id}, stopping {running} running trials")
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
