"""Sweeps in the CLI: `train --sweep`, the job's `--sweep`, `cloud run --sweep`, `models list --sweep`.

The live table (stderr, terminals only), plain progress lines otherwise, and the final table on stdout.
Heavy imports stay inside functions (this module is imported by command bodies only).
"""

from __future__ import annotations

import threading
import time
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
SWEEP_OPTIONS = ("sweep", "sweep_file", "metric", "sweep_id", "sweep_runs")


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
    status = get("status")
    shown = status
    if live and status == "running" and get("progress"):
        shown = f"running · {get('progress')}"
    params = get("params") or {}
    if d is not None:
        objective, seconds = d.get("objective"), d.get("seconds")
    else:
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
    *, sweeping: bool, metric: str | None, sweep_runs: str | None, resume: bool, run: str | None, num_processes: int
) -> None:
    if sweep_runs is not None:
        raise typer.BadParameter("--sweep-runs is set by `newsclf cloud run` for the job; run sweeps with --sweep")
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


# -- newsclf job --sweep (in the container) -----------------------------------------------------------


def job_sweep_args(args: list[str]) -> dict[str, Any] | None:
    """The sweep flags among `newsclf job`'s train options, or None when there is no --sweep."""
    from newsclf.cli import app

    train_cmd = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    params = train_cmd.make_context("newsclf job", list(args)).params
    if params.get("sweep_file") is not None:
        raise typer.BadParameter("--sweep-file cannot be used in a job: give the grid with --sweep")
    if params.get("sweep") is None:
        if params.get("sweep_runs") is not None or params.get("metric") is not None:
            raise typer.BadParameter("--sweep-runs and --metric need --sweep")
        return None
    return {k: params.get(k) for k in SWEEP_OPTIONS}


def job_sweep(client: Any, bucket: str, run_id: str, options: Any, workdir: Path, sweep_args: dict[str, Any]) -> None:
    """`newsclf job --run-id ID --sweep GRID ...`: the trials as runs in the bucket (see sweep.run_sweep_job)."""
    from newsclf import sweep as sw
    from newsclf.cli.train import _progress_callback, _quiet_libraries

    grid, metric = resolve_grid(sweep_args["sweep"], None, sweep_args["metric"])
    sw.validate_trials(options, grid)
    sid = sweep_args["sweep_id"] or sw.make_sweep_id(grid, sw.base_identity(options, grid))
    sw.check_sweep_id(sid)
    if sweep_args["sweep_runs"]:
        runs = sw.parse_runs_arg(sweep_args["sweep_runs"], grid)
    else:  # by hand: every trial, as RUN_ID-1, RUN_ID-2, ...
        runs = {i: f"{run_id}-{i}" for i in range(1, len(grid) + 1)}
    sweep = sw.Sweep.new(sid, grid, metric=metric, location=f"gs://{bucket}/runs/")
    _output.info(f"Sweep {sid}: {len(runs)} of {len(grid)} trials in this job ({run_id})")
    _quiet_libraries()
    open_callbacks: list[Any] = []

    def callbacks(trial: "Trial") -> list[Any]:
        for cb in open_callbacks:
            cb.close()
        open_callbacks.clear()
        if _output.state.quiet or _output.state.json:
            return []
        open_callbacks.append(_progress_callback())
        return list(open_callbacks)

    view = SweepView(sweep)
    try:
        code = sw.run_sweep_job(
            client, bucket, run_id, options, workdir, sweep, runs, callbacks=callbacks, on_change=view.changed
        )
    finally:
        for cb in open_callbacks:
            cb.close()
    ran = [t for t in sweep.trials if t.trial in runs]
    sweep.trials = ran
    doc = sweep.summary()
    if code:
        message = f"All {len(ran)} trials of sweep {sid} failed (see runs/<run-id>/status.json in gs://{bucket})"
        _output.emit(doc, render_summary(doc, pull_hint=True), exit_code=code, errors=[message])
        _output.emit_error(message, code)
        raise typer.Exit(code)
    _output.emit(doc, render_summary(doc, pull_hint=True))


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


def check_cloud_flags(*, sweeping: bool, parallel: int | None, resume: str | None, detach: bool) -> None:
    if not sweeping:
        if parallel is not None:
            raise typer.BadParameter(
                "--parallel runs a sweep's trials on several VMs: use it with --sweep or --sweep-file"
            )
        return
    if resume is not None:
        raise typer.BadParameter(
            "--resume RUN_ID restarts one run; a sweep carries on when you run the same command again"
        )
    if detach and parallel is not None:
        raise typer.BadParameter("--detach needs the sweep on one VM: drop --parallel (this command drives the VMs)")


def cloud_run(
    settings: Any,
    project: str,
    clients: Any,
    store: Any,
    req: Any,
    *,
    spec: str | None,
    sweep_file: Path | None,
    metric: str | None,
    parallel: int | None,
    detach: bool,
    poll_s: float,
) -> None:
    """`newsclf cloud run --sweep ...`: the whole grid in one job on one VM, or each trial on one of
    up to --parallel VMs; then the table, built from the runs in the bucket."""
    import dataclasses

    from newsclf import sweep as sw
    from newsclf.cloud.compute.clients import make_clients
    from newsclf.cloud.compute.lifecycle import start_run
    from newsclf.runs import new_run_id

    grid, metric = resolve_grid(spec, sweep_file, metric)
    options, explicit = cloud_base(list(req.train_args), grid)
    sw.validate_trials(options, grid)
    sid = sw.make_sweep_id(grid, {"cloud": explicit})
    bucket = store.bucket
    client = store.client
    sweep = sw.Sweep.new(sid, grid, metric=metric, base=explicit, location=f"gs://{bucket}/runs/")
    todo = sw.plan_remote(client, bucket, sweep)
    done = len(sweep.trials) - len(todo)
    base_args = list(req.train_args)
    sweep_args = ["--sweep", grid.spec(), "--sweep-id", sid, "--metric", metric]
    extra: dict[str, Any] = {"vms": []}
    if not todo:
        _output.info(f"Sweep {sid}: all {len(sweep.trials)} trials already succeeded in gs://{bucket}/runs/")
        final = sw.remote_sweep(client, bucket, sid, metric=metric) or sweep
        _finish(final.summary(), final, pull_hint=True, extra=extra)
        return
    if done:
        _output.info(
            f"Sweep {sid}: {done} of {len(sweep.trials)} trials already succeeded; running the other {len(todo)}"
        )
    sw.write_plans(client, bucket, sweep, todo)
    view = SweepView(sweep)
    hourly = None

    if parallel is None:  # one VM, one job, every trial
        job_run = new_run_id(sid)
        job_req = dataclasses.replace(
            req, run_id=job_run, sweep_id=sid,
            train_args=[*base_args, *sweep_args, "--sweep-runs", sw.runs_arg(todo)],
        )  # fmt: skip
        from newsclf.cloud import layout
        from newsclf.cloud.storage.objects import write_json

        record = sw.job_record(job_run, sid, {t.trial: t.run_id for t in todo}, grid)
        write_json(client.bucket(bucket), layout.RunLayout(job_run).config, record)  # `models list`: a sweep job
        started = start_run(clients, project, job_req, store=store, poll_s=poll_s)
        vm = started.vm
        hourly = vm.hourly_usd
        _output.info(
            f"Sweep {sid}: {len(todo)} trials one after another in run {job_run} on VM {vm.name} in {vm.zone} "
            f"({vm.hardware()}, est. {'?' if hourly is None else f'${hourly:,.2f}'}/h; the VM stops itself after "
            f"{req.max_hours:g} h in all: raise --max-hours for long sweeps)"
        )
        extra.update(vms=[vm.name], job_run_id=job_run)
        if detach:
            _output.info(
                f"Follow it: newsclf cloud logs {job_run} --follow · the table: newsclf models list --sweep {sid}"
            )
            data = {"sweep_id": sid, "state": "detached", "job_run_id": job_run, "vm": vm.name, "zone": vm.zone}
            _output.emit(data, lambda c: c.print(sid, highlight=False))
            return
        for t in todo:
            t.vm = vm.name
        outcome = _follow_sequential(clients, project, vm, job_run, store, sweep, todo, view, poll_s)
        if outcome is None:
            _cloud_detached(sid, f"the job {job_run} keeps running on VM {vm.name}", extra)
        if outcome.state != "succeeded" and outcome.error:
            _output.warn(f"Sweep job {job_run} {outcome.state}: {outcome.error}")
    else:
        n = min(parallel, len(todo))
        vm_names = [sw.slot_vm_name(req.vm_name, sid, k) for k in range(n)]

        def make_request(trial: "Trial", name: str) -> Any:
            return dataclasses.replace(
                req, run_id=trial.run_id, vm_name=name, sweep_id=sid,
                train_args=[*base_args, *sweep_args, "--sweep-runs", sw.runs_arg([trial])],
            )  # fmt: skip

        def on_event(event: Any) -> None:
            if event.kind in ("started",):
                view.changed(sweep, event.trial)
            elif event.kind in ("finished", "error"):
                view.changed(sweep, event.trial)
            elif event.kind == "vm_stopped":
                view.say(f"Stopped VM {event.vm}")

        _output.info(f"Sweep {sid}: {len(todo)} trials on up to {n} VMs ({', '.join(vm_names)})")
        stop = threading.Event()
        try:
            with view:
                used = sw.run_cloud_parallel(
                    lambda: make_clients(settings), project, bucket, sweep, todo, make_request,
                    vm_names=vm_names, poll_s=poll_s, keep_vm=req.keep_vm, on_event=on_event, stop=stop,
                )  # fmt: skip
        except KeyboardInterrupt:
            running = [t for t in todo if t.status == "running"]
            _cloud_detached(
                sid,
                f"{len(running)} trials keep running on their VMs (they stop themselves); trials not started wait",
                {"vms": vm_names},
            )
        extra["vms"] = used
        if not req.keep_vm:
            _output.info(
                f"VMs {', '.join(used)} are stopped; their disks cost until deleted: "
                f"newsclf cloud stop --sweep {sid} --delete"
            )
    final = sw.remote_sweep(client, bucket, sid, metric=metric) or sweep
    _finish(final.summary(), final, pull_hint=True, extra=extra)


def _cloud_detached(sweep_id: str, what: str, extra: dict[str, Any]) -> None:
    message = f"Detached from sweep {sweep_id}: {what}; run the same command again to carry on"
    _output.emit({"sweep_id": sweep_id, "state": "detached", **extra}, lambda c: c.print(sweep_id, highlight=False),
                 exit_code=130, errors=[message])  # fmt: skip
    _output.warn(message)
    if not _output.state.quiet:
        _output.stderr().print(f"The table so far: newsclf models list --sweep {sweep_id}", highlight=False)
    raise typer.Exit(130)


def _follow_sequential(clients: Any, project: str, vm: Any, job_run: str, store: Any, sweep: "Sweep",
                       todo: list["Trial"], view: SweepView, poll_s: float) -> Any:  # fmt: skip
    """Follow the sweep job: its lines, and the trials' states from the bucket; None on Ctrl-C."""
    from newsclf import sweep as sw
    from newsclf.cloud.compute.follow import JobLine, Outcome, Tick, follow

    last = 0.0

    def refresh() -> None:
        for t in todo:
            if t.status in (sw.SUCCEEDED, sw.FAILED):
                continue
            status = store.status(t.run_id) or {}
            state = status.get("state")
            if state == sw.RUNNING and t.status != sw.RUNNING:
                t.status, t.t0, t.started_at = sw.RUNNING, time.monotonic(), status.get("started_at")
                view.changed(sweep, t)
            elif state in (sw.SUCCEEDED, sw.FAILED) and status.get("finished_at"):
                metrics = store.metrics(t.run_id) if state == sw.SUCCEEDED else None
                t.finish(state, error=status.get("error"), metrics=metrics)
                view.changed(sweep, t)

    try:
        with view:
            for event in follow(clients, project, vm, job_run, store, poll_s=poll_s):
                if isinstance(event, JobLine):
                    view.say(event.text)
                elif isinstance(event, Tick):
                    if time.monotonic() - last >= max(poll_s, 5.0) or last == 0.0:
                        last = time.monotonic()
                        refresh()
                elif isinstance(event, Outcome):
                    refresh()
                    return event
    except KeyboardInterrupt:
        return None
    return None


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
