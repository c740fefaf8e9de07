"""newsclf's VMs at a glance: state, hardware, estimated cost and current run (`cloud status`, `cloud stop`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from newsclf.cloud.compute.prices import HOURS_PER_MONTH, disk_hourly
from newsclf.cloud.compute.vm import ACTIVE_STATES
from newsclf.runstate import FINAL

if TYPE_CHECKING:
    from newsclf.cloud.compute.clients import Clients
    from newsclf.cloud.compute.store import RunStore
    from newsclf.cloud.compute.vm import VM

COSTS_NOTE = "estimates from a built-in price table, not a bill"


@dataclass
class Fleet:
    project: str
    vms: list[dict[str, Any]]  # one row per VM, a sweep's VMs together
    sweeps: dict[str, dict[str, Any]]  # sweep id -> {"vms": [names], "active": how many run}
    warnings: list[str] = field(default_factory=list)  # runs whose state could not be read

    def stopped_disks(self) -> tuple[float, int] | None:
        """(est. USD a month, GB) the stopped VMs' boot disks bill until deleted, or None when none do."""
        stopped = [r for r in self.vms if r["state"] not in ACTIVE_STATES and r["est_disk_usd_per_month"]]
        if not stopped:
            return None
        return sum(r["est_disk_usd_per_month"] for r in stopped), sum(r["disk_gb"] for r in stopped)

    def as_dict(self) -> dict[str, Any]:
        return {"project": self.project, "vms": self.vms, "sweeps": self.sweeps, "costs": COSTS_NOTE}


def vm_costs(vm: VM) -> dict[str, Any]:
    """A VM's cost fields: running, its machine, GPUs and disk bill; stopped, only its boot disk does,
    but that until the VM is deleted, so a stopped VM is never shown as free."""
    uptime = vm.uptime_s()
    running = vm.hourly_usd
    disk = disk_hourly(vm.disk_gb)  # `cloud run` creates pd-balanced boot disks
    return {
        "uptime_s": round(uptime),
        "est_usd_per_hour": running if vm.status in ACTIVE_STATES else disk,
        "est_usd_so_far": round(running * uptime / 3600, 4) if running is not None else None,
        "disk_gb": vm.disk_gb,
        "est_disk_usd_per_month": round(disk * HOURS_PER_MONTH, 2) if disk is not None else None,
    }


def _store_for(clients: Clients, store: RunStore | None, vm: VM) -> RunStore | None:
    """Where the VM's run keeps its status: the VM's own bucket (its metadata), else `store`'s."""
    from newsclf.cloud.compute.store import RunStore

    if store is not None and vm.bucket in (None, store.bucket):
        return store
    return RunStore(clients.storage_client(), vm.bucket) if vm.bucket else None


def fleet_status(clients: Clients, project: str, store: RunStore | None, zone: str | None = None) -> Fleet:
    """newsclf's VMs in `project` (or one zone), each with its run's state from the bucket."""
    from newsclf.cloud.compute.store import run_state
    from newsclf.cloud.compute.vm import list_vms
    from newsclf.errors import CloudError

    rows, warnings = [], []
    for vm in list_vms(clients, project, zone):
        state = None
        if vm.run_id and (vm.bucket or store is not None):
            try:
                state = run_state(_store_for(clients, store, vm), vm.run_id)
            except CloudError as e:
                warnings.append(f"Cannot read the state of run {vm.run_id}: {e}")
        rows.append(
            {
                "name": vm.name,
                "zone": vm.zone,
                "state": vm.status,
                "machine_type": vm.machine_type,
                "gpus": vm.gpus,
                "gpu_type": vm.gpu_type,
                "spot": vm.spot,
                **vm_costs(vm),
                "run_id": vm.run_id,
                "run_state": state,
                "sweep_id": vm.sweep_id,
            }
        )
    rows.sort(key=lambda r: (r["sweep_id"] or "", r["name"], r["zone"]))  # a sweep's VMs together
    sweeps: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["sweep_id"]:
            group = sweeps.setdefault(r["sweep_id"], {"vms": [], "active": 0})
            group["vms"].append(r["name"])
            group["active"] += r["state"] in ACTIVE_STATES
    return Fleet(project, rows, sweeps, warnings)


def is_busy(clients: Clients, store: RunStore | None, vm: VM) -> bool:
    """Whether stopping `vm` would interrupt a run: it is up with a run whose status.json is not final.
    A status that cannot be read counts as busy (assume the worst, and ask)."""
    from newsclf.cloud.compute.store import run_state

    if vm.status not in ACTIVE_STATES or not vm.run_id:
        return False
    try:
        return run_state(_store_for(clients, store, vm), vm.run_id) not in FINAL
    except Exception:  # no bucket access
        return True


def train_args_of(clients: Clients, project: str, vm_name: str, run_id: str) -> list[str]:
    """The train options run `run_id` was started with, from its VM's metadata (`cloud run --resume`
    without options); empty when the VM is gone or has moved on to another run."""
    from newsclf.cloud.compute.labels import META_TRAIN_ARGS
    from newsclf.cloud.compute.vm import find_vm

    vm = find_vm(clients, project, vm_name)
    if vm is None or vm.run_id != run_id:
        return []
    return [a for a in vm.metadata.get(META_TRAIN_ARGS, "").split("\n") if a]
