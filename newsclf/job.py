"""The in-container training job: data from the bucket, training, everything back under runs/<id>/.

status.json moves `running` -> `succeeded` | `failed`. A restarted VM runs the job again with the
same run id: a succeeded run is left alone, an unfinished one resumes from the checkpoints synced
to runs/<id>/checkpoints/ at every save.

Data parallel (one process per GPU): `run_job` does everything but the training (status, data,
checkpoints in, the run out) and has `launch` start the processes, each running `train_worker`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.errors import InputError, NewsclfError
from newsclf.runstate import RunState, finish, running_status, write_status

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client

    from newsclf.train import TrainOptions

log = logging.getLogger(__name__)

# the states and status.json schema live in newsclf.runstate; these names stay for the sweep code
RUNNING, SUCCEEDED, FAILED, INTERRUPTED = RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED, RunState.INTERRUPTED
SIGTERM_GRACE_S = 20.0  # a preempted VM gets ~30 s: the step in flight, a checkpoint and its upload fit in this


@dataclass
class JobResult:
    run_id: str
    state: str
    exit_code: int
    skipped: bool = False  # the run had already succeeded
    resumed_from: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


# the training image sets these (its default model ships inside it); a named Hub model needs them off
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # `name` or `namespace/name`


def hub_env(base_model: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment changes a job training `base_model` needs: the offline switches off for a Hub id
    when they are on; nothing for the packaged model, a local path, or when already online."""
    from newsclf.train import PACKAGED_MODEL

    if base_model in ("", PACKAGED_MODEL) or not HUB_ID.fullmatch(base_model) or Path(base_model).exists():
        return {}
    if not any(environ.get(k, "").strip().upper() in ("1", "ON", "YES", "TRUE") for k in OFFLINE_VARS):
        return {}
    return dict.fromkeys(OFFLINE_VARS, "0")


def allow_hub_downloads(changes: dict[str, str]) -> None:
    """Apply hub_env's changes to this process (and the processes it starts)."""
    import os
    import sys

    os.environ.update(changes)
    constants = sys.modules.get("huggingface_hub.constants")
    if changes and constants is not None:  # it read the variables when imported: tell it too
        constants.HF_HUB_OFFLINE = False  # type: ignore[attr-defined]


def _checkpoint_sync(client: Client, bucket: Bucket, lay: layout.RunLayout, local: Path) -> Any:
    """A TrainerCallback mirroring the local checkpoints/ folder to runs/<id>/checkpoints/ at every save."""
    from transformers import TrainerCallback

    from newsclf.cloud.storage.client import list_objects
    from newsclf.cloud.storage.retry import retry_policy
    from newsclf.cloud.storage.upload import upload_dir

    class CheckpointSync(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero:
                return
            result = upload_dir(client, bucket, local, lay.checkpoints)
            # the Trainer rotates old checkpoints away locally; drop them remotely too
            kept = {lay.checkpoints + p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
            stale = [n for n in list_objects(client, bucket, lay.checkpoints) if n not in kept]
            for name in stale:
                bucket.blob(name).delete(retry=retry_policy())
            log.info(
                "Checkpoint at step %d synced to %s (%d files uploaded, %d removed)",
                state.global_step,
                layout.uri(bucket.name, lay.checkpoints),
                result.files_transferred,
                len(stale),
            )

    return CheckpointSync()


def _status_progress(bucket: Bucket, lay: layout.RunLayout, status: dict[str, Any]) -> Any:
    """A TrainerCallback putting each evaluation into status.json (`progress`): what a sweep's live
    table shows while the run trains, read from the bucket."""
    from transformers import TrainerCallback

    class StatusProgress(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):  # noqa: ANN001
            if not state.is_world_process_zero or not metrics:
                return
            values = {k.removeprefix("eval_"): v for k, v in metrics.items() if isinstance(v, (int, float))}
            status["progress"] = {"epoch": state.epoch, "step": state.global_step, "max_steps": state.max_steps,
                                  "validation": values}  # fmt: skip
            log.info(
                "epoch %g validation: accuracy %.4f  macro-F1 %.4f  loss %.4f", state.epoch or 0,
                values.get("accuracy", float("nan")), values.get("macro_f1", float("nan")),
                values.get("loss", float("nan")),
            )  # fmt: skip
            try:
                write_status(bucket, lay.run_id, status)
            except Exception as e:  # progress is a nicety: training goes on
                log.warning("Could not update status.json: %s", e)

    return StatusProgress()


@contextmanager
def _checkpoint_on_sigterm(grace_s: float = SIGTERM_GRACE_S) -> Iterator[Any]:
    """SIGTERM while training (a preempted VM, `docker stop`): save a checkpoint, upload it, then stop.

    Yields a TrainerCallback to put after the checkpoint sync. Inside the training loop SIGTERM asks
    for a checkpoint at the end of the step in flight (the sync uploads it) and stops on its on_save;
    elsewhere, or if that takes over grace_s, it stops at once, as the CLI's handler does
    (newsclf.errors.Terminated). Single-process training only: a DDP save needs every rank.
    """
    import signal

    from transformers import TrainerCallback

    from newsclf.errors import Terminated

    previous = signal.getsignal(signal.SIGTERM)

    def stop_now(signum: int = signal.SIGTERM, frame: Any = None) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if callable(previous):
            previous(signal.SIGTERM, frame)  # the CLI's: it records SIGTERM for the exit code, and raises
        raise Terminated()

    class SaveOnSigterm(TrainerCallback):
        training = False
        requested = False
        announced = False

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self.training = True

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.requested:
                control.should_save = True
                if not self.announced:  # logged here, not in the signal handler: stderr may be mid-write there
                    self.announced = True
                    log.warning(
                        "SIGTERM: saving and uploading a checkpoint at step %d, then stopping", state.global_step
                    )

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            if self.requested:  # CheckpointSync, before this callback, has uploaded it
                stop_now()

        def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
            self.training = False

    callback = SaveOnSigterm()

    def on_sigterm(signum: int, frame: Any) -> None:
        if callback.requested:
            return  # the checkpoint is on its way
        if not callback.training:
            stop_now(signum, frame)
        callback.requested = True
        signal.setitimer(signal.ITIMER_REAL, grace_s)  # a step or an upload that hangs: stop anyway

    try:
        previous_alarm = signal.signal(signal.SIGALRM, stop_now)
        signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread: SIGTERM keeps its handling
        yield callback
        return
    try:
        yield callback
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGALRM, previous_alarm)


def _fetch_data(client: Client, bucket: Bucket, workdir: Path, seed: int) -> Path:
    """data/processed from the bucket, or data/raw (Fake.csv + True.csv) prepared here."""
    from newsclf.cloud.storage.client import list_objects
    from newsclf.cloud.storage.download import download_prefix
    from newsclf.data import Source, check_processed, prepare_dataset

    processed = workdir / "data" / "processed"
    listing = list_objects(client, bucket, layout.data_prefix("processed"))
    if listing:
        download_prefix(client, bucket, layout.data_prefix("processed"), processed, listing=listing)
        check_processed(processed)
        log.info("Pulled %s", layout.uri(bucket.name, layout.data_prefix("processed")))
        return processed
    raw = workdir / "data" / "raw"
    download_prefix(client, bucket, layout.data_prefix("raw"), raw)
    fake, true = raw / "Fake.csv", raw / "True.csv"
    if not (fake.is_file() and true.is_file()):
        raise InputError(
            f"No dataset in gs://{bucket.name}/data/: run `newsclf data prepare ...` then `newsclf data push` "
            "(or push Fake.csv and True.csv with `newsclf data push --raw DIR`)"
        )
    log.info("No processed data in the bucket: preparing data/raw/Fake.csv + True.csv")
    prepare_dataset(Source.isot(fake, true), processed, seed=seed, force=True)
    return processed


def _fetch_checkpoints(client: Client, bucket: Bucket, lay: layout.RunLayout, local: Path) -> bool:
    from newsclf.cloud.storage.client import list_objects
    from newsclf.cloud.storage.download import download_prefix

    listing = list_objects(client, bucket, lay.checkpoints)
    if not listing:
        return False
    download_prefix(client, bucket, lay.checkpoints, local, listing=listing)
    return any(p.is_dir() for p in local.glob("checkpoint-*"))


def _local_paths(workdir: Path, run_id: str) -> tuple[Path, Path, Path]:
    """(data/processed, models, models/<run_id>) under the job's scratch directory."""
    workdir = Path(workdir)
    return workdir / "data" / "processed", workdir / "models", workdir / "models" / run_id


def _worker_error_file(workdir: Path, rank: int) -> Path:
    return Path(workdir) / f".worker-{rank}.error"


def train_worker(
    client: Client, bucket_name: str, run_id: str, options: TrainOptions, workdir: Path, *, callbacks: tuple = ()
) -> None:
    """One process of a data-parallel job (under torch.distributed.run): train on what `run_job`
    fetched into `workdir`; rank 0 syncs the checkpoints and writes the finished run locally.

    A failure is also left in workdir for `run_job` to record (the processes' own output is only a log).
    """
    import os

    from newsclf.train import run_training

    rank = int(os.environ.get("RANK", "0"))
    _worker_error_file(workdir, rank).unlink(missing_ok=True)
    try:
        options.data_dir, options.models_dir, run_dir = _local_paths(workdir, run_id)
        checkpoints = run_dir / "checkpoints"
        resume = any(p.is_dir() for p in checkpoints.glob("checkpoint-*"))
        sync = _checkpoint_sync(client, client.bucket(bucket_name), layout.RunLayout(run_id), checkpoints)
        run_training(options, run_dir=run_dir, resume_from=run_dir if resume else None, callbacks=[sync, *callbacks])
    except Exception as e:
        _worker_error_file(workdir, rank).write_text((str(e) or type(e).__name__).splitlines()[0])
        raise


def worker_error(workdir: Path, world_size: int) -> str | None:
    """The failure a process of a data-parallel job left (the lowest rank's), or None."""
    for rank in range(world_size):
        path = _worker_error_file(workdir, rank)
        if path.is_file():
            return path.read_text().strip() or None
    return None


def _publish(client: Client, bucket: Bucket, lay: layout.RunLayout, run_dir: Path) -> None:
    """Upload the finished run (model/, run.json, logs/; metrics.json last)."""
    from newsclf.cloud.storage.client import list_objects
    from newsclf.cloud.storage.objects import read_json
    from newsclf.cloud.storage.retry import retry_policy
    from newsclf.cloud.storage.runs import push_run

    # a VM stopped in the middle of an earlier upload left a partial model/: it is replaced, since
    # the run only counts as complete once metrics.json is there
    if read_json(bucket, lay.metrics) is None:
        for name in list_objects(client, bucket, lay.model):
            bucket.blob(name).delete(retry=retry_policy())
        config = bucket.get_blob(lay.config)
        if config is not None:
            config.delete(retry=retry_policy())
    push_run(client, bucket, run_dir)


def _interrupted_status(e: BaseException, bucket_name: str, lay: layout.RunLayout) -> dict[str, Any]:
    """What status.json says of an interrupted job: resumable, and how it was stopped."""
    from newsclf.errors import Terminated

    how = "SIGTERM (the VM stopping, or `docker stop`)" if isinstance(e, Terminated) else "interrupted"
    return {
        "state": RunState.INTERRUPTED,
        "exit_code": 143 if isinstance(e, Terminated) else 130,
        "error": f"{how}: it resumes from {layout.uri(bucket_name, lay.checkpoints)} when the job starts again",
    }


def run_job(
    client: Client,
    bucket_name: str,
    run_id: str,
    options: TrainOptions,
    workdir: Path,
    *,
    callbacks: tuple = (),
    launch: Callable[[], None] | None = None,
) -> JobResult:
    """Run (or resume, or skip) training run `run_id`, keeping its state in gs://bucket/runs/<run_id>/.

    launch: trains in other processes instead of this one (each runs `train_worker`); it returns
        once they all exited and raises when they failed.
    Never raises for a training failure: it is recorded in status.json and returned (exit_code 1).
    """
    from newsclf.cloud.storage.objects import read_json
    from newsclf.train import run_training

    lay = layout.RunLayout(run_id)
    bucket = client.bucket(bucket_name)
    previous = read_json(bucket, lay.status) or {}
    if previous.get("state") == SUCCEEDED:
        log.info("Run %s already succeeded at %s: nothing to do", run_id, previous.get("finished_at"))
        return JobResult(run_id, SUCCEEDED, 0, skipped=True, metrics=previous.get("metrics") or {})

    status = running_status(run_id, previous)
    write_status(bucket, run_id, status)
    resumed_from = None
    try:
        workdir = Path(workdir)
        options.data_dir = _fetch_data(client, bucket, workdir, options.seed)
        _, options.models_dir, run_dir = _local_paths(workdir, run_id)
        checkpoints = run_dir / "checkpoints"
        if _fetch_checkpoints(client, bucket, lay, checkpoints):
            resumed_from = layout.uri(bucket_name, lay.checkpoints)
            log.info("Resuming from the checkpoints in %s", resumed_from)
        if launch is None:
            sync = _checkpoint_sync(client, bucket, lay, checkpoints)
            with _checkpoint_on_sigterm() as save_on_sigterm:
                result = run_training(
                    options,
                    run_dir=run_dir,
                    resume_from=run_dir if resumed_from else None,
                    callbacks=[sync, save_on_sigterm, _status_progress(bucket, lay, status), *callbacks],
                )
            metrics, run_dir = result.metrics, result.run_dir
        else:  # SIGTERM reaches the processes through torch.distributed.run; their last synced checkpoint stays
            launch()
            metrics = _finished_metrics(run_dir)
        _publish(client, bucket, lay, run_dir)
    except BaseException as e:
        interrupted = isinstance(e, (KeyboardInterrupt, SystemExit))
        message = "interrupted" if interrupted else (str(e) or type(e).__name__).splitlines()[0]
        if interrupted:  # not a failure: the next start of the job (the VM's next boot) resumes it
            finish(status, **_interrupted_status(e, bucket_name, lay))
        else:
            finish(status, RunState.FAILED, 1, message)
        try:
            write_status(bucket, run_id, status)
        except Exception as write_error:  # the original failure matters more
            log.warning("Could not record the failure in status.json: %s", write_error)
        if interrupted:
            raise
        return JobResult(run_id, FAILED, 1, resumed_from=resumed_from, error=message)
    summary = {k: metrics.get(k) for k in ("best_validation", "test")}
    finish(status, RunState.SUCCEEDED, 0, metrics=summary)
    write_status(bucket, run_id, status)
    return JobResult(run_id, SUCCEEDED, 0, resumed_from=resumed_from, metrics=metrics)


def _finished_metrics(run_dir: Path) -> dict[str, Any]:
    import json

    from newsclf.runs import COMPLETE_MARKER

    path = Path(run_dir) / COMPLETE_MARKER
    if not path.is_file():
        raise NewsclfError(f"The training processes exited without finishing the run ({path} is missing)")
    return json.loads(path.read_text())
