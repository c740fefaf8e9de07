"""Cloud Batch: a sweep as one Batch job, one task per trial (batch.v1 over REST).

Batch runs `taskCount` tasks, `parallelism` at a time, each on its own VM and told its
BATCH_TASK_INDEX; it retries failed tasks (spot preemption included) up to `maxRetryCount`, caps each
with `maxRunDuration`, installs GPU drivers and hands Secret Manager secrets to the container as
variables. There is no fee over the VMs. Google imports happen inside functions; the client is
injectable (`make_client(settings)` honours NEWSCLF_BATCH_API_ENDPOINT).
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from newsclf.errors import CloudError, InputError

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger(__name__)

LABEL, LABEL_VALUE = "newsclf", "sweep"  # every newsclf sweep job (and its VMs) carries it
SWEEP_LABEL = "newsclf-sweep"  # the sweep id, as a label value
TASK_GROUP = "group0"  # the name Batch gives a job's only task group

# How a task ends. `newsclf job --sweep-plan` exits TRIAL_FAILED when the trial failed by itself (bad
# hyper-parameters, NaN loss): the lifecycle policy fails that task at once. Any other non-zero exit
# (Batch's reserved codes for a preempted or lost VM, a crash, SIGTERM) is retried up to MAX_RETRIES
# times, and the retry resumes the trial from the checkpoints it synced to the bucket.
TRIAL_FAILED_EXIT = 3
PREEMPTED_EXIT = 50001  # Batch's reserved exit code: the spot VM was preempted
MAX_RETRIES = 3  # per task; Batch accepts 0-10

ACTIVE_STATES = frozenset({"QUEUED", "SCHEDULED", "RUNNING", "CANCELLATION_IN_PROGRESS", "DELETION_IN_PROGRESS"})
FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
TASK_STATES = ("PENDING", "ASSIGNED", "RUNNING", "SUCCEEDED", "FAILED", "UNEXECUTED")

_JOB_ID_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")


# ---------------------------------------------------------------------------------------------- client


def make_client(settings: Settings, credentials: Any = None) -> Any:
    """A batch_v1.BatchServiceClient over REST: NEWSCLF_BATCH_API_ENDPOINT (anonymous for a local
    stand-in), else Google's endpoint with `credentials` or Application Default Credentials."""
    from google.cloud import batch_v1

    from newsclf.cloud.google.credentials import default_credentials
    from newsclf.cloud.google.endpoints import client_kwargs, is_local_endpoint

    endpoint = settings.batch_api_endpoint
    if credentials is None and not is_local_endpoint(endpoint):
        credentials = default_credentials()[0]
    return batch_v1.BatchServiceClient(transport="rest", **client_kwargs(endpoint, credentials))


@contextlib.contextmanager
def _translated(action: str, project: str) -> Iterator[None]:
    """Google API errors as one-line CloudErrors that name the fix (NotFound is the caller's)."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    from newsclf.cloud.google.errors import short as _short

    try:
        yield
    except (gexc.Unauthorized, auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as e:
        raise CloudError(
            f"Not authenticated to {action}: run `gcloud auth application-default login` ({_short(e)})"
        ) from e
    except gexc.Forbidden as e:
        text = _short(e)
        if "has not been used" in text or "SERVICE_DISABLED" in str(e) or "is disabled" in text:
            raise CloudError(
                f"The Batch API is not enabled in project {project}: run `newsclf cloud setup` ({text})"
            ) from e
        raise CloudError(
            f"Permission denied to {action} in project {project}: {text}; grant your account roles/batch.jobsEditor "
            "and roles/iam.serviceAccountUser, or check NEWSCLF_GCP_PROJECT"
        ) from e
    except requests.exceptions.ConnectionError as e:
        raise CloudError(
            f"Cannot reach the Batch API to {action}: check the network or NEWSCLF_BATCH_API_ENDPOINT"
        ) from e
    except gexc.NotFound:
        raise
    except gexc.GoogleAPICallError as e:
        raise CloudError(f"Could not {action}: {_short(e)}; check `newsclf cloud status` and retry") from e


# ------------------------------------------------------------------------------------------ the job spec


@dataclass
class SweepJobRequest:
    """What one sweep job needs: where, which trials (the plan object in the bucket) and on what."""

    project: str
    region: str
    job_id: str
    sweep_id: str
    bucket: str
    plan: str  # object name of the trial plan: task i runs plan["tasks"][i]
    task_count: int
    parallel: int
    image: str
    machine_type: str
    gpu: tuple[str, int] | None = None
    spot: bool = False
    max_hours: float = 6.0
    disk_gb: int = 100
    service_account: str | None = None  # None or "default": Compute Engine's default account
    wandb_secret: str | None = None  # a Secret Manager secret name (or projects/.../secrets/...)


def job_id_for(sweep_id: str, now: datetime | None = None) -> str:
    """`newsclf-1a2b3c4d-20261130-181500-9f3c`: unique per submission (two in one second too), within
    Batch's job id rule."""
    import secrets

    from newsclf.sweep.grid import short_id

    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"newsclf-{short_id(sweep_id)}-{stamp}-{secrets.token_hex(2)}"


def label_value(text: str) -> str:
    from newsclf.cloud.compute.request import label_value as compute_label_value

    return compute_label_value(text)


def sweep_labels(sweep_id: str) -> dict[str, str]:
    return {LABEL: LABEL_VALUE, SWEEP_LABEL: label_value(sweep_id)}


def secret_version(secret: str, project: str) -> str:
    """`wandb-key` -> projects/PROJECT/secrets/wandb-key/versions/latest (full names are kept)."""
    name = secret if secret.startswith("projects/") else f"projects/{project}/secrets/{secret}"
    return name if "/versions/" in name else f"{name}/versions/latest"


def job_spec(req: SweepJobRequest) -> dict[str, Any]:
    """The Job resource (REST JSON) for `req`: one task group, one container runnable per task."""
    from newsclf.cloud.compute.hardware import builtin_gpu

    if not _JOB_ID_RE.fullmatch(req.job_id):
        raise InputError(f"Bad Batch job id {req.job_id!r}: 1-63 lowercase letters, digits and '-'")
    if req.task_count < 1 or req.parallel < 1:
        raise InputError("A sweep job needs at least one trial and --parallel of at least 1")
    environment: dict[str, Any] = {"variables": {"PYTHONUNBUFFERED": "1"}}
    if req.wandb_secret:  # the key reaches the container as a variable, never in the job spec
        environment["secretVariables"] = {"WANDB_API_KEY": secret_version(req.wandb_secret, req.project)}
    task_spec: dict[str, Any] = {
        "runnables": [{
            "displayName": "newsclf-job",
            "container": {
                "imageUri": req.image,
                "entrypoint": "newsclf",
                "commands": ["job", "--bucket", req.bucket, "--sweep-plan", req.plan],
            },
        }],
        "environment": environment,
        "maxRunDuration": f"{max(60, round(req.max_hours * 3600))}s",
        "maxRetryCount": MAX_RETRIES,
        "lifecyclePolicies": [
            {"action": "FAIL_TASK", "actionCondition": {"exitCodes": [TRIAL_FAILED_EXIT]}},
        ],
    }  # fmt: skip
    policy: dict[str, Any] = {
        "machineType": req.machine_type,
        "provisioningModel": "SPOT" if req.spot else "STANDARD",
        "bootDisk": {"sizeGb": str(req.disk_gb)},
    }
    if req.gpu:
        policy["accelerators"] = [{"type": req.gpu[0], "count": str(req.gpu[1])}]
    labels = sweep_labels(req.sweep_id)
    allocation: dict[str, Any] = {
        "instances": [{"policy": policy, "installGpuDrivers": bool(req.gpu or builtin_gpu(req.machine_type))}],
        "location": {"allowedLocations": [f"regions/{req.region}"]},
        # the VMs carry the sweep but not `newsclf`: `cloud status` lists the job, not its VMs as newsclf's own
        "labels": {SWEEP_LABEL: labels[SWEEP_LABEL]},
    }
    if req.service_account and req.service_account != "default":
        allocation["serviceAccount"] = {"email": req.service_account}
    return {
        "taskGroups": [{
            "taskCount": str(req.task_count),
            "parallelism": str(min(req.parallel, req.task_count)),
            "taskCountPerNode": "1",  # a trial has its VM (and GPUs) to itself
            "taskSpec": task_spec,
        }],
        "allocationPolicy": allocation,
        "labels": labels,
        "logsPolicy": {"destination": "CLOUD_LOGGING"},
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- job state


@dataclass
class SweepJob:
    """A Batch job as newsclf shows it."""

    name: str  # projects/P/locations/L/jobs/ID
    state: str
    sweep_id: str | None
    task_count: int
    parallelism: int
    counts: dict[str, int] = field(default_factory=dict)  # task state -> tasks
    created_at: datetime | None = None
    machine_type: str = ""
    gpu: tuple[str, int] | None = None
    spot: bool = False
    disk_gb: int = 0
    events: list[str] = field(default_factory=list)  # the job's status events, oldest first

    @property
    def job_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def region(self) -> str:
        return self.name.split("/")[3]

    @property
    def active(self) -> bool:
        return self.state not in FINAL_STATES

    @property
    def hourly_usd(self) -> float | None:
        """One task's VM, per hour (an estimate from the built-in price table)."""
        from newsclf.cloud.compute.prices import hourly_estimate

        gpu_type, gpus = self.gpu or (None, 0)
        return hourly_estimate(self.machine_type, gpu_type, gpus, spot=self.spot, disk_gb=self.disk_gb)

    @classmethod
    def from_proto(cls, job: Any) -> SweepJob:
        group = job.task_groups[0] if job.task_groups else None
        status = job.status
        counts: dict[str, int] = {}
        for group_status in status.task_groups.values():
            for state, n in group_status.counts.items():
                counts[state] = counts.get(state, 0) + int(n)
        policy = None
        if job.allocation_policy.instances:
            policy = job.allocation_policy.instances[0].policy
        gpu = None
        if policy is not None and policy.accelerators:
            gpu = (policy.accelerators[0].type_, int(policy.accelerators[0].count))
        created = job.create_time if job.create_time else None
        return cls(
            name=job.name,
            state=status.state.name if status.state else "STATE_UNSPECIFIED",
            sweep_id=dict(job.labels).get(SWEEP_LABEL),
            task_count=int(group.task_count) if group else 0,
            parallelism=int(group.parallelism) if group else 0,
            counts=counts,
            created_at=created,
            machine_type=policy.machine_type if policy is not None else "",
            gpu=gpu,
            spot=policy is not None and policy.provisioning_model.name in ("SPOT", "PREEMPTIBLE"),
            disk_gb=int(policy.boot_disk.size_gb) if policy is not None and policy.boot_disk else 0,
            events=[e.description for e in status.status_events],
        )


@dataclass
class TaskInfo:
    """One task: its index (= its place in the trial plan), state, and how long it has run."""

    index: int
    state: str
    attempts: int  # runs started so far (1 + retries)
    running_s: float  # time spent RUNNING, over every attempt
    exit_codes: list[int] = field(default_factory=list)  # of the failed attempts


def _task_info(task: Any, now: datetime) -> TaskInfo:
    index = int(task.name.rsplit("/", 1)[-1])
    running_s = 0.0
    attempts = 0
    since: datetime | None = None
    codes = []
    for event in task.status.status_events:
        state = event.task_state.name if event.task_state else ""
        at = event.event_time
        if since is not None and at:
            running_s += max(0.0, (at - since).total_seconds())
            since = None
        if state == "RUNNING":
            attempts += 1
            since = at or None
        if event.task_execution and event.task_execution.exit_code:
            codes.append(int(event.task_execution.exit_code))
    state = task.status.state.name if task.status.state else "PENDING"
    if since is not None and state == "RUNNING":
        running_s += max(0.0, (now - since).total_seconds())
    return TaskInfo(index, state, attempts, running_s, codes)


# --------------------------------------------------------------------------------------------- calls


def parent(project: str, region: str) -> str:
    return f"projects/{project}/locations/{region}"


def submit(client: Any, req: SweepJobRequest) -> SweepJob:
    """Create the job; returns it as Batch reports it."""
    import json

    from google.cloud import batch_v1

    job = batch_v1.Job.from_json(json.dumps(job_spec(req)))
    with _translated(f"create Batch job {req.job_id}", req.project):
        created = client.create_job(parent=parent(req.project, req.region), job=job, job_id=req.job_id)
    return SweepJob.from_proto(created)


def get_job(client: Any, name: str) -> SweepJob | None:
    from google.api_core import exceptions as gexc

    try:
        with _translated(f"read Batch job {name.rsplit('/', 1)[-1]}", name.split("/")[1]):
            return SweepJob.from_proto(client.get_job(name=name))
    except gexc.NotFound:
        return None


def list_jobs(client: Any, project: str, region: str, *, sweep_id: str | None = None) -> list[SweepJob]:
    """newsclf's sweep jobs in the region (of one sweep), newest first. Labels are matched here, so
    jobs other tools created in the project are left out whatever the server's filter syntax."""
    from google.api_core import exceptions as gexc

    out = []
    try:
        with _translated("list Batch jobs", project):
            for job in client.list_jobs(parent=parent(project, region)):
                labels = dict(job.labels)
                if labels.get(LABEL) != LABEL_VALUE:
                    continue
                if sweep_id is not None and labels.get(SWEEP_LABEL) != label_value(sweep_id):
                    continue
                out.append(SweepJob.from_proto(job))
    except gexc.NotFound:
        return []
    out.sort(key=lambda j: j.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return out


def tasks(client: Any, job_name: str) -> dict[int, TaskInfo]:
    """The job's tasks by index."""
    from google.api_core import exceptions as gexc

    now = datetime.now(UTC)
    try:
        with _translated("list the tasks of Batch job " + job_name.rsplit("/", 1)[-1], job_name.split("/")[1]):
            found = list(client.list_tasks(parent=f"{job_name}/taskGroups/{TASK_GROUP}"))
    except gexc.NotFound:
        return {}
    infos = (_task_info(t, now) for t in found)
    return {t.index: t for t in infos}


def cost_so_far(job: SweepJob, infos: dict[int, TaskInfo]) -> float | None:
    """Estimated USD spent: each task's running time on a VM of the job's kind (an estimate, not a bill:
    VM start-up and image pulls are not counted)."""
    hourly = job.hourly_usd
    if hourly is None:
        return None
    return round(hourly * sum(t.running_s for t in infos.values()) / 3600, 6)


@dataclass
class StopResult:
    job_id: str
    before: str
    cancelled: bool
    deleted: bool


def stop_job(client: Any, job: SweepJob, *, poll_s: float = 5.0, timeout_s: float = 900) -> StopResult:
    """Cancel the job (Batch stops its running tasks and deletes its VMs), wait for that, then delete
    the job and wait until Batch no longer lists it."""
    from google.api_core import exceptions as gexc

    project = job.name.split("/")[1]
    before = job.state
    cancelled = False
    deadline = time.monotonic() + timeout_s
    current = get_job(client, job.name)
    if current is not None and current.state not in FINAL_STATES and current.state != "DELETION_IN_PROGRESS":
        try:
            with _translated(f"cancel Batch job {job.job_id}", project):
                try:
                    client.cancel_job(name=job.name)
                    cancelled = True
                except (gexc.BadRequest, gexc.FailedPrecondition):
                    pass  # it finished in the meantime: deleting it is what is left
        except gexc.NotFound:
            current = None
        while current is not None and current.state not in FINAL_STATES and current.state != "DELETION_IN_PROGRESS":
            _wait(deadline, job, poll_s)
            current = get_job(client, job.name)
    if current is not None and current.state != "DELETION_IN_PROGRESS":
        try:
            with _translated(f"delete Batch job {job.job_id}", project):
                client.delete_job(name=job.name)
        except gexc.NotFound:
            current = None
    while current is not None:
        _wait(deadline, job, poll_s)
        current = get_job(client, job.name)
    return StopResult(job.job_id, before, cancelled, True)


def _wait(deadline: float, job: SweepJob, poll_s: float) -> None:
    if time.monotonic() > deadline:
        raise CloudError(
            f"Batch job {job.job_id} is still there after the stop was asked: check `newsclf cloud status` "
            "and stop it again"
        )
    time.sleep(poll_s)


def describe_jobs(client: Any, project: str, region: str, *, sweep_id: str | None = None) -> list[dict[str, Any]]:
    """newsclf's sweep jobs as rows: state, tasks by state, hardware and estimated cost so far."""
    rows = []
    for job in list_jobs(client, project, region, sweep_id=sweep_id):
        infos = tasks(client, job.name)
        hourly = job.hourly_usd
        running = job.counts.get("RUNNING", 0) + job.counts.get("ASSIGNED", 0)
        rows.append({
            "job_id": job.job_id,
            "sweep_id": job.sweep_id,
            "region": job.region,
            "state": job.state,
            "task_count": job.task_count,
            "parallelism": job.parallelism,
            "tasks": {s: job.counts[s] for s in TASK_STATES if job.counts.get(s)},
            "retries": sum(max(0, t.attempts - 1) for t in infos.values()),
            "machine_type": job.machine_type,
            "gpu": f"{job.gpu[1]} x {job.gpu[0]}" if job.gpu else None,
            "spot": job.spot,
            "created_at": job.created_at.isoformat() if job.created_at else None,
            "est_usd_per_hour": round(hourly * running, 4) if hourly is not None else None,
            "est_usd_so_far": cost_so_far(job, infos),
        })  # fmt: skip
    return rows
