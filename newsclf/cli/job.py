"""`newsclf job`: what the training container runs on the VM (`cloud run` starts it for you)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import typer

from newsclf.cli import _output
from newsclf.cli._transfer import bucket_option

# train flags that make no sense inside the job (data and run dir come from the bucket)
NOT_IN_JOB = ("data", "demo", "resume", "run", "num_processes", "run_id")


def _train_options(args: list[str]) -> Any:
    """TrainOptions from `newsclf train` flags, parsed by the train command itself (one definition)."""
    from newsclf.cli import app
    from newsclf.config import get_settings
    from newsclf.train import TrainOptions

    train_cmd = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    ctx = train_cmd.make_context("newsclf job", list(args))
    params = ctx.params
    defaults = {p.name: p.default for p in train_cmd.params}
    bad = [f"--{k.replace('_', '-')}" for k in NOT_IN_JOB if params.get(k) != defaults.get(k)]
    if bad:
        raise typer.BadParameter(f"{', '.join(bad)} cannot be used in a job: the job takes data and run from the bucket")
    names = {f.name for f in dataclasses.fields(TrainOptions)}
    overrides = {k: v for k, v in params.items() if k in names and v not in (None, False)}
    if params.get("model"):
        overrides["base_model"] = params["model"]
    return TrainOptions.from_settings(get_settings(), **overrides)


def job(
    ctx: typer.Context,
    bucket: Optional[str] = bucket_option(),
    run_id: str = typer.Option(..., "--run-id", help="The run to execute, resume or skip: runs/<RUN_ID>/ in the bucket."),
    workdir: Path = typer.Option(Path("."), "--workdir", help="Local scratch directory for data and checkpoints."),
) -> None:
    """Run one training job against the bucket: what the image runs on a VM.

    Pulls data/processed (or data/raw, prepared here), trains with any `newsclf train` options given after the job's own, and syncs checkpoints to runs/RUN_ID/checkpoints/ at every save.

    Writes the model, metrics.json and status.json (running, then succeeded or failed) under runs/RUN_ID/. A run that already succeeded is skipped; an unfinished one resumes from its checkpoints. Exit code 0 only on success.

    Example:  newsclf job --bucket my-bucket --run-id 20261127-120000-abc123 --epochs 2 --lr 5e-5
    """
    from newsclf.cli._transfer import connect
    from newsclf.cloud import layout
    from newsclf.job import run_job

    if not layout.is_valid_run_id(run_id):
        raise typer.BadParameter(f"{run_id!r} is not a run id (letters, digits, . _ -)", param_hint="--run-id")
    options = _train_options(ctx.args)
    from newsclf.cli import _sweep

    sweep_args = _sweep.job_sweep_args(ctx.args)  # `cloud run --sweep`: the trials of a sweep
    _, name, client = connect(bucket)
    if sweep_args is not None:
        _sweep.job_sweep(client, name, run_id, options, workdir, sweep_args)
        return
    _output.info(f"Job {run_id}: gs://{name}/runs/{run_id}/ (training {options.base_model or 'the packaged all-MiniLM-L6-v2'})")
    from newsclf.cli.train import _progress_callback, _quiet_libraries

    _quiet_libraries()
    callbacks = () if (_output.state.quiet or _output.state.json) else (_progress_callback(),)
    try:
        result = run_job(client, name, run_id, options, workdir, callbacks=callbacks)
    finally:
        for cb in callbacks:
            cb.close()
    data = dataclasses.asdict(result)

    def render(console: Any) -> None:
        if result.skipped:
            console.print(f"Run {run_id} had already succeeded: nothing to do.")
        elif result.exit_code == 0:
            test = result.metrics.get("test") or {}
            console.print(
                f"Run {run_id} succeeded: test macro-F1 {test.get('macro_f1', float('nan')):.4f}; "
                f"model in gs://{name}/runs/{run_id}/model/"
            )

    if result.exit_code != 0:
        message = f"Run {run_id} failed: {result.error} (recorded in gs://{name}/runs/{run_id}/status.json)"
        _output.emit(data, None, exit_code=1, errors=[message])
        _output.emit_error(message, 1)
        raise typer.Exit(1)
    _output.emit(data, render)
