"""One training VM as newsclf sees it (VM), and listing, finding, reading and waiting on VMs."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from newsclf.cloud.compute.clients import Clients
from newsclf.cloud.compute.errors import translated
from newsclf.cloud.compute.hardware import builtin_gpu, builtin_gpus, last_segment
from newsclf.cloud.compute.labels import (
    LABEL,
    META_BUCKET,
    META_KEEP_VM,
    META_RUN_ID,
    SWEEP_LABEL,
)
from newsclf.cloud.compute.prices import hourly_estimate
from newsclf.errors import CloudError

ACTIVE_STATES = frozenset({"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"})
DOWN_STATES = frozenset({"TERMINATED", "STOPPED", "SUSPENDED"})


def _parse_time(value: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass
class VM:
    """What newsclf needs to know about one training VM."""

    name: str
    zone: str
    status: str
    machine_type: str
    gpu_type: str | None
    gpu_count: int
    spot: bool
    disk_gb: int
    labels: dict[str, str]
    metadata: dict[str, str]
    metadata_fingerprint: str
    label_fingerprint: str
    last_start: datetime | None
    boot_disk: str = ""  # the boot disk's name (disks.resize)
    scheduling: Any = None  # the compute_v1.Scheduling it has (setScheduling sends it back, changed)
    service_account: str = ""  # the email it runs as ("" when it has none)

    @classmethod
    def from_instance(cls, inst: Any) -> VM:
        accels = list(inst.guest_accelerators)
        gpu_type = last_segment(accels[0].accelerator_type) if accels else None
        gpu_count = sum(a.accelerator_count for a in accels)
        boot = [d for d in inst.disks if d.boot]
        disk_gb = sum(d.disk_size_gb for d in boot)
        return cls(
            name=inst.name,
            zone=last_segment(inst.zone),
            status=inst.status,
            machine_type=last_segment(inst.machine_type),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            spot=inst.scheduling.provisioning_model == "SPOT" or bool(inst.scheduling.preemptible),
            disk_gb=int(disk_gb),
            labels=dict(inst.labels),
            metadata={i.key: i.value for i in inst.metadata.items},
            metadata_fingerprint=inst.metadata.fingerprint,
            label_fingerprint=inst.label_fingerprint,
            last_start=_parse_time(inst.last_start_timestamp),
            boot_disk=last_segment(boot[0].source) if boot else "",
            scheduling=inst.scheduling,
            service_account=inst.service_accounts[0].email if inst.service_accounts else "",
        )

    @property
    def run_id(self) -> str | None:
        return self.metadata.get(META_RUN_ID) or None

    @property
    def bucket(self) -> str | None:
        return self.metadata.get(META_BUCKET) or None

    @property
    def sweep_id(self) -> str | None:
        return self.labels.get(SWEEP_LABEL) or None

    @property
    def keep_vm(self) -> bool:
        return self.metadata.get(META_KEEP_VM) == "true"

    @property
    def attached_gpu(self) -> tuple[str, int] | None:
        """The GPUs attached to it (a G2/A2/A3/A4 VM may list its built-in ones: those are not attached)."""
        if builtin_gpu(self.machine_type) or not self.gpu_type:
            return None
        return self.gpu_type, self.gpu_count

    @property
    def gpus(self) -> int:
        return builtin_gpus(self.machine_type) or self.gpu_count

    @property
    def hourly_usd(self) -> float | None:
        gpu = self.attached_gpu  # the price of G2/A2/... machine types includes their GPUs
        return hourly_estimate(
            self.machine_type, gpu[0] if gpu else None, gpu[1] if gpu else 0, spot=self.spot, disk_gb=self.disk_gb
        )

    def uptime_s(self, now: datetime | None = None) -> float:
        if self.last_start is None or (self.status not in ACTIVE_STATES and self.status != "STOPPING"):
            return 0.0
        now = now or datetime.now(UTC)
        return max(0.0, (now - self.last_start).total_seconds())

    def hardware(self) -> str:
        builtin = builtin_gpu(self.machine_type)
        gpu = f" + {self.gpu_count} x {self.gpu_type}" if self.attached_gpu else ""
        gpu = f" ({builtin[1]} x {builtin[0]} built in)" if builtin else gpu
        return f"{self.machine_type}{gpu}{' (spot)' if self.spot else ''}"


def list_vms(clients: Clients, project: str, zone: str | None = None) -> list[VM]:
    """newsclf-labelled VMs in one zone, or in every zone (aggregated list)."""
    label_filter = f"labels.{LABEL}:*"
    with translated("list VMs", project):
        if zone:
            instances = list(clients.instances.list(request={"project": project, "zone": zone, "filter": label_filter}))
        else:
            instances = [
                inst
                for _, scoped in clients.instances.aggregated_list(request={"project": project, "filter": label_filter})
                for inst in scoped.instances
            ]
    vms = [VM.from_instance(i) for i in instances if LABEL in i.labels]
    return sorted(vms, key=lambda v: (v.name, v.zone))


def find_vm(clients: Clients, project: str, name: str) -> VM | None:
    """The newsclf VM called `name`, in whatever zone it lives."""
    found = [vm for vm in list_vms(clients, project) if vm.name == name]
    if len(found) > 1:
        zones = ", ".join(vm.zone for vm in found)
        raise CloudError(
            f"Several VMs named {name} ({zones}): delete the extra ones in the console, or set NEWSCLF_VM_NAME"
        )
    return found[0] if found else None


def get_vm(clients: Clients, project: str, zone: str, name: str) -> VM | None:
    from google.api_core import exceptions as gexc

    try:
        with translated("read the VM", project):
            return VM.from_instance(clients.instances.get(project=project, zone=zone, instance=name))
    except gexc.NotFound:
        return None


def wait_status(
    clients: Clients, project: str, vm: VM, wanted: frozenset[str] | set[str], *, poll_s: float, timeout_s: float
) -> VM | None:
    """Poll the VM until its status is in `wanted` (None when it disappears)."""
    deadline = time.monotonic() + timeout_s
    current: VM | None = vm
    while current is not None and current.status not in wanted:
        if time.monotonic() > deadline:
            raise CloudError(
                f"VM {vm.name} is still {current.status} after {timeout_s:.0f} s: check `newsclf cloud status`"
            )
        time.sleep(poll_s)
        current = get_vm(clients, project, vm.zone, vm.name)
    return current
