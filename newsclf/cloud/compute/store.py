"""A run's files in the bucket as `cloud run/logs` read them: status.json, metrics.json and logs/."""

from __future__ import annotations

from typing import Any

from newsclf.cloud import layout
from newsclf.runstate import FINAL

FINAL_RUN_STATES = FINAL  # status.json states (newsclf.runstate) after which a run is not started again


class RunStore:
    """A run's files in the bucket: status.json, metrics.json and logs/ (names from layout.py)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _json(self, name: str) -> dict | None:
        from newsclf.cloud.storage.objects import read_json

        doc = read_json(self.client.bucket(self.bucket), name)
        return doc if isinstance(doc, dict) else None

    def has_dataset(self) -> bool:
        """Whether `newsclf job` will find data: data/processed/manifest.json, or anything in data/raw/."""
        from newsclf.cloud.storage.client import list_objects

        processed = layout.data_prefix("processed")
        if f"{processed}manifest.json" in list_objects(self.client, self.bucket, processed):
            return True
        return bool(list_objects(self.client, self.bucket, layout.data_prefix("raw")))

    def status(self, run_id: str) -> dict | None:
        return self._json(layout.run_layout(run_id).status)

    def metrics(self, run_id: str) -> dict | None:
        return self._json(layout.run_layout(run_id).metrics)

    def logs(self, run_id: str) -> list[tuple[str, str]]:
        """(object name, text) of each log of the run, oldest first."""
        from newsclf.cloud.storage.client import list_objects

        names = sorted(list_objects(self.client, self.bucket, layout.run_layout(run_id).logs))
        bucket = self.client.bucket(self.bucket)
        return [(n, bucket.blob(n).download_as_bytes().decode("utf-8", errors="replace")) for n in names]

    def model_uri(self, run_id: str) -> str:
        return layout.uri(self.bucket, layout.run_layout(run_id).model)

    def logs_uri(self, run_id: str) -> str:
        return layout.uri(self.bucket, layout.run_layout(run_id).logs)


def run_state(store: RunStore | None, run_id: str | None) -> str | None:
    """The run's status.json state, or None when there is none (or no run / no bucket)."""
    if store is None or not run_id:
        return None
    status = store.status(run_id)
    return str(status.get("state")) if status and status.get("state") else None
