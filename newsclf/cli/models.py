"""`newsclf models`: trained runs in Cloud Storage."""

from __future__ import annotations

from pathlib import Path

import typer

from newsclf.cli import _output
from newsclf.cli._transfer import bucket_option, connect, human_bytes, summary_line, transfer_progress

app = typer.Typer(help="List, pull and push trained models in Cloud Storage.", no_args_is_help=True)


@app.command("list")
def list_(
    bucket: str | None = bucket_option(),
    sweep: str | None = typer.Option(
        None, "--sweep", metavar="SWEEP_ID", help="Show one sweep's trials as its table, best first."
    ),
    metric: str | None = typer.Option(
        None, "--metric", help="With --sweep: rank by macro_f1 (default), accuracy, precision, recall or loss."
    ),
) -> None:
    """List the training runs in gs://BUCKET/runs/, newest first.

    Shows each run's date, base model, test macro-F1 and model size, read from
    runs/<id>/run.json and metrics.json. Unfinished runs are marked incomplete.
    With --sweep, the sweep's table (as `cloud run --sweep` printed it).

    Example:  newsclf models list --json

    Example:  newsclf models list --sweep sweep-1a2b3c4d
    """
    from newsclf.cloud.storage.runs import list_runs

    if metric is not None and sweep is None:
        raise typer.BadParameter("--metric ranks a sweep's trials: use it with --sweep SWEEP_ID")
    _, name, client = connect(bucket)
    if sweep is not None:
        from newsclf.cli._sweep import models_list_sweep

        models_list_sweep(client, name, sweep, metric)
        return
    runs = list_runs(client, name)
    sweep_of = {r.run_id: (r.config or {}).get("sweep_id") for r in runs}
    sweep_job = {r.run_id for r in runs if (r.config or {}).get("sweep_job")}
    data = {
        "bucket": name,
        "runs": [{**r.to_dict(), "sweep_id": sweep_of[r.run_id], "sweep_job": r.run_id in sweep_job} for r in runs],
    }

    def render(console) -> None:
        if not runs:
            console.print(
                f"No runs in gs://{name}/runs/ yet: train one (`newsclf cloud run`) or push a local one "
                "(`newsclf models push latest`)",
                highlight=False,
            )
            return
        from rich.table import Table

        table = Table(box=None)
        sweeps = any(sweep_of.values())
        for col in ("run", "created", "base model", "test F1", "size", "state", *(["sweep"] if sweeps else [])):
            table.add_column(col, no_wrap=col != "base model", overflow="fold")
        for r in runs:
            f1 = "" if r.test_f1 is None else f"{r.test_f1:.4f}"
            created = (r.created_at or "")[:19].replace("T", " ")
            state = "complete" if r.complete else "[yellow]incomplete[/yellow]"
            if r.run_id in sweep_job:
                state = "sweep job"  # the job that ran a sweep's trials on one VM: no model of its own
            extra = [sweep_of[r.run_id] or ""] if sweeps else []
            table.add_row(r.run_id, created, r.base_model or "", f1, human_bytes(r.model_bytes), state, *extra)
        console.print(table)

    _output.emit(data, render)


@app.command("pull")
def pull(
    run: str = typer.Argument("latest", help="Run id, or `latest` for the newest complete run."),
    dest: Path | None = typer.Option(None, "--dest", help="Models directory (default: NEWSCLF_MODELS_DIR, models/)."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Also pull the Trainer checkpoints."),
    bucket: str | None = bucket_option(),
) -> None:
    """Download a trained run into models/<run-id>/, ready for `newsclf predict --model latest`.

    Model and tokenizer files land at the top of the run directory, with
    run_config.json, and metrics.json last (a run without it is unfinished).
    Every file is crc32c-verified; unchanged files are skipped, and an
    interrupted pull resumes. models/latest is pointed at the run when you
    pull `latest` or a run newer than the current one.

    Example:  newsclf models pull latest
    """
    from newsclf.cloud.storage.runs import pull_run

    settings, name, client = connect(bucket)
    models_dir = dest if dest is not None else settings.models_dir
    with transfer_progress() as make:
        pulled = pull_run(client, name, run, models_dir, checkpoints=checkpoints, progress=make(f"pull {run}"))
    data = {
        "bucket": name,
        "run_id": pulled.run_id,
        "path": str(pulled.path),
        "latest": pulled.latest,
        **pulled.transfer.to_dict(),
    }

    def render(console) -> None:
        console.print(summary_line(f"gs://{name}/runs/{pulled.run_id}/ -> {pulled.path}/", data), highlight=False)
        if pulled.latest:
            console.print(f"{models_dir}/latest -> {pulled.run_id}", highlight=False)

    _output.emit(data, render)


@app.command("push")
def push(
    run: str = typer.Argument("latest", help="Run id, path of a run directory, or `latest`."),
    checkpoints: bool = typer.Option(False, "--checkpoints", help="Also push checkpoints/ (large)."),
    bucket: str | None = bucket_option(),
) -> None:
    """Upload a finished local run to gs://BUCKET/runs/<run-id>/.

    Model files go to runs/<id>/model/, run_config.json to run.json and
    metrics.json last. Runs in the bucket are create-only: pushing again skips
    identical files and refuses to replace different ones. An unfinished run
    (no metrics.json) is refused.

    Example:  newsclf models push latest
    """
    from newsclf.cloud.storage.runs import check_pushable, push_run
    from newsclf.config import get_settings
    from newsclf.runs import resolve_run

    run_dir = resolve_run(get_settings().models_dir, run)
    check_pushable(run_dir)  # before any network: an unfinished run is refused even offline
    _, name, client = connect(bucket)
    with transfer_progress() as make:
        run_id, result = push_run(client, name, run_dir, checkpoints=checkpoints, progress=make(f"push {run_dir.name}"))
    data = {"bucket": name, "run_id": run_id, "uri": f"gs://{name}/runs/{run_id}/", **result.to_dict()}

    def render(console) -> None:
        console.print(summary_line(f"{run_dir}/ -> {data['uri']}", data), highlight=False)

    _output.emit(data, render)
