"""Local training runs: `models/<run-id>/`, the `models/latest` pointer, and what makes a run complete."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from newsclf.errors import InputError

LATEST = "latest"
# Written last, by atomic rename: a run directory without it is unfinished (killed or still training).
COMPLETE_MARKER = "metrics.json"
MODEL_WEIGHTS = "model.safetensors"
RUN_CONFIG = "run_config.json"
CHECKPOINTS = "checkpoints"


def new_run_id(seed_text: str = "") -> str:
    """`20261127-071500-1a2b3c`: sortable timestamp plus a short hash of the settings and time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    digest = hashlib.sha256(f"{seed_text}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:6]
    return f"{stamp}-{digest}"


def is_complete(run_dir: Path) -> bool:
    return (run_dir / COMPLETE_MARKER).is_file() and (run_dir / MODEL_WEIGHTS).is_file()


def update_latest(models_dir: Path, run_id: str) -> None:
    """Point `models/latest` at run_id atomically (symlink swapped in by rename)."""
    tmp = models_dir / f".{LATEST}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id, target_is_directory=True)
    os.replace(tmp, models_dir / LATEST)


def list_runs(models_dir: Path) -> list[Path]:
    """Complete runs, newest first."""
    if not models_dir.is_dir():
        return []
    runs = [p for p in models_dir.iterdir() if p.is_dir() and not p.is_symlink() and is_complete(p)]
    return sorted(runs, key=lambda p: p.name, reverse=True)


def resolve_run(models_dir: Path, ref: str | None = LATEST) -> Path:
    """A run directory from `latest`, a run id, or a path to a model directory."""
    ref = ref or LATEST
    direct = Path(ref)
    if ref != LATEST and direct.is_dir():
        run = direct
    elif ref == LATEST:
        link = models_dir / LATEST
        if link.exists():
            run = link.resolve()
        else:
            runs = list_runs(models_dir)
            if not runs:
                raise InputError(
                    f"No trained model in {models_dir}/: run `newsclf train --demo` or `newsclf models pull latest`"
                )
            run = runs[0]
    else:
        run = models_dir / ref
        if not run.is_dir():
            raise InputError(
                f"No run '{ref}' in {models_dir}/: list them with `ls {models_dir}` or `newsclf models list`"
            )
    if not (run / MODEL_WEIGHTS).is_file():
        raise InputError(
            f"{run} has no {MODEL_WEIGHTS} (unfinished run or not a newsclf model): "
            "pick another with --model, or finish it with `newsclf train --resume`"
        )
    return run
