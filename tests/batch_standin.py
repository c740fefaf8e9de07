"""A stateful local stand-in for the Cloud Batch REST API (batch.v1) that **runs** the jobs it is given.

Speaks what the real batch_v1 client sends over REST (jobs create/get/list/cancel/delete, tasks
get/list, operations get), records every request, and checks each one against batch.v1's discovery
document (tests/discovery.py) plus the rules Batch states in prose (one task group, one instance
policy, one lifecycle policy, maxRetryCount 0-10, job ids, labels, allowed locations in one region):
what Google would reject is answered 400 and recorded in `violations`, which fails the test at the
fixture's teardown.

A created job's tasks run here: `parallelism` at a time, each through the test's `runner(task)`
(a TaskRun: index, count, attempt, environment with BATCH_TASK_INDEX / BATCH_TASK_COUNT /
BATCH_TASK_RETRY_ATTEMPT, the taskSpec's variables and its secrets resolved from `secrets`), which
returns something with poll() and kill() (a subprocess.Popen, or a ThreadTask). A task that exits
non-zero is retried up to maxRetryCount times unless the lifecycle policy says otherwise; one that
runs past maxRunDuration is killed (exit 50005). `preempt(job_id, index, when)` kills a running task
once `when()` holds and reports Batch's reserved preemption code 50001 (retried like any failure).
Task and job states, counts and status events are reported as Batch reports them; cancel stops the
running tasks (CANCELLATION_IN_PROGRESS, then CANCELLED); delete cancels, then the job disappears.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.discovery import label_errors
from tests.google_errors import google_error
from tests.rest_standin import Request, contract_violations, matching, read_request, reply_invalid, send_reply

PREEMPTED, MAX_RUN_EXCEEDED = 50001, 50005  # Batch's reserved exit codes
_JOB_ID = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOCATION = re.compile(r"(regions/[a-z]+-[a-z]+\d+)|(zones/([a-z]+-[a-z]+\d+)-[a-z])")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _seconds(duration: str | None) -> float | None:
    return float(duration[:-1]) if duration else None


@dataclass
class TaskRun:
    """What the runner is asked to start: one attempt of one task."""

    job_id: str
    index: int
    count: int
    attempt: int  # 0 for the first run, then 1, 2, ... (BATCH_TASK_RETRY_ATTEMPT)
    runnable: dict  # the taskSpec's runnables[0] (its container)
    env: dict[str, str]
    log: Path  # where the attempt's output goes


class ThreadTask:
    """A task played by a function in a thread (fast tests): `fn(task, stop)` returns the exit code and
    should return soon after `stop` is set (kill: preemption or cancel)."""

    def __init__(self, fn: Callable[[TaskRun, threading.Event], int], task: TaskRun) -> None:
        self.stop = threading.Event()
        self.returncode: int | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, task), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[TaskRun, threading.Event], int], task: TaskRun) -> None:
        try:
            code = fn(task, self.stop)
        except Exception:  # noqa: BLE001 - a crashing task exits 1, as a process would
            import traceback

            task.log.write_text(traceback.format_exc())
            code = 1
        self.returncode = -9 if self.stop.is_set() else code

    def poll(self) -> int | None:
        return None if self.thread.is_alive() else self.returncode

    def kill(self) -> None:
        self.stop.set()
        self.thread.join(30)


@dataclass
class Task:
    index: int
    state: str = "PENDING"
    events: list[dict] = field(default_factory=list)
    attempt: int = -1  # the attempt running (or last run)
    handle: Any = None
    started: float = 0.0
    pending_kill: int | None = None  # the exit code to report for a kill we made

    def event(self, state: str, description: str, exit_code: int | None = None) -> None:
        old = self.state
        self.state = state
        ev: dict[str, Any] = {
            "type": "STATUS_CHANGED", "eventTime": _now(), "taskState": state,
            "description": description or f"Task state is updated from {old} to {state}",
        }  # fmt: skip
        if exit_code is not None:
            ev["taskExecution"] = {"exitCode": exit_code}
        self.events.append(ev)


@dataclass
class Job:
    resource: dict
    tasks: list[Task]
    state: str = "QUEUED"
    events: list[dict] = field(default_factory=list)
    thread: threading.Thread | None = None
    cancel: bool = False
    delete: bool = False
    started_running: float | None = None

    @property
    def name(self) -> str:
        return self.resource["name"]

    @property
    def job_id(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    @property
    def spec(self) -> dict:
        return self.resource["taskGroups"][0]["taskSpec"]

    def set_state(self, state: str, description: str = "") -> None:
        if state == self.state:
            return
        self.events.append({
            "type": "STATUS_CHANGED", "eventTime": _now(),
            "description": description or f"Job state is set from {self.state} to {state}",
        })  # fmt: skip
        self.state = state
        if state == "RUNNING" and self.started_running is None:
            self.started_running = time.monotonic()


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class BatchStandIn:
    def __init__(
        self,
        workdir: Path,
        *,
        project: str = "test-project",
        runner: Callable[[TaskRun], Any] | None = None,
        tick_s: float = 0.05,
    ) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.project = project
        self.runner = runner
        self.tick_s = tick_s
        self.requests: list[Request] = []
        self.violations: list[tuple[Request, list[str]]] = []
        self.jobs: dict[str, Job] = {}
        self.secrets: dict[str, str] = {}  # secret version name -> value (secretVariables)
        self.preemptions: list[tuple[str, int, Callable[[], bool]]] = []
        self.faults: list[list] = []  # [method, path regex, (code, body), times left]
        self.started: list[TaskRun] = []  # every attempt started, in order
        self.task_started = threading.Event()  # set at each task start (tests wait on it)
        self.lock = threading.RLock()
        self._ops = itertools.count(1)
        self._closed = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                standin._dispatch(self)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    # ------------------------------------------------------------------------------ test helpers

    def close(self) -> None:
        self._closed.set()
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            for task in job.tasks:
                if task.handle is not None and task.handle.poll() is None:
                    task.handle.kill()
        self.server.shutdown()
        self.server.server_close()

    def fail(self, method: str, path: str, reply: tuple[int, dict], *, times: int = 1) -> None:
        """The next `times` requests matching method + path regex get `reply` (e.g. tests.google_errors.service_disabled)."""
        with self.lock:
            self.faults.append([method, path, reply, times])

    def calls(self, method: str | None = None, path: str = "") -> list[Request]:
        with self.lock:
            return matching(self.requests, method, path)

    def created_jobs(self) -> list[dict]:
        """The Job bodies of jobs.create, in order."""
        return [r.body for r in self.calls("POST", r"/jobs$")]

    def job(self, job_id: str | None = None) -> Job:
        with self.lock:
            jobs = [j for j in self.jobs.values() if job_id is None or j.job_id == job_id]
        assert len(jobs) == 1, f"{len(jobs)} jobs match {job_id!r}"
        return jobs[0]

    def preempt(self, job_id: str | None, index: int, when: Callable[[], bool] = lambda: True) -> None:
        """Preempt task `index` of `job_id` (None: the next job) once, while it runs and `when()` holds."""
        with self.lock:
            self.preemptions.append((job_id or "", index, when))

    def wait_job(self, job_id: str | None = None, timeout: float = 300) -> Job:
        """Wait until the job is in a final state (the tasks are run by the stand-in, not the client)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                jobs = [j for j in self.jobs.values() if job_id is None or j.job_id == job_id]
            if jobs and all(j.state in ("SUCCEEDED", "FAILED", "CANCELLED") for j in jobs):
                return jobs[-1]
            time.sleep(0.05)
        raise AssertionError(f"Batch job {job_id} did not finish in {timeout} s")

    # ------------------------------------------------------------------------------ HTTP plumbing

    def _dispatch(self, h: BaseHTTPRequestHandler) -> None:
        req = read_request(h)
        if "enum-encoding=int" in req.query.get("$alt", "") and isinstance(req.body, dict):
            req.body = enum_names(req.body, {"$ref": "Job"})  # the REST transport sends enums as numbers
        with self.lock:
            self.requests.append(req)
            errors = contract_violations("batch.v1", req)
            if not errors and req.method == "POST" and req.path.endswith("/jobs"):
                errors = job_rules(req.query.get("jobId"), req.body or {}, req.path)
            if errors:
                self.violations.append((req, errors))
                reply_invalid(h, errors)
                return
            fault = next(
                (f for f in self.faults if f[3] > 0 and f[0] == req.method and re.search(f[1], req.path)), None
            )
            if fault is not None:
                fault[3] -= 1
                send_reply(h, *fault[2])
                return
            try:
                code, payload = self._route(req)
            except Exception as e:  # a bug in the stand-in: make it visible in the test
                code, payload = 500, google_error(500, "INTERNAL", f"stand-in error: {type(e).__name__}: {e}")
        send_reply(h, code, payload)

    def _route(self, req: Request) -> tuple[int, Any]:
        path = req.path.removeprefix("/v1/")
        m = re.fullmatch(r"(projects/([^/]+)/locations/([^/]+))/jobs", path)
        if m and req.method == "POST":
            return self._create(m.group(1), req.query.get("jobId"), req.body)
        if m and req.method == "GET":
            jobs = [self._job_json(j) for j in self.jobs.values() if j.name.startswith(m.group(1) + "/")]
            return 200, {"jobs": jobs}
        m = re.fullmatch(r"(projects/[^/]+/locations/[^/]+/jobs/[^/:]+)(:cancel)?", path)
        if m:
            job = self.jobs.get(m.group(1))
            if job is None or (job.delete and job.thread is None):
                return 404, google_error(404, "NOT_FOUND", f'Job "{m.group(1)}" not found')
            if req.method == "GET" and not m.group(2):
                return 200, self._job_json(job)
            if req.method == "POST" and m.group(2):
                if job.state in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return 400, google_error(400, "FAILED_PRECONDITION", f"Job {job.job_id} is already {job.state}")
                job.cancel = True
                job.set_state("CANCELLATION_IN_PROGRESS")
                return 200, self._operation(job, "cancel")
            if req.method == "DELETE":
                job.delete = job.cancel = True
                job.set_state("DELETION_IN_PROGRESS")
                if job.thread is None or not job.thread.is_alive():
                    self.jobs.pop(job.name, None)
                return 200, self._operation(job, "delete")
        m = re.fullmatch(r"(projects/[^/]+/locations/[^/]+/jobs/[^/]+)/taskGroups/group0/tasks(?:/(\d+))?", path)
        if m and req.method == "GET":
            job = self.jobs.get(m.group(1))
            if job is None:
                return 404, google_error(404, "NOT_FOUND", f'Job "{m.group(1)}" not found')
            tasks = [self._task_json(job, t) for t in job.tasks]
            if m.group(2) is not None:
                index = int(m.group(2))
                return (200, tasks[index]) if index < len(tasks) else (404, google_error(404, "NOT_FOUND", "no task"))
            return 200, {"tasks": tasks}
        m = re.fullmatch(r"projects/[^/]+/locations/[^/]+/operations/[^/]+", path)
        if m and req.method == "GET":
            return 200, {"name": path, "done": True, "response": {"@type": "type.googleapis.com/google.protobuf.Empty"}}
        return 404, google_error(404, "NOT_FOUND", f"stand-in: nothing at {req.method} {req.path}")

    def _operation(self, job: Job, verb: str) -> dict:
        location = job.name.rsplit("/jobs/", 1)[0]
        return {"name": f"{location}/operations/op-{next(self._ops)}", "done": False,
                "metadata": {"@type": "type.googleapis.com/google.cloud.batch.v1.OperationMetadata",
                             "target": job.name, "verb": verb}}  # fmt: skip

    def _create(self, parent: str, job_id: str | None, body: dict) -> tuple[int, Any]:
        job_id = job_id or f"job-{next(self._ops)}"
        name = f"{parent}/jobs/{job_id}"
        if name in self.jobs:
            return 409, google_error(409, "ALREADY_EXISTS", f"Job {name} already exists")
        resource = dict(body)
        resource["name"] = name
        resource["uid"] = f"{job_id[:50]}-{next(self._ops):04d}"
        resource["createTime"] = resource["updateTime"] = _now()
        group = resource["taskGroups"][0] = dict(resource["taskGroups"][0])
        group["name"] = f"{name}/taskGroups/group0"
        group.setdefault("parallelism", group.get("taskCount", "1"))
        count = int(group.get("taskCount", "1"))
        job = Job(resource, [Task(i) for i in range(count)])
        job.events.append({"type": "STATUS_CHANGED", "eventTime": _now(), "description": "Job state is set to QUEUED"})
        self.jobs[name] = job
        job.thread = threading.Thread(target=self._schedule, args=(job,), daemon=True, name=f"batch-{job_id}")
        job.thread.start()
        return 200, self._job_json(job)

    def _job_json(self, job: Job) -> dict:
        counts: dict[str, int] = {}
        for t in job.tasks:
            counts[t.state] = counts.get(t.state, 0) + 1
        run_s = 0.0 if job.started_running is None else time.monotonic() - job.started_running
        return {
            **job.resource,
            "status": {
                "state": job.state,
                "statusEvents": list(job.events),
                "taskGroups": {"group0": {"counts": {k: str(v) for k, v in counts.items()}}},
                "runDuration": f"{run_s:.3f}s",
            },
        }

    def _task_json(self, job: Job, task: Task) -> dict:
        return {
            "name": f"{job.name}/taskGroups/group0/tasks/{task.index}",
            "status": {"state": task.state, "statusEvents": list(task.events)},
        }

    # ------------------------------------------------------------------------------ the scheduler

    def _env(self, job: Job, task: Task, count: int) -> dict[str, str]:
        env = {
            "BATCH_TASK_INDEX": str(task.index), "BATCH_TASK_COUNT": str(count),
            "BATCH_TASK_RETRY_ATTEMPT": str(task.attempt), "BATCH_JOB_ID": job.job_id,
        }  # fmt: skip
        environment = job.spec.get("environment") or {}
        env.update(environment.get("variables") or {})
        for var, secret in (environment.get("secretVariables") or {}).items():
            env[var] = self.secrets[secret]  # a missing secret fails the task start, as on Batch
        return env

    def _schedule(self, job: Job) -> None:
        group = job.resource["taskGroups"][0]
        count = len(job.tasks)
        parallelism = int(group.get("parallelism") or count)
        spec = job.spec
        retries = int(spec.get("maxRetryCount") or 0)
        limit = _seconds(spec.get("maxRunDuration"))
        policies = spec.get("lifecyclePolicies") or []
        time.sleep(self.tick_s)
        with self.lock:
            job.set_state("SCHEDULED")
        while not self._closed.is_set():
            with self.lock:
                running = [t for t in job.tasks if t.state in ("ASSIGNED", "RUNNING")]
                # preemptions and run limits
                for t in running:
                    if t.handle is None or t.pending_kill is not None:
                        continue
                    for p in list(self.preemptions):
                        if p[0] in ("", job.job_id) and p[1] == t.index and p[2]():
                            self.preemptions.remove(p)
                            t.pending_kill = PREEMPTED
                            break
                    if t.pending_kill is None and limit is not None and time.monotonic() - t.started > limit:
                        t.pending_kill = MAX_RUN_EXCEEDED
                    if t.pending_kill is None and job.cancel:
                        t.pending_kill = -1
                to_kill = [t for t in running if t.pending_kill is not None and t.handle is not None]
            for t in to_kill:
                if t.handle.poll() is None:
                    t.handle.kill()
            with self.lock:
                for t in running:
                    code = None if t.handle is None else t.handle.poll()
                    if code is None and t.pending_kill is None:
                        continue
                    if code is None:
                        continue  # being killed
                    reported = t.pending_kill if t.pending_kill not in (None, -1) else code
                    t.handle, kill, t.pending_kill = None, t.pending_kill, None
                    if kill == -1:  # cancelled: the task does not run again
                        t.event("FAILED", f"Task {t.index} was cancelled with the job", exit_code=code)
                        continue
                    if reported == 0:
                        t.event("SUCCEEDED", "")
                        continue
                    t.event("FAILED", f"Task failed with exit code {reported}", exit_code=reported)
                    if t.attempt < retries and _retry(policies, reported):
                        t.event("PENDING", f"Task {t.index} is retried (attempt {t.attempt + 1} of {retries})")
                if job.cancel:
                    if not any(t.state in ("ASSIGNED", "RUNNING") for t in job.tasks):
                        job.set_state("CANCELLED")
                        if job.delete:
                            self.jobs.pop(job.name, None)
                        return
                    continue
                active = sum(1 for t in job.tasks if t.state in ("ASSIGNED", "RUNNING"))
                for t in job.tasks:
                    if active >= parallelism:
                        break
                    if t.state != "PENDING":
                        continue
                    t.attempt += 1
                    t.event("ASSIGNED", "")
                    run = TaskRun(job.job_id, t.index, count, t.attempt, spec["runnables"][0], self._env(job, t, count),
                                  self.workdir / f"{job.job_id}-task{t.index}-attempt{t.attempt}.log")  # fmt: skip
                    assert self.runner is not None, "the Batch stand-in has no runner for its tasks"
                    t.handle = self.runner(run)
                    t.started = time.monotonic()
                    t.event("RUNNING", "")
                    job.set_state("RUNNING")
                    self.started.append(run)
                    self.task_started.set()
                    active += 1
                if all(t.state in ("SUCCEEDED", "FAILED") for t in job.tasks):
                    failed = any(t.state == "FAILED" for t in job.tasks)
                    job.set_state("FAILED" if failed else "SUCCEEDED")
                    job.resource["updateTime"] = _now()
                    return
            time.sleep(self.tick_s)


def _retry(policies: list[dict], code: int) -> bool:
    """Batch's rule: a matching FAIL_TASK policy fails the task, a RETRY_TASK policy retries only matches;
    without a match (or a policy) a non-zero exit is retried."""
    for p in policies:
        codes = set((p.get("actionCondition") or {}).get("exitCodes") or [])
        if p.get("action") == "FAIL_TASK":
            return code not in codes
        if p.get("action") == "RETRY_TASK":
            return code in codes
    return True


def enum_names(value: Any, schema: dict) -> Any:
    """`value` with enum numbers replaced by their names: proto enum numbers follow the order of the
    discovery document's `enum` lists for batch.v1 (0 = *_UNSPECIFIED)."""
    from tests.discovery import document

    if "$ref" in schema:
        return enum_names(value, document("batch.v1")["schemas"][schema["$ref"]])
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        return {k: enum_names(v, props.get(k) or extra or {}) for k, v in value.items()}
    if isinstance(value, list) and "items" in schema:
        return [enum_names(v, schema["items"]) for v in value]
    if "enum" in schema and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(schema["enum"]):
        return schema["enum"][value]
    return value


def job_rules(job_id: str | None, body: dict, path: str) -> list[str]:
    """What Batch states in prose about a job, beyond the discovery document's types."""
    errors: list[str] = []
    if job_id is not None and not _JOB_ID.fullmatch(job_id):
        errors.append(f"jobId: {job_id!r}: at most 63 lowercase letters, digits and '-', starting with a letter")
    groups = body.get("taskGroups") or []
    if len(groups) != 1:
        errors.append(f"taskGroups: {len(groups)} task groups; only one is supported")
    for g in groups[:1]:
        spec = g.get("taskSpec") or {}
        count = int(g.get("taskCount", "1"))
        if count < 1:
            errors.append("taskGroups[0].taskCount: at least 1")
        if int(g.get("parallelism", count)) < 1:
            errors.append("taskGroups[0].parallelism: at least 1")
        if not spec.get("runnables"):
            errors.append("taskGroups[0].taskSpec.runnables: required")
        for i, r in enumerate(spec.get("runnables") or []):
            c = r.get("container")
            if c is not None and not c.get("imageUri"):
                errors.append(f"taskGroups[0].taskSpec.runnables[{i}].container.imageUri: required")
        if not 0 <= int(spec.get("maxRetryCount", 0)) <= 10:
            errors.append("taskGroups[0].taskSpec.maxRetryCount: the valid range is [0, 10]")
        if len(spec.get("lifecyclePolicies") or []) > 1:
            errors.append("taskGroups[0].taskSpec.lifecyclePolicies: only one lifecycle policy is supported")
        for var in (spec.get("environment") or {}).get("secretVariables", {}).values():
            if not re.fullmatch(r"projects/[^/]+/secrets/[^/]+/versions/[^/]+", var):
                errors.append(f"secretVariables: {var!r} is not projects/P/secrets/S/versions/V")
    alloc = body.get("allocationPolicy") or {}
    if len(alloc.get("instances") or []) > 1:
        errors.append("allocationPolicy.instances: only instances[0] is supported")
    locations = (alloc.get("location") or {}).get("allowedLocations") or []
    region = path.split("/locations/")[1].split("/")[0]
    for loc in locations:
        m = _LOCATION.fullmatch(loc)
        if not m:
            errors.append(f"allowedLocations: {loc!r} is not regions/REGION or zones/ZONE")
        elif (m.group(1) and loc != f"regions/{region}") or (m.group(3) and m.group(3) != region):
            errors.append(f"allowedLocations: {loc!r} is outside the job's region {region}")
    errors += label_errors(body.get("labels"), "labels")
    errors += label_errors(alloc.get("labels"), "allocationPolicy.labels")
    for key in [*(body.get("labels") or {}), *(alloc.get("labels") or {})]:
        if key.startswith(("goog-", "google-")):
            errors.append(f"labels: {key!r} is reserved for Batch's own labels")
    return errors


# ------------------------------------------------------------------------------------------ the job sandbox


def container_runner(storage_url: str, workdir: Path, *, python: str | None = None) -> Callable[[TaskRun], Any]:
    """Tasks as the real `newsclf job` (the container's `newsclf` entrypoint and commands) in a process of
    its own, against fake-gcs-server: what the training image runs on a Batch VM. Killing it kills its
    process group (a preempted VM)."""

    def run(task: TaskRun) -> Any:
        container = task.runnable["container"]
        assert container.get("entrypoint") == "newsclf", container
        cwd = workdir / f"{task.job_id}-task{task.index}-attempt{task.attempt}"
        cwd.mkdir(parents=True, exist_ok=True)
        keep = {k: v for k, v in os.environ.items() if not k.startswith("NEWSCLF_") and k != "WANDB_API_KEY"}
        env = {**keep, **task.env, "STORAGE_EMULATOR_HOST": storage_url, "NEWSCLF_GCP_PROJECT": "test-project",
               "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # fmt: skip
        out = open(task.log, "wb")
        return _Process(subprocess.Popen(
            [python or sys.executable, "-m", "newsclf", *container["commands"]], cwd=cwd, env=env,
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        ))  # fmt: skip

    return run


class _Process:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc

    def poll(self) -> int | None:
        return self.proc.poll()

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def batch(tmp_path, monkeypatch):
    """The Batch stand-in, NEWSCLF_BATCH_API_ENDPOINT pointing at it; set `.runner` before submitting."""
    server = BatchStandIn(tmp_path / "batch")
    monkeypatch.setenv("NEWSCLF_BATCH_API_ENDPOINT", server.url)
    yield server
    server.close()
    assert not server.violations, "requests Google would reject:\n" + "\n".join(
        f"{r.method} {r.path}: {'; '.join(e)}" for r, e in server.violations
    )
