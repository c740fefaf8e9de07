"""Local training runs: `models/<run-id>/`, the `models/latest` pointer, and what makes a run complete."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from pathlib import Path
from typing import Any

from newsclf.errors import InputError

LATEST = "latest"
# Written last, by atomic rename: a run directory without it is unfinished (killed or still training).
COMPLETE_MARKER = "metrics.json"
MODEL_WEIGHTS = "model.safetensors"
RUN_CONFIG = "run_config.json"
CHECKPOINTS = "checkpoints"
# Names, sizes and sha256 of every file at the top of a finished run; written just before metrics.json
# (which it covers too), so a complete run can be checked against what training wrote.
MANIFEST = "run_manifest.json"
MANIFEST_VERSION = 1
# What a run from before the manifest needs: the model, its config and a tokenizer vocabulary (without
# one, AutoTokenizer silently builds a 5-token tokenizer and every text comes out "fake").
LEGACY_REQUIRED = (MODEL_WEIGHTS, "config.json", RUN_CONFIG, COMPLETE_MARKER)
VOCABULARY_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")


def new_run_id(seed_text: str = "") -> str:
    """`20261127-071500-1a2b3c`: sortable timestamp plus a short hash of the settings and time."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    digest = hashlib.sha256(f"{seed_text}{time.time_ns()}{os.getpid()}".encode()).hexdigest()[:6]
    return f"{stamp}-{digest}"


def is_complete(run_dir: Path) -> bool:
    return (run_dir / COMPLETE_MARKER).is_file() and (run_dir / MODEL_WEIGHTS).is_file()


def file_sha256(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(paths: list[Path]) -> dict[str, Any]:
    """The manifest of files that will sit side by side at the top of a run (keyed by file name)."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(paths, key=lambda p: p.name)}
    return {"version": MANIFEST_VERSION, "files": files}


def json_safe(value: Any) -> Any:
    """value with every NaN/Infinity float (numpy's too) replaced by None: JSON has no such numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


def check_run(run_dir: Path) -> None:
    """Refuse a run that is not complete: InputError naming each missing or changed file.

    With run_manifest.json (runs trained since it exists): every file it lists must be there with
    its size and sha256. Without one (older runs, and model folders not made by newsclf training):
    the files predict and evaluate need must exist (LEGACY_REQUIRED and a vocabulary file).
    """
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    problems: list[str] = []
    if manifest_path.is_file():
        try:
            files = json.loads(manifest_path.read_text())["files"]
            expected = {str(k): (int(v["size"]), str(v["sha256"])) for k, v in files.items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise InputError(
                f"{run_dir} has an unreadable {MANIFEST}: pull the run again (`newsclf models pull`) or retrain it"
            ) from None
        for name, (size, sha) in sorted(expected.items()):
            path = run_dir / name
            if not path.is_file():
                problems.append(f"{name} missing")
            elif path.stat().st_size != size:
                problems.append(f"{name} changed ({path.stat().st_size} bytes, training wrote {size})")
            elif file_sha256(path) != sha:
                problems.append(f"{name} changed (sha256 differs from what training wrote)")
    else:
        problems = [f"{name} missing" for name in LEGACY_REQUIRED if not (run_dir / name).is_file()]
        if not any((run_dir / name).is_file() for name in VOCABULARY_FILES):
            problems.append(f"tokenizer vocabulary missing (none of {', '.join(VOCABULARY_FILES)})")
    if not problems:
        return
    if not manifest_path.is_file() and not (run_dir / COMPLETE_MARKER).is_file():
        fix = f"finish it with `newsclf train --resume {run_dir.name}`"
    else:
        fix = f"pull it again (`newsclf models pull {run_dir.name}`) or train a new one"
    raise InputError(f"Run {run_dir} is incomplete ({'; '.join(problems)}): {fix}, or pick another with --model")


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
