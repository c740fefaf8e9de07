"""Following a run on its VM: the job's lines from serial port 1, status ticks, and the outcome."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from newsclf.cloud.compute.clients import Clients
from newsclf.cloud.compute.errors import api_errors
from newsclf.cloud.compute.labels import JOB_PREFIX, VM_PREFIX
from newsclf.cloud.compute.store import FINAL_RUN_STATES, RunStore
from newsclf.cloud.compute.vm import DOWN_STATES, VM, get_vm
from newsclf.cloud.google.errors import short
from newsclf.errors import CloudError
from newsclf.runstate import RunState

log = logging.getLogger(__name__)

FOLLOW_MAX_FAILURES = 10  # consecutive failed polls before `cloud run` / `cloud logs --follow` give up


@dataclass
class JobLine:
    text: str


@dataclass
class Tick:
    vm_status: str
    elapsed_s: float
    cost_usd: float | None
    phase: str


@dataclass
class Outcome:
    run_id: str
    state: str  # succeeded | failed | interrupted
    exit_code: int
    vm_name: str
    zone: str
    vm_status: str | None  # None: the VM is gone
    status: dict | None = None
    metrics: dict | None = None
    model_uri: str | None = None
    logs_uri: str | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "state": self.state,
            "exit_code": self.exit_code,
            "vm": self.vm_name,
            "zone": self.zone,
            "vm_status": self.vm_status,
            "error": self.error,
            "metrics": self.metrics,
            "model_uri": self.model_uri,
            "logs_uri": self.logs_uri,
        }


class SerialReader:
    """Serial port 1 of the VM, read incrementally (`start` / `next_`), split into the run's lines."""

    def __init__(self, clients: Clients, project: str, zone: str, name: str, run_id: str, start: int = 0) -> None:
        self.clients, self.project, self.zone, self.name = clients, project, zone, name
        self.offset = start
        self.partial = ""
        self.job_prefix = f"{JOB_PREFIX}[{run_id}]: "
        self.vm_prefix = f"{VM_PREFIX}[{run_id}]: "

    def read(self) -> tuple[list[str], list[str]]:
        """New complete job lines and VM progress lines since the last read."""
        out = self.clients.instances.get_serial_port_output(
            request={"project": self.project, "zone": self.zone, "instance": self.name, "port": 1, "start": self.offset}
        )
        if out.start > self.offset:  # the buffer dropped output we never read (it keeps ~1 MB)
            self.partial = ""
        self.offset = out.next_
        text = self.partial + out.contents
        lines = text.split("\n")
        self.partial = lines.pop()
        job, vm = [], []
        for line in lines:
            line = line.rstrip("\r")
            i = line.find(self.job_prefix)
            if i >= 0:
                job.append(line[i + len(self.job_prefix) :])
                continue
            if line.startswith(self.vm_prefix):  # the journal echoes these with a prefix; read them once
                vm.append(line[len(self.vm_prefix) :])
        return job, vm


def _exit_code(status: dict | None) -> int:
    if not status or status.get("state") == RunState.SUCCEEDED:
        return 0 if status else 1
    code = status.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def follow(
    clients: Clients,
    project: str,
    vm: VM,
    run_id: str,
    store: RunStore,
    *,
    poll_s: float = 5.0,
    stop_grace_s: float = 300.0,
    clock: Any = time.monotonic,
) -> Iterator[JobLine | Tick | Outcome]:
    """Follow a run on its VM: job lines, then status ticks, until status.json is final and the VM
    has stopped (or keep-vm), or the VM stops without a final status. The last item is an Outcome."""
    call_errors = api_errors()
    retryable: tuple[type[BaseException], ...] = (*call_errors, CloudError)
    reader = SerialReader(clients, project, vm.zone, vm.name, run_id)
    phase = ""
    final_since: float | None = None
    current: VM | None = vm
    status: dict | None = None
    started = clock()

    def drain() -> Iterator[JobLine]:
        nonlocal phase
        try:
            job, vm_lines = reader.read()
        except call_errors:  # a stopped or deleted VM may not serve its serial port
            return
        for text in job:
            yield JobLine(text)
        if vm_lines:
            phase = vm_lines[-1]

    failures = 0
    while True:
        yield from drain()
        try:
            current = get_vm(clients, project, vm.zone, vm.name)
            status = store.status(run_id)
            failures = 0
        except retryable as e:  # a blip in a follow that lasts hours: poll again
            failures += 1
            if failures >= FOLLOW_MAX_FAILURES:  # the VM bills on: say so, and how to end it
                seen = f"last seen {current.status}" if current is not None else "state unknown"
                raise CloudError(
                    f"Stopped following run {run_id} after {failures} failed polls ({short(e, None)}); VM {vm.name} "
                    f"({vm.zone}, {seen}) keeps running and billing: re-attach with `newsclf cloud logs {run_id} "
                    "--follow` or stop it with `newsclf cloud stop`"
                ) from e
            log.debug("Polling run %s failed (%s); retrying", run_id, short(e, None))
            time.sleep(poll_s)
            continue
        final = bool(status and status.get("state") in FINAL_RUN_STATES)
        down = current is None or current.status in DOWN_STATES
        ours = current is not None and current.run_id == run_id
        if final:
            final_since = final_since if final_since is not None else clock()
            if down or not ours or (current and current.keep_vm) or clock() - final_since > stop_grace_s:
                break
        elif down or not ours:
            status = store.status(run_id)  # the job may have finished just before the VM stopped
            break
        elapsed = current.uptime_s() if current and current.last_start else clock() - started
        hourly = current.hourly_usd if current else None
        cost = hourly * elapsed / 3600 if hourly is not None else None
        yield Tick(current.status if current else "GONE", elapsed, cost, phase)
        time.sleep(poll_s)
    yield from drain()

    final = bool(status and status.get("state") in FINAL_RUN_STATES)
    outcome = Outcome(
        run_id=run_id,
        state=str(status["state"]) if final and status else RunState.INTERRUPTED.value,
        exit_code=_exit_code(status) if final else 1,
        vm_name=vm.name,
        zone=vm.zone,
        vm_status=current.status if current else None,
        status=status,
        logs_uri=store.logs_uri(run_id),
    )
    if outcome.state == RunState.SUCCEEDED:
        outcome.metrics = store.metrics(run_id)
        outcome.model_uri = store.model_uri(run_id)
    elif outcome.state == RunState.FAILED:
        outcome.error = (status or {}).get("error") or f"the job exited with code {outcome.exit_code}"
    else:
        outcome.error = (
            f"VM {vm.name} stopped before run {run_id} finished (spot preemption, --max-hours, or `cloud stop`)"
            if current is None or current.status in DOWN_STATES
            else f"VM {vm.name} moved on to run {current.run_id}"
        )
    yield outcome


def run_log(store: RunStore, run_id: str) -> list[str]:
    """The run's log lines from the bucket (every boot's log, oldest first)."""
    lines: list[str] = []
    for _, text in store.logs(run_id):
        lines.extend(text.splitlines())
    return lines


def serial_snapshot(clients: Clients, project: str, vm: VM, run_id: str) -> list[str]:
    """The run's job lines the VM's serial port still holds."""
    job, _ = SerialReader(clients, project, vm.zone, vm.name, run_id).read()
    return job
