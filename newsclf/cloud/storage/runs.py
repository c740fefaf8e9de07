"""Training runs in the bucket (runs/<run-id>/, see layout.py): listed, pulled into models/, pushed from it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.cloud.storage.client import RemoteObject, bucket_of, list_objects
from newsclf.cloud.storage.download import download_objects, local_path, same_file
from newsclf.cloud.storage.objects import read_json
from newsclf.cloud.storage.transfer import WORKERS, TransferProgress, TransferResult
from newsclf.cloud.storage.upload import local_files, upload_files
from newsclf.errors import CloudError, InputError

if TYPE_CHECKING:
    from google.cloud.storage import Bucket, Client


@dataclass
class RemoteRun:
    run_id: str
    complete: bool  # metrics.json and model/model.safetensors are there
    created_at: str | None
    base_model: str | None
    test_f1: float | None
    model_bytes: int
    config: dict | None = None
    metrics: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "complete": self.complete,
            "created_at": self.created_at,
            "base_model": self.base_model,
            "test_f1": self.test_f1,
            "model_bytes": self.model_bytes,
        }


def list_runs(client: Client, bucket: str | Bucket, *, workers: int = WORKERS) -> list[RemoteRun]:
    """The runs under runs/, newest first, with run.json and metrics.json read."""
    from newsclf.runs import MODEL_WEIGHTS

    b = bucket_of(client, bucket)
    objects = list_objects(client, b, layout.RUNS_PREFIX)
    by_run: dict[str, list[RemoteObject]] = {}
    for name, obj in objects.items():
        run_id = layout.run_id_of(name)
        if run_id is not None:
            by_run.setdefault(run_id, []).append(obj)

    def describe(run_id: str) -> RemoteRun:
        lay = layout.RunLayout(run_id)
        names = {o.name for o in by_run[run_id]}
        config = read_json(b, lay.config) if lay.config in names else None
        metrics = read_json(b, lay.metrics) if lay.metrics in names else None
        created = (config or {}).get("created_at")
        if not created:
            times = [o.updated for o in by_run[run_id] if o.updated is not None]
            created = min(times).isoformat() if times else None
        test = (metrics or {}).get("test") or {}
        f1 = test.get("macro_f1")
        return RemoteRun(
            run_id=run_id,
            complete=metrics is not None and f"{lay.model}{MODEL_WEIGHTS}" in names,
            created_at=created,
            base_model=(config or {}).get("base_model"),
            test_f1=float(f1) if isinstance(f1, (int, float)) else None,
            model_bytes=sum(o.size for o in by_run[run_id] if o.name.startswith(lay.model)),
            config=config,
            metrics=metrics,
        )

    ids = sorted(by_run)
    if not ids:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
        runs = list(pool.map(describe, ids))
    return sorted(runs, key=lambda r: (r.created_at or "", r.run_id), reverse=True)


def resolve_remote_run(runs: Sequence[RemoteRun], ref: str, bucket: str) -> RemoteRun:
    """The run `ref` names (`latest` = the newest complete one), or an error naming what exists."""
    if ref == "latest":
        for run in runs:
            if run.complete:
                return run
        raise CloudError(
            f"No complete run in {layout.uri(bucket, layout.RUNS_PREFIX)}: train one with `newsclf cloud run` "
            "or push a local one with `newsclf models push`"
        )
    for run in runs:
        if run.run_id == ref:
            if not run.complete:
                raise CloudError(
                    f"Run {ref} in gs://{bucket} is incomplete (no metrics.json or model): it is still "
                    "training or failed; pick a complete run from `newsclf models list`"
                )
            return run
    raise CloudError(f"No run '{ref}' in {layout.uri(bucket, layout.RUNS_PREFIX)}: see `newsclf models list`")


@dataclass
class PulledRun:
    run_id: str
    path: Path
    latest: bool  # models/latest now points at it
    transfer: TransferResult


def pull_run(
    client: Client,
    bucket: str | Bucket,
    ref: str,
    models_dir: Path,
    *,
    checkpoints: bool = False,
    progress: TransferProgress | None = None,
) -> PulledRun:
    """Recreate models/<run-id>/ from runs/<run-id>/: model files at the top, run_config.json, metrics.json last.

    models/latest is pointed at the run when ref is `latest` or the run is newer than the current one.
    """
    from newsclf import runs as local_runs

    b = bucket_of(client, bucket)
    runs = list_runs(client, b)
    run = resolve_remote_run(runs, ref, b.name)
    lay = layout.RunLayout(run.run_id)
    run_dir = Path(models_dir) / run.run_id
    objects = list_objects(client, b, lay.prefix)
    pairs: list[tuple[RemoteObject, Path]] = []
    for name, obj in sorted(objects.items()):
        if name.startswith(lay.model):
            rel, base = name[len(lay.model) :], run_dir
        elif checkpoints and name.startswith(lay.checkpoints):
            rel, base = name[len(lay.checkpoints) :], run_dir / local_runs.CHECKPOINTS
        else:
            continue
        dest = local_path(base, rel)
        if dest is not None and not name.endswith("/"):
            pairs.append((obj, dest))
    if lay.config in objects:
        pairs.append((objects[lay.config], run_dir / local_runs.RUN_CONFIG))
    pairs.append((objects[lay.metrics], run_dir / local_runs.COMPLETE_MARKER))
    # the local completeness marker goes first and comes back last, so a half-updated run never looks complete
    marker = run_dir / local_runs.COMPLETE_MARKER
    if marker.exists() and not all(same_file(d, o) for o, d in pairs):
        marker.unlink()
    transfer = download_objects(client, b, pairs, last={lay.metrics}, progress=progress)
    try:
        local_runs.check_run(run_dir)  # what arrived is the run training wrote, or it is not used
    except InputError:
        marker.unlink(missing_ok=True)
        raise

    link = Path(models_dir) / local_runs.LATEST
    current = os.readlink(link) if link.is_symlink() else None
    newer = current is None or not (Path(models_dir) / current).is_dir() or run.run_id >= Path(current).name
    if ref == "latest" or newer:
        local_runs.update_latest(Path(models_dir), run.run_id)
    latest = link.is_symlink() and Path(os.readlink(link)).name == run.run_id
    return PulledRun(run.run_id, run_dir, latest, transfer)


def check_pushable(run_dir: Path) -> str:
    """The run id of a local run directory that is complete enough to push, else an InputError."""
    from newsclf import runs as local_runs

    run_dir = Path(run_dir)
    run_id = run_dir.name
    if not layout.is_valid_run_id(run_id):
        raise InputError(f"{run_dir} is not named like a run id: rename the directory (e.g. 20260101-120000-abc123)")
    if not local_runs.is_complete(run_dir):
        raise InputError(
            f"Run {run_id} is incomplete (no {local_runs.COMPLETE_MARKER} or {local_runs.MODEL_WEIGHTS}): "
            "finish it with `newsclf train --resume` or push another run"
        )
    if not (run_dir / local_runs.RUN_CONFIG).is_file():
        raise InputError(f"{run_dir} has no {local_runs.RUN_CONFIG}: it is not a newsclf training run")
    local_runs.check_run(run_dir)  # every file there, as training wrote it
    return run_id


def push_run(
    client: Client,
    bucket: str | Bucket,
    run_dir: Path,
    *,
    checkpoints: bool = False,
    progress: TransferProgress | None = None,
) -> tuple[str, TransferResult]:
    """Upload a complete local run to runs/<run-id>/ (create-only; metrics.json last). Returns (run id, result)."""
    from newsclf import runs as local_runs

    run_dir = Path(run_dir)
    run_id = check_pushable(run_dir)
    lay = layout.RunLayout(run_id)
    files: list[tuple[Path, str]] = []
    for path, rel in local_files(run_dir):
        top = rel.split("/", 1)[0]
        if rel == local_runs.RUN_CONFIG:
            files.append((path, lay.config))
        elif rel == local_runs.COMPLETE_MARKER:
            continue
        elif top == local_runs.CHECKPOINTS:
            if checkpoints:
                files.append((path, lay.checkpoints + rel.split("/", 1)[1]))
        elif top == layout.RUN_LOGS_DIR and "/" in rel:
            files.append((path, lay.logs + rel.split("/", 1)[1]))
        else:
            files.append((path, lay.model + rel))
    files.append((run_dir / local_runs.COMPLETE_MARKER, lay.metrics))
    result = upload_files(
        client, bucket, files, create_only=True, last={lay.metrics}, progress=progress, prefix=lay.prefix
    )
    return run_id, result
