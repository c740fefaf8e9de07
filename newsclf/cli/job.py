"""`newsclf job`: what the training container runs on the VM (`cloud run` starts it for you)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from newsclf.cli import _output
from newsclf.cli._train_args import requested_processes as _requested_processes
from newsclf.cli._train_args import train_options as _train_options
from newsclf.cli._transfer import bucket_option
from newsclf.errors import NewsclfError


def _gpu_count(options: Any) -> int:
    from newsclf.train import use_cuda

    if not use_cuda(options):
        return 0
    import torch

    return torch.cuda.device_count()


def _launcher(n: int, bucket: str, run_id: str, workdir: Path, train_args: list[str]) -> Any:
    """What run_job calls to train with n processes under torch.distributed.run, each a `newsclf job`
    that only trains (it sees LOCAL_RANK); their output goes to stderr, the job's log."""

    def launch() -> None:
        from newsclf.job import worker_error

        globals_ = ["--debug"] if _output.state.debug else []
        globals_ += ["--quiet"] if (_output.state.quiet or _output.state.json) else []
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
               "-m", "newsclf", *globals_, "job", "--bucket", bucket, "--run-id", run_id,
               "--workdir", str(workdir), *train_args]  # fmt: skip
        _output.info(f"Starting {n} training processes (torch.distributed.run, one per GPU) for run {run_id}")
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n)))  # share the cores
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=None, text=True, env=env)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:  # stdout stays this job's one result (or JSON document)
                sys.stderr.write(line)
                sys.stderr.flush()
            rc = proc.wait()
        except KeyboardInterrupt:  # SIGTERM (docker stop): torch.distributed.run passes it on to the processes
            proc.terminate()
            proc.wait()
            raise
        if rc != 0:
            error = worker_error(workdir, n)
            raise NewsclfError(error or f"{n} training processes failed (exit {rc}): see the job's log")

    return launch


def job(
    ctx: typer.Context,
    bucket: Optional[str] = bucket_option(),
    run_id: Optional[str] = typer.Option(
        None, "--run-id", help="The run to execute, resume or skip: runs/<RUN_ID>/ in the bucket."
    ),
    workdir: Path = typer.Option(Path("."), "--workdir", help="Local scratch directory for data and checkpoints."),
    sweep_plan: Optional[str] = typer.Option(
        None,
        "--sweep-plan",
        metavar="OBJECT",
        hidden=True,
        help="A cloud sweep's task: the trial at BATCH_TASK_INDEX of this plan in the bucket (set by `cloud run --sweep`).",
    ),
) -> None:
    """Run one training job against the bucket: what the image runs on a VM.

    Pulls data/processed (or data/raw, prepared here), trains with any `newsclf train` options given after the job's own, and syncs checkpoints to runs/RUN_ID/checkpoints/ at every save.

    Writes the model, metrics.json and status.json (running, then succeeded or failed) under runs/RUN_ID/. A run that already succeeded is skipped; an unfinished one resumes from its checkpoints. Exit code 0 only on success.

    Trains data parallel on every GPU of the machine (one process each; --num-processes N to choose).

    Example:  newsclf job --bucket my-bucket --run-id 20261127-120000-abc123 --epochs 2 --lr 5e-5
    """
    from newsclf.cli._transfer import connect
    from newsclf.cloud import layout
    from newsclf.job import run_job, train_worker

    if sweep_plan is not None:  # a task of a cloud sweep's Batch job: the plan names run and options
        if run_id is not None or ctx.args:
            raise typer.BadParameter(
                "the sweep plan names the run and its options: drop --run-id and the train options"
            )
        from newsclf.cli import _cloud_sweep as _sweep

        _, name, client = connect(bucket)
        _sweep.job_trial(client, name, sweep_plan, workdir)
        return
    if run_id is None:
        raise typer.BadParameter("give the run to execute, e.g. --run-id 20261127-120000-abc123", param_hint="--run-id")
    if not layout.is_valid_run_id(run_id):
        raise typer.BadParameter(f"{run_id!r} is not a run id (letters, digits, . _ -)", param_hint="--run-id")
    options = _train_options(ctx.args)
    from newsclf.job import allow_hub_downloads, hub_env

    online = hub_env(options.base_model, os.environ)
    if online and "LOCAL_RANK" not in os.environ:
        _output.info(f"Downloading {options.base_model} from the Hugging Face Hub (HF_HUB_OFFLINE=0 for this job)")
    allow_hub_downloads(online)
    worker = "LOCAL_RANK" in os.environ  # one of the processes a data-parallel job started
    requested = _requested_processes(ctx.args)
    if worker:
        processes = 1
    else:  # every GPU of the VM unless told otherwise: one process would leave the others idle
        processes = requested or max(1, _gpu_count(options))
    _, name, client = connect(bucket)
    from newsclf.cli._progress import progress_callback, quiet_libraries

    quiet_libraries()
    callbacks = () if (_output.state.quiet or _output.state.json) else (progress_callback(),)
    if worker:
        try:
            train_worker(client, name, run_id, options, workdir, callbacks=callbacks)
        finally:
            for cb in callbacks:
                cb.close()
        return
    _output.info(
        f"Job {run_id}: gs://{name}/runs/{run_id}/ (training {options.base_model or 'the packaged all-MiniLM-L6-v2'})"
    )
    launch = _launcher(processes, name, run_id, workdir.resolve(), list(ctx.args)) if processes > 1 else None
    try:
        result = run_job(client, name, run_id, options, workdir, callbacks=callbacks, launch=launch)
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
