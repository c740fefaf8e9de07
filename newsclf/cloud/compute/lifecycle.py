"""A VM's life for a run: created (zone after zone until one has room), or stopped, reshaped to what the
run asks for and restarted with the new run's metadata; stopped or deleted at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from newsclf.cloud.compute.clients import Clients, wait_operation
from newsclf.cloud.compute.errors import capacity_reason, translated
from newsclf.cloud.compute.hardware import (
    builtin_gpu,
    builtin_gpus,
    candidate_zones,
    check_hardware,
    machine_family,
    offering_zones,
    region_of,
)
from newsclf.cloud.compute.labels import OPTIONAL_META, SWEEP_LABEL
from newsclf.cloud.compute.request import (
    RunRequest,
    accelerators,
    instance_metadata,
    instance_resource,
    metadata_items,
    run_labels,
    run_seconds,
)
from newsclf.cloud.compute.store import FINAL_RUN_STATES, RunStore, run_state
from newsclf.cloud.compute.vm import (
    ACTIVE_STATES,
    DOWN_STATES,
    VM,
    find_vm,
    get_vm,
    wait_status,
)
from newsclf.cloud.google.credentials import CLOUD_PLATFORM_SCOPE
from newsclf.cloud.google.errors import short
from newsclf.cloud.google.operations import OperationFailed
from newsclf.errors import CloudError, InputError

log = logging.getLogger(__name__)


@dataclass
class Started:
    """The VM that runs the job."""

    vm: VM
    run_id: str
    created: bool
    tried: list[tuple[str, str]] = field(default_factory=list)  # (zone, capacity reason) skipped


def _conflicts(vm: VM, req: RunRequest) -> list[str]:
    """What a reused VM cannot be changed to (machine type, GPUs, disk and run limit can: see _Reshape)."""
    out = []
    if "spot" in req.explicit and vm.spot != req.spot:
        out.append("spot" if vm.spot else "not spot")
    if "zone" in req.explicit and vm.zone != req.zone:
        out.append(f"zone {vm.zone}")
    return out


@dataclass
class _Reshape:
    """What a stopped VM must change to be what the run asks for (None / False: keep it)."""

    gpus: int  # GPUs it ends with (attached or built in)
    scheduling: Any = None  # compute_v1.Scheduling to set
    machine_type: str | None = None
    set_gpu: bool = False
    gpu: tuple[str, int] | None = None  # the attached GPUs it ends with, when set_gpu
    disk_gb: int | None = None  # grow the boot disk to this
    service_account: str | None = None  # run as this account from now on
    changes: list[str] = field(default_factory=list)


def _plan_reshape(clients: Clients, project: str, vm: VM, req: RunRequest) -> _Reshape:
    """Check, before touching anything, that the VM can become what the run asks for: the run limit
    always (it is what `cloud run` promises), the disk when it must grow, the machine type and GPUs when
    given as flags. A disk cannot shrink, and a move into or out of a family with built-in GPUs (or a
    zone that does not offer the hardware) needs a new VM: those are refused naming the way out."""
    from google.cloud import compute_v1

    recreate = "delete the VM with `newsclf cloud stop --delete` and rerun to create a new one"
    machine_type = req.machine_type if "machine_type" in req.explicit else vm.machine_type
    if "gpu" in req.explicit:
        gpu = req.gpu
    elif builtin_gpu(machine_type) or machine_family(machine_type) != "n1":
        gpu = None  # GPUs attach to N1 only
    else:
        gpu = vm.attached_gpu
    if machine_family(machine_type) != machine_family(vm.machine_type) and (
        builtin_gpu(machine_type) or builtin_gpu(vm.machine_type)
    ):
        raise InputError(f"VM {vm.name} is a {vm.machine_type}, and a {machine_type} needs a new VM: {recreate}")
    check_hardware(machine_type, gpu)
    plan = _Reshape(gpus=(gpu[1] if gpu else 0) + builtin_gpus(machine_type))
    if machine_type != vm.machine_type or gpu != vm.attached_gpu:
        what = machine_type + (f" + {gpu[1]} x {gpu[0]}" if gpu else "")
        if vm.zone not in offering_zones(clients, project, machine_type, gpu):
            raise InputError(f"Zone {vm.zone} of VM {vm.name} does not offer {what}: {recreate}")
        plan.changes.append(f"{vm.hardware()} -> {what}")
        if machine_type != vm.machine_type:
            plan.machine_type = machine_type
        if gpu != vm.attached_gpu:
            plan.set_gpu, plan.gpu = True, gpu
    if req.service_account not in (vm.service_account, "default"):
        # a VM made before NEWSCLF_VM_SERVICE_ACCOUNT runs as the default account, which may hold no role
        plan.service_account = req.service_account
        plan.changes.append(f"service account {vm.service_account or 'none'} -> {req.service_account}")
    if req.disk_gb > vm.disk_gb:
        plan.disk_gb = req.disk_gb
        plan.changes.append(f"disk {vm.disk_gb} -> {req.disk_gb} GB")
    elif req.disk_gb < vm.disk_gb and "disk_gb" in req.explicit:
        raise InputError(
            f"VM {vm.name} has a {vm.disk_gb} GB boot disk and a disk cannot shrink: drop --disk-gb "
            f"{req.disk_gb} (or ask for {vm.disk_gb} or more), or {recreate}"
        )
    before, sched = compute_v1.Scheduling(), compute_v1.Scheduling()
    if vm.scheduling is not None:  # setScheduling replaces it all: send back what it has, changed
        compute_v1.Scheduling.copy_from(before, vm.scheduling)
        compute_v1.Scheduling.copy_from(sched, vm.scheduling)
    sched.max_run_duration = compute_v1.Duration(seconds=run_seconds(req.max_hours))
    sched.instance_termination_action = "STOP"
    if plan.gpus:
        sched.on_host_maintenance = "TERMINATE"  # GPU VMs cannot live-migrate
    if sched != before:
        plan.scheduling = sched
        old = vm.scheduling.max_run_duration.seconds if vm.scheduling is not None else 0
        if old != run_seconds(req.max_hours):
            plan.changes.append(
                f"run limit {old / 3600:g} -> {req.max_hours:g} h" if old else f"run limit {req.max_hours:g} h"
            )
    return plan


def _reshape(clients: Clients, project: str, vm: VM, plan: _Reshape) -> None:
    """Apply the plan to the stopped VM: scheduling first (a GPU needs TERMINATE on host maintenance),
    attached GPUs off before a machine type change and on after it, then grow the disk."""
    from google.cloud import compute_v1

    if not plan.changes and plan.scheduling is None:
        return
    log.info("Changing VM %s for the run: %s", vm.name, "; ".join(plan.changes) or "scheduling")
    where = {"project": project, "zone": vm.zone, "instance": vm.name}

    def gpus(gpu: tuple[str, int] | None) -> None:
        op = clients.instances.set_machine_resources_unary(
            **where,
            instances_set_machine_resources_request_resource=compute_v1.InstancesSetMachineResourcesRequest(
                guest_accelerators=accelerators(project, vm.zone, gpu)
            ),
        )
        wait_operation(clients, project, vm.zone, op)

    with translated("change the VM", project):
        if plan.scheduling is not None:
            op = clients.instances.set_scheduling_unary(**where, scheduling_resource=plan.scheduling)
            wait_operation(clients, project, vm.zone, op)
        if plan.service_account is not None:
            op = clients.instances.set_service_account_unary(
                **where,
                instances_set_service_account_request_resource=compute_v1.InstancesSetServiceAccountRequest(
                    email=plan.service_account, scopes=[CLOUD_PLATFORM_SCOPE]
                ),
            )
            wait_operation(clients, project, vm.zone, op)
        if plan.machine_type is not None:
            if plan.set_gpu and vm.attached_gpu:
                gpus(None)
            op = clients.instances.set_machine_type_unary(
                **where,
                instances_set_machine_type_request_resource=compute_v1.InstancesSetMachineTypeRequest(
                    machine_type=f"zones/{vm.zone}/machineTypes/{plan.machine_type}"
                ),
            )
            wait_operation(clients, project, vm.zone, op)
            if plan.set_gpu and plan.gpu:
                gpus(plan.gpu)
        elif plan.set_gpu:
            gpus(plan.gpu)
        if plan.disk_gb is not None:
            op = clients.disks.resize_unary(
                project=project, zone=vm.zone, disk=vm.boot_disk,
                disks_resize_request_resource=compute_v1.DisksResizeRequest(size_gb=plan.disk_gb),
            )  # fmt: skip
            wait_operation(clients, project, vm.zone, op)


def start_run(
    clients: Clients, project: str, req: RunRequest, *, store: RunStore | None, poll_s: float = 2.0
) -> Started:
    """Create the VM for the run, or give the stopped VM the new run (and the hardware, disk and run
    limit it asks for) and start it."""
    vm = find_vm(clients, project, req.vm_name)
    if vm is None:
        return _create(clients, project, req)

    conflicts = _conflicts(vm, req)
    if conflicts:
        raise InputError(
            f"VM {vm.name} already exists with {', '.join(conflicts)}: use it without those flags, or delete it "
            "with `newsclf cloud stop --delete` and rerun to create a new one"
        )
    plan = _plan_reshape(clients, project, vm, req)  # refuse what cannot be done before stopping anything
    if vm.status in ACTIVE_STATES:
        state = run_state(store, vm.run_id)
        if vm.run_id and state not in FINAL_RUN_STATES and not req.force:
            raise CloudError(
                f"VM {vm.name} is busy with run {vm.run_id} ({state or 'starting'}): follow it with "
                f"`newsclf cloud logs {vm.run_id} --follow`, stop it with `newsclf cloud stop`, "
                "or pass --force to stop it and start this run"
            )
        log.info("Stopping VM %s (%s) for the new run", vm.name, vm.zone)
        _stop(clients, project, vm)
    if vm.status not in DOWN_STATES:
        found = wait_status(clients, project, vm, DOWN_STATES, poll_s=poll_s, timeout_s=900)
        if found is None:
            return _create(clients, project, req)
        vm = found
    if vm.status == "SUSPENDED":
        raise CloudError(f"VM {vm.name} is suspended: delete it with `newsclf cloud stop --delete` and rerun")
    return _restart(clients, project, vm, req, plan)


def _restart(clients: Clients, project: str, vm: VM, req: RunRequest, plan: _Reshape) -> Started:
    from google.cloud import compute_v1

    _reshape(clients, project, vm, plan)
    items = {k: v for k, v in vm.metadata.items() if k not in OPTIONAL_META}
    items.update(instance_metadata(req, plan.gpus))
    log.info("Starting VM %s (%s) for run %s", vm.name, vm.zone, req.run_id)
    with translated("update the VM", project):
        op = clients.instances.set_metadata_unary(
            project=project,
            zone=vm.zone,
            instance=vm.name,
            metadata_resource=compute_v1.Metadata(fingerprint=vm.metadata_fingerprint, items=metadata_items(items)),
        )
        wait_operation(clients, project, vm.zone, op)
        labels = {**{k: v for k, v in vm.labels.items() if k != SWEEP_LABEL}, **run_labels(req)}
        op = clients.instances.set_labels_unary(
            project=project,
            zone=vm.zone,
            instance=vm.name,
            instances_set_labels_request_resource=compute_v1.InstancesSetLabelsRequest(
                label_fingerprint=vm.label_fingerprint, labels=labels
            ),
        )
        wait_operation(clients, project, vm.zone, op)
        try:
            op = clients.instances.start_unary(project=project, zone=vm.zone, instance=vm.name)
            wait_operation(clients, project, vm.zone, op)
        except Exception as e:
            reason = capacity_reason(e.operation if isinstance(e, OperationFailed) else e)
            if reason is None:
                raise
            raise CloudError(
                f"Cannot start VM {vm.name} in {vm.zone} ({reason}): try again later, or delete it with "
                "`newsclf cloud stop --delete` and rerun to create it in another zone"
            ) from e
    started = get_vm(clients, project, vm.zone, vm.name) or vm
    return Started(vm=started, run_id=req.run_id, created=False)


def _create(clients: Clients, project: str, req: RunRequest) -> Started:
    from google.api_core import exceptions as gexc

    zones = _zones_to_try(clients, project, req)
    source_image = _source_image(clients, project)
    tried: list[tuple[str, str]] = []
    for zone in zones:
        log.info("Creating VM %s (%s) in %s", req.vm_name, _describe(req), zone)
        try:
            with translated("create the VM", project):
                op = clients.instances.insert_unary(
                    project=project,
                    zone=zone,
                    instance_resource=instance_resource(req, zone, source_image, project=project),
                )
                wait_operation(clients, project, zone, op)
        except OperationFailed as e:
            reason = capacity_reason(e.operation)
            if reason is None:
                raise CloudError(f"Creating VM {req.vm_name} in {zone} failed: {e}") from e
            tried.append((zone, reason))
            log.warning("No room in %s (%s); trying the next zone", zone, reason)
            continue
        except gexc.GoogleAPICallError as e:
            reason = capacity_reason(e)
            if reason is None:
                raise CloudError(f"Creating VM {req.vm_name} in {zone} failed: {short(e, None)}") from e
            tried.append((zone, reason))
            log.warning("No room in %s (%s); trying the next zone", zone, reason)
            continue
        vm = get_vm(clients, project, zone, req.vm_name)
        if vm is None:
            raise CloudError(f"VM {req.vm_name} was created in {zone} but cannot be read: check `newsclf cloud status`")
        return Started(vm=vm, run_id=req.run_id, created=True, tried=tried)
    summary = ", ".join(f"{z} ({r})" for z, r in tried)
    quota = any("QUOTA" in r.upper() for _, r in tried)
    fix = (
        "request more quota (console: IAM & Admin > Quotas) or pick another --zone/--gpu"
        if quota
        else "retry later, use --spot or another --gpu/--machine-type, or list other zones in NEWSCLF_ZONES"
    )
    raise CloudError(f"No zone could take {_describe(req)}: tried {summary}; {fix}")


def _zones_to_try(clients: Clients, project: str, req: RunRequest) -> list[str]:
    """The candidate zones that offer the machine type and GPUs (asked of the API, one list per type)."""
    what = _describe(req, spot=False)
    offered = offering_zones(clients, project, req.machine_type, req.gpu)
    if not offered:
        raise InputError(
            f"No zone offers {what}: check the names (`gcloud compute machine-types list`, "
            "`gcloud compute accelerator-types list`)"
        )
    zones = candidate_zones(req.zone, req.zones, offered)
    wanted = [req.zone, *[z.strip() for z in req.zones.split(",") if z.strip()]]
    skipped = [z for z in dict.fromkeys(wanted) if z not in offered]
    if not zones:
        elsewhere = sorted(offered)
        more = f", … ({len(elsewhere)} zones)" if len(elsewhere) > 8 else ""
        raise InputError(
            f"No zone of {', '.join(sorted({region_of(z) for z in wanted}))} offers {what}: it is offered in "
            f"{', '.join(elsewhere[:8])}{more}; pick one with --zone (or NEWSCLF_ZONE)"
        )
    if skipped:
        log.warning(
            "%s %s not offer %s; trying %s",
            ", ".join(skipped),
            "do" if len(skipped) > 1 else "does",
            what,
            ", ".join(zones),
        )
    return zones


def _describe(req: RunRequest, *, spot: bool = True) -> str:
    gpu = f" + {req.gpu[1]} x {req.gpu[0]}" if req.gpu else ""
    return f"{req.machine_type}{gpu}{' (spot)' if req.spot and spot else ''}"


def _source_image(clients: Clients, project: str) -> str:
    from google.api_core import exceptions as gexc

    settings = clients.settings
    image_project = settings.vm_image_project
    family = settings.vm_image_family
    try:
        with translated("read the VM image", project):
            image = clients.images.get_from_family(project=image_project, family=family)
    except gexc.NotFound:
        raise CloudError(
            f"No VM image family {family} in project {image_project}: set NEWSCLF_VM_IMAGE_FAMILY "
            "to a current Deep Learning VM family"
        ) from None
    return image.self_link


# --------------------------------------------------------------------------------------------- stop


def _stop(clients: Clients, project: str, vm: VM) -> None:
    with translated("stop the VM", project):
        op = clients.instances.stop_unary(project=project, zone=vm.zone, instance=vm.name)
        wait_operation(clients, project, vm.zone, op)


@dataclass
class StopResult:
    name: str
    zone: str | None
    before: str | None  # status before, None when there was no VM
    after: str | None  # TERMINATED, or None when deleted / not found
    deleted: bool = False


def stop_vm(
    clients: Clients, project: str, vm: VM, *, delete: bool = False, poll_s: float = 2.0, timeout_s: float = 900
) -> StopResult:
    """Stop the VM and wait until it is really TERMINATED (the operation can finish first); delete it if asked."""
    from google.api_core import exceptions as gexc

    before = vm.status
    current: VM | None = vm
    if vm.status not in DOWN_STATES:
        if vm.status != "STOPPING":
            _stop(clients, project, vm)
        current = wait_status(clients, project, vm, DOWN_STATES, poll_s=poll_s, timeout_s=timeout_s)
    if not delete:
        return StopResult(vm.name, vm.zone, before, current.status if current else None)
    try:
        with translated("delete the VM", project):
            op = clients.instances.delete_unary(project=project, zone=vm.zone, instance=vm.name)
            wait_operation(clients, project, vm.zone, op)
    except gexc.NotFound:
        pass
    return StopResult(vm.name, vm.zone, before, None, deleted=True)
