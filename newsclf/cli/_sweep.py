"""Sweeps in the CLI: the tables, `train --sweep` and `models list --sweep` (cloud sweeps: cli/_cloud_sweep.py).

The live table (stderr, terminals only), plain progress lines otherwise, and the final table on stdout.
Heavy imports stay inside functions (this module is imported by command bodies only).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def resolve_grid(spec: str | None, sweep_file: Path | None, metric: str | None) -> tuple[Grid, str]:
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


def _cells(t: dict[str, Any] | Trial, names: list[str], metric: str, *, live: bool, wide: bool) -> list[Any]:
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


def live_table(sweep: Sweep) -> Any:
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

    def __init__(self, sweep: Sweep) -> None:
        self.sweep = sweep
        self.live: Any = None
        self.lines = not (_output.state.quiet or _output.state.json)
        self.lock = threading.RLock()

    def __enter__(self) -> SweepView:
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

    def changed(self, sweep: Sweep, trial: Trial) -> None:
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

    def callbacks(self, trial: Trial) -> list[Any]:
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


def _finish(doc: dict[str, Any], sweep: Sweep, *, pull_hint: bool = False, extra: dict[str, Any] | None = None) -> None:
    """Emit the summary; exit 1 when every trial failed."""
    data = {**doc, **(extra or {})}
    render = render_summary(doc, pull_hint=pull_hint)
    if sweep.all_failed():
        first = min(sweep.trials, key=lambda t: t.trial)
        message = (
            f"All {len(sweep.trials)} trials of sweep {sweep.sweep_id} failed (trial {first.trial}: {first.error}): "
            "fix the cause and run the same command again" + (" with --resume" if not pull_hint else "")
        )
        _output.emit(data, render, exit_code=1, errors=[message])
        _output.emit_error(message, 1)
        raise typer.Exit(1)
    _output.emit(data, render)


# -- newsclf train --sweep ----------------------------------------------------------------------------


def check_train_flags(*, sweeping: bool, metric: str | None, resume: bool, run: str | None, num_processes: int) -> None:
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


def _run_local(sweep: Sweep, options: Any) -> None:
    from newsclf import sweep as sw
    from newsclf.cli._progress import quiet_libraries as _quiet_libraries

    todo = [t for t in sweep.trials if t.status != sw.SUCCEEDED]
    done = len(sweep.trials) - len(todo)
    kept = f" ({done} already succeeded)" if done else ""
    model = (
        "the swept base models"
        if "base_model" in sweep.grid.params
        else (options.base_model or "the packaged all-MiniLM-L6-v2")
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
