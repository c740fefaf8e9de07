"""The rows `cloud setup` reports, one per step, and the report they make."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OK, CREATED, MISSING, ERROR, SKIPPED = "ok", "created", "missing", "error", "skipped"
FAILED = frozenset({MISSING, ERROR})  # what makes `cloud setup` exit 1

TITLES = {
    "project": "Project",
    "bucket": "Bucket",
    "bucket-access": "Bucket access",
    "repository": "Artifact Registry",
    "cloudbuild-api": "Cloud Build API",
    "compute-api": "Compute Engine API",
    "batch-api": "Cloud Batch API",
    "vm-account": "VM service account",
    "vm-bucket": "VM bucket access",
    "vm-repository": "VM image access",
    "vm-secret": "VM W&B secret",
    "vm-logging": "VM log writing",
    "vm-batch": "VM Batch reporting",
    "vm-act-as": "Run VMs as it",
}
# what newsclf does in the bucket: read, list, write, and overwrite (status.json, resumed uploads)


@dataclass
class Step:
    step: str  # a key of TITLES
    status: str  # ok | created | missing | error | skipped
    detail: str  # what was found or done; for missing/error, the fix

    @property
    def title(self) -> str:
        return TITLES.get(self.step, self.step)

    @property
    def failed(self) -> bool:
        return self.status in FAILED

    def to_dict(self) -> dict[str, str]:
        return {"step": self.step, "title": self.title, "status": self.status, "detail": self.detail}


@dataclass
class SetupReport:
    project: str | None
    bucket: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(s.failed for s in self.steps)

    def failures(self) -> list[Step]:
        return [s for s in self.steps if s.failed]

    def summary(self) -> str | None:
        """One line naming what to fix, or None when every step passed."""
        failed = self.failures()
        if not failed:
            return None
        if len(failed) == 1:
            return f"{failed[0].title}: {failed[0].detail}"
        names = ", ".join(s.title for s in failed)
        return (
            f"{len(failed)} setup steps need fixing ({names}): do what each row says, then rerun `newsclf cloud setup`"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "bucket": self.bucket,
            "ok": self.ok,
            "steps": [s.to_dict() for s in self.steps],
        }
