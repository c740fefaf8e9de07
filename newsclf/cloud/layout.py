"""The Cloud Storage bucket layout, defined once: every object name newsclf reads or writes comes from here.

gs://BUCKET/
  data/raw/...                      `newsclf data push` / `data pull`
  data/processed/...                (train/validation/test.parquet + manifest.json)
  runs/<run-id>/model/...           model + tokenizer files (the top level of models/<run-id>/)
  runs/<run-id>/checkpoints/...     Trainer checkpoints (synced during cloud training)
  runs/<run-id>/logs/...
  runs/<run-id>/run.json            = the local run_config.json
  runs/<run-id>/metrics.json        written last: a run without it is unfinished
  runs/<run-id>/status.json         progress of a cloud training job
  builds/<sha>.tar.gz               source archive for the image build
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

DataKind = Literal["raw", "processed"]
DATA_KINDS: tuple[DataKind, ...] = ("raw", "processed")

DATA_PREFIX = "data/"
RUNS_PREFIX = "runs/"
BUILDS_PREFIX = "builds/"

# names inside runs/<run-id>/
RUN_MODEL_DIR = "model"
RUN_CHECKPOINTS_DIR = "checkpoints"
RUN_LOGS_DIR = "logs"
RUN_CONFIG = "run.json"
RUN_METRICS = "metrics.json"  # the completeness marker, uploaded last
RUN_STATUS = "status.json"

# local names a pulled run is recreated with (see newsclf/runs.py)
LOCAL_RUN_CONFIG = "run_config.json"
LOCAL_METRICS = "metrics.json"

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_bucket(value: str) -> str | None:
    """`my-bucket` from `my-bucket`, `gs://my-bucket` or `gs://my-bucket/`; None if it is not a bucket name."""
    name = value.strip()
    if name.startswith("gs://"):
        name = name[len("gs://") :]
    name = name.rstrip("/")
    return name if _BUCKET_RE.match(name) else None


def uri(bucket: str, name: str = "") -> str:
    return f"gs://{bucket}/{name}"


def data_prefix(kind: DataKind) -> str:
    """`data/raw/` or `data/processed/`."""
    if kind not in DATA_KINDS:
        raise ValueError(f"unknown data kind {kind!r}")
    return f"{DATA_PREFIX}{kind}/"


def is_valid_run_id(run_id: str) -> bool:
    """One path segment (run ids are `20261127-071500-1a2b3c`, but any plain name works)."""
    return bool(_SEGMENT_RE.match(run_id)) and run_id not in (".", "..")


@dataclass(frozen=True)
class RunLayout:
    """Object names of one training run in the bucket."""

    run_id: str

    def __post_init__(self) -> None:
        if not is_valid_run_id(self.run_id):
            raise ValueError(f"not a valid run id: {self.run_id!r}")

    @property
    def prefix(self) -> str:
        return f"{RUNS_PREFIX}{self.run_id}/"

    @property
    def model(self) -> str:
        return f"{self.prefix}{RUN_MODEL_DIR}/"

    @property
    def checkpoints(self) -> str:
        return f"{self.prefix}{RUN_CHECKPOINTS_DIR}/"

    @property
    def logs(self) -> str:
        return f"{self.prefix}{RUN_LOGS_DIR}/"

    @property
    def config(self) -> str:
        return f"{self.prefix}{RUN_CONFIG}"

    @property
    def metrics(self) -> str:
        return f"{self.prefix}{RUN_METRICS}"

    @property
    def status(self) -> str:
        return f"{self.prefix}{RUN_STATUS}"


def run_layout(run_id: str) -> RunLayout:
    return RunLayout(run_id)


def run_id_of(name: str) -> str | None:
    """The run id of an object name under runs/, else None."""
    if not name.startswith(RUNS_PREFIX):
        return None
    rest = name[len(RUNS_PREFIX) :]
    run_id, sep, _ = rest.partition("/")
    return run_id if sep and is_valid_run_id(run_id) else None


def build_source(sha: str) -> str:
    """`builds/<sha>.tar.gz`: the source archive Cloud Build builds the image from."""
    if not _SEGMENT_RE.match(sha):
        raise ValueError(f"not a valid build id: {sha!r}")
    return f"{BUILDS_PREFIX}{sha}.tar.gz"
