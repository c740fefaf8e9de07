"""What `cloud run` asks for (RunRequest), validated before any request, and the Instance body it becomes."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from newsclf.cloud import layout
from newsclf.cloud.compute.hardware import boot_disk_type, builtin_gpus, check_hardware
from newsclf.cloud.compute.labels import (
    LABEL,
    LABEL_VALUE,
    META_BUCKET,
    META_DRIVER,
    META_GPUS,
    META_IMAGE,
    META_KEEP_VM,
    META_RUN_ID,
    META_STARTUP,
    META_TRAIN_ARGS,
    META_WANDB_KEY,
    META_WANDB_SECRET,
    RUN_LABEL,
    SWEEP_LABEL,
)
from newsclf.cloud.google.credentials import CLOUD_PLATFORM_SCOPE
from newsclf.errors import InputError

if TYPE_CHECKING:
    from newsclf.config import Settings

RESERVED_TRAIN_ARGS = ("--bucket", "--run-id")

# Compute Engine's limits (https://cloud.google.com/compute/docs/instances/limit-vm-runtime): a run
# duration of 30 s to 120 days; names RFC 1035 (every compute.v1 `name`); label values 0-63 lowercase
# letters, digits, '_' and '-' (https://cloud.google.com/compute/docs/labeling-resources#requirements).
MIN_RUN_SECONDS, MAX_RUN_SECONDS = 30, 120 * 24 * 3600
MIN_DISK_GB = 10
_NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")


def startup_script() -> str:
    """The VM startup script shipped in the package."""
    from importlib.resources import files

    return files("newsclf.cloud").joinpath("startup.sh").read_text(encoding="utf-8")


def default_image(settings: Settings, project: str) -> str:
    """settings.image, else the `latest` image `newsclf cloud build` pushes."""
    if settings.image:
        return settings.image
    from newsclf.cloud.cloudbuild.image import image_repository

    return f"{image_repository(settings, project)}:latest"


def label_value(text: str) -> str:
    """A run or sweep id as a label value: `My.Run_2` -> `my-run_2`. Labels only find VMs; the exact
    run id travels in metadata."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def check_vm_name(name: str) -> str:
    if not _NAME_RE.fullmatch(name):
        raise InputError(
            f"Bad VM name {name!r}: Compute Engine names are 1-63 lowercase letters, digits and '-', starting "
            "with a letter and not ending with '-' (set NEWSCLF_VM_NAME, e.g. newsclf-train)"
        )
    return name


def check_max_hours(max_hours: float) -> None:
    """--max-hours within what Compute Engine's max_run_duration takes (inf and nan are not)."""
    if not (math.isfinite(max_hours) and MIN_RUN_SECONDS <= run_seconds(max_hours) <= MAX_RUN_SECONDS):
        raise InputError(
            f"Bad --max-hours {max_hours:g}: Compute Engine stops a VM after 30 seconds to 120 days, "
            "so use 0.0084 to 2880"
        )


def run_seconds(max_hours: float) -> int:
    return int(round(max_hours * 3600))


@dataclass
class RunRequest:
    """Everything `cloud run` asks for, resolved (flags over settings)."""

    run_id: str
    bucket: str
    image: str
    vm_name: str
    zone: str
    machine_type: str
    gpu: tuple[str, int] | None = None
    spot: bool = False
    disk_gb: int = 100
    max_hours: float = 6.0
    keep_vm: bool = False
    force: bool = False
    train_args: list[str] = field(default_factory=list)
    zones: str = ""  # settings.zones
    wandb_secret: str | None = None
    wandb_key: str | None = None  # only with the explicit metadata opt-in
    explicit: frozenset[str] = frozenset()  # flags the user gave: machine_type, gpu, spot, zone, disk_gb
    sweep_id: str | None = None  # the run is (part of) a sweep: labelled on the VM
    service_account: str = "default"  # the VM runs as it (`cloud run` passes NEWSCLF_VM_SERVICE_ACCOUNT's email)

    def __post_init__(self) -> None:
        validate_vm_request(self)

    @property
    def gpus(self) -> int:
        return (self.gpu[1] if self.gpu else 0) + builtin_gpus(self.machine_type)


def validate_vm_request(req: RunRequest) -> None:
    """What Compute Engine (or the image on the VM) would refuse, checked before any request: the run id,
    train options, VM name, run-time bound, disk size, and the GPU against the machine type and the
    image's torch. Raises InputError naming the fix."""
    if not layout.is_valid_run_id(req.run_id):
        raise InputError(f"Bad run id {req.run_id!r}: use letters, digits, '.', '_' and '-'")
    for arg in req.train_args:
        if "\n" in arg or "\r" in arg:
            raise InputError("A train option contains a line break: pass each option on one line")
        if arg.split("=", 1)[0] in RESERVED_TRAIN_ARGS:
            raise InputError(f"{arg.split('=', 1)[0]} is set by `newsclf cloud run`: drop it from the train options")
    check_vm_name(req.vm_name)
    check_max_hours(req.max_hours)
    if req.disk_gb < MIN_DISK_GB:
        raise InputError(f"--disk-gb must be at least {MIN_DISK_GB}")
    check_hardware(req.machine_type, req.gpu)


def run_labels(req: RunRequest) -> dict[str, str]:
    """The labels a VM carries for a run (and its sweep)."""
    labels = {LABEL: LABEL_VALUE, RUN_LABEL: label_value(req.run_id)}
    if req.sweep_id:
        labels[SWEEP_LABEL] = label_value(req.sweep_id)
    return labels


def instance_metadata(req: RunRequest, gpus: int, script: str | None = None) -> dict[str, str]:
    """The metadata items the startup script reads. Secret values only with the explicit opt-in."""
    items = {
        META_STARTUP: script if script is not None else startup_script(),
        META_RUN_ID: req.run_id,
        META_IMAGE: req.image,
        META_BUCKET: req.bucket,
        META_TRAIN_ARGS: "\n".join(req.train_args),
        META_KEEP_VM: "true" if req.keep_vm else "false",
        META_GPUS: str(gpus),
    }
    if gpus:
        items[META_DRIVER] = "True"
    if req.wandb_secret:
        items[META_WANDB_SECRET] = req.wandb_secret
    if req.wandb_key:
        items[META_WANDB_KEY] = req.wandb_key
    return items


def metadata_items(items: dict[str, str]) -> list[Any]:
    from google.cloud import compute_v1

    return [compute_v1.Items(key=k, value=v) for k, v in items.items()]


def instance_resource(req: RunRequest, zone: str, source_image: str, script: str | None = None, *, project: str) -> Any:
    """The compute_v1.Instance that `cloud run` inserts for a new VM."""
    from google.cloud import compute_v1

    gpus = req.gpus
    scheduling = compute_v1.Scheduling(
        max_run_duration=compute_v1.Duration(seconds=run_seconds(req.max_hours)),
        instance_termination_action="STOP",  # stop (keep the disk), never delete, when the time is up
    )
    if req.spot:
        scheduling.provisioning_model = "SPOT"
        scheduling.automatic_restart = False  # required for spot; a preempted run is resumed by `cloud run --resume`
    if gpus or req.spot:
        scheduling.on_host_maintenance = "TERMINATE"  # GPU and spot VMs cannot live-migrate
    instance = compute_v1.Instance(
        name=req.vm_name,
        machine_type=f"zones/{zone}/machineTypes/{req.machine_type}",
        labels=run_labels(req),
        disks=[
            compute_v1.AttachedDisk(
                boot=True,
                auto_delete=True,
                initialize_params=compute_v1.AttachedDiskInitializeParams(
                    source_image=source_image,
                    disk_size_gb=req.disk_gb,
                    disk_type=f"zones/{zone}/diskTypes/{boot_disk_type(req.machine_type)}",
                ),
            )
        ],
        network_interfaces=[
            compute_v1.NetworkInterface(
                network="global/networks/default",
                # an external address so the VM reaches Artifact Registry without Private Google Access
                access_configs=[compute_v1.AccessConfig(name="External NAT", type_="ONE_TO_ONE_NAT")],
            )
        ],
        service_accounts=[compute_v1.ServiceAccount(email=req.service_account, scopes=[CLOUD_PLATFORM_SCOPE])],
        metadata=compute_v1.Metadata(items=metadata_items(instance_metadata(req, gpus, script))),
        scheduling=scheduling,
    )
    if req.gpu:
        instance.guest_accelerators = accelerators(project, zone, req.gpu)
    return instance


def accelerators(project: str, zone: str, gpu: tuple[str, int] | None) -> list[Any]:
    """guestAccelerators in the form compute.v1 documents: projects/P/zones/Z/acceleratorTypes/T."""
    from google.cloud import compute_v1

    if gpu is None:
        return []
    url = f"projects/{project}/zones/{zone}/acceleratorTypes/{gpu[0]}"
    return [compute_v1.AcceleratorConfig(accelerator_type=url, accelerator_count=gpu[1])]
