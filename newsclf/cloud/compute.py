"""Compute Engine: the training VM. Create or restart it for a run, follow its job, list it, stop it.

Google imports happen inside functions (importing this module stays cheap). Clients are injectable:
`Clients` holds the compute_v1 clients and a Cloud Storage client; `make_clients(settings)` builds the
real ones, honouring NEWSCLF_COMPUTE_API_ENDPOINT and STORAGE_EMULATOR_HOST.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterator

from newsclf.cloud import layout
from newsclf.cloud.prices import hourly_estimate
from newsclf.errors import CloudError, ConfigError, InputError
from newsclf.runstate import FINAL, RunState

if TYPE_CHECKING:
    from newsclf.config import Settings

log = logging.getLogger("newsclf.cloud.compute")

# How newsclf finds its VMs, and what it tells the startup script (instance metadata keys).
LABEL = "newsclf"
LABEL_VALUE = "train"
RUN_LABEL = "newsclf-run"
SWEEP_LABEL = "newsclf-sweep"  # the sweep a VM's run belongs to (`cloud status` groups by it, `cloud stop --sweep`)
META_STARTUP = "startup-script"
META_RUN_ID = "newsclf-run-id"
META_IMAGE = "newsclf-image"
META_BUCKET = "newsclf-bucket"
META_TRAIN_ARGS = "newsclf-train-args"  # one argument per line
META_KEEP_VM = "newsclf-keep-vm"
META_GPUS = "newsclf-gpus"
META_WANDB_SECRET = "newsclf-wandb-secret"  # a Secret Manager secret *name*, read on the VM
META_WANDB_KEY = "newsclf-wandb-key"  # only with the explicit --wandb-key-in-metadata opt-in
META_DRIVER = "install-nvidia-driver"  # Deep Learning VM images install the driver at first boot
OPTIONAL_META = (META_WANDB_SECRET, META_WANDB_KEY, META_DRIVER)

# Serial-port line prefixes written by startup.sh
JOB_PREFIX = "newsclf-job"
VM_PREFIX = "newsclf-vm"

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
ACTIVE_STATES = frozenset({"PROVISIONING", "STAGING", "RUNNING", "REPAIRING"})
DOWN_STATES = frozenset({"TERMINATED", "STOPPED", "SUSPENDED"})
FINAL_RUN_STATES = FINAL  # status.json states (newsclf.runstate) after which a run is not started again
RESERVED_TRAIN_ARGS = ("--bucket", "--run-id")

FOLLOW_MAX_FAILURES = 10  # consecutive failed polls before `cloud run` / `cloud logs --follow` give up

# Errors that mean "this zone cannot take the VM now": try the next zone.
_CAPACITY_MARKERS = ("RESOURCEPOOLEXHAUSTED", "QUOTAEXCEEDED", "STOCKOUT", "RESOURCEEXHAUSTED")


# ---------------------------------------------------------------------------------------------- clients


@dataclass
class Clients:
    """The API clients compute.py uses; tests pass real clients pointed at local stand-ins."""

    instances: Any  # compute_v1.InstancesClient
    operations: Any  # compute_v1.ZoneOperationsClient
    images: Any  # compute_v1.ImagesClient
    storage: Any = None  # google.cloud.storage.Client, built on first use when None
    settings: Any = None
    machine_types: Any = None  # compute_v1.MachineTypesClient: which zones offer a machine type
    accelerator_types: Any = None  # compute_v1.AcceleratorTypesClient: which zones offer a GPU
    disks: Any = None  # compute_v1.DisksClient: grow a reused VM's boot disk

    def storage_client(self) -> Any:
        if self.storage is None:
            self.storage = _storage_client(self.settings)
        return self.storage


def make_clients(settings: Settings) -> Clients:
    """Compute clients for settings.compute_api_endpoint (anonymous for a local http:// stand-in), else ADC."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import compute_v1

    kwargs: dict[str, Any] = {}
    endpoint = settings.compute_api_endpoint
    if endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=endpoint)
        if endpoint.startswith("http://"):
            from google.auth.credentials import AnonymousCredentials

            kwargs["credentials"] = AnonymousCredentials()
    if "credentials" not in kwargs:
        kwargs["credentials"] = _adc()
    return Clients(
        instances=compute_v1.InstancesClient(**kwargs),
        operations=compute_v1.ZoneOperationsClient(**kwargs),
        images=compute_v1.ImagesClient(**kwargs),
        settings=settings,
        machine_types=compute_v1.MachineTypesClient(**kwargs),
        accelerator_types=compute_v1.AcceleratorTypesClient(**kwargs),
        disks=compute_v1.DisksClient(**kwargs),
    )


def _adc() -> Any:
    from newsclf.cloud.storage import default_credentials  # the same words for a missing or broken key

    credentials, _ = default_credentials([CLOUD_PLATFORM_SCOPE])
    return credentials


def _storage_client(settings: Settings | None) -> Any:
    from newsclf.cloud.storage import storage_client
    from newsclf.config import get_settings

    return storage_client(settings or get_settings())


def project_id(settings: Settings) -> str:
    """settings.gcp_project, else the Application Default Credentials project."""
    if settings.gcp_project:
        return settings.gcp_project
    if settings.compute_api_endpoint and settings.compute_api_endpoint.startswith("http://"):
        raise ConfigError("No Google Cloud project: set NEWSCLF_GCP_PROJECT")
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    from newsclf.cloud.storage import check_credentials_file

    check_credentials_file()  # a broken key file is that, not a missing project
    try:
        _, project = google.auth.default()
    except DefaultCredentialsError:
        project = None
    if not project:
        raise ConfigError(
            "No Google Cloud project: set NEWSCLF_GCP_PROJECT or run `gcloud config set project PROJECT`"
        )
    return project


def require_bucket(settings: Settings) -> str:
    from newsclf.cloud.storage import require_bucket as storage_require_bucket

    return storage_require_bucket(settings)


# ------------------------------------------------------------------------------------------- run inputs


def startup_script() -> str:
    """The VM startup script shipped in the package."""
    from importlib.resources import files

    return files("newsclf.cloud").joinpath("startup.sh").read_text(encoding="utf-8")


def default_image(settings: Settings, project: str) -> str:
    """settings.image, else the `latest` image `newsclf cloud build` pushes."""
    if settings.image:
        return settings.image
    from newsclf.cloud.build import image_repository

    return f"{image_repository(settings, project)}:latest"


def parse_gpu(value: str | None) -> tuple[str, int] | None:
    """`nvidia-tesla-t4:1` -> ("nvidia-tesla-t4", 1); `nvidia-l4` -> ("nvidia-l4", 1)."""
    if not value:
        return None
    kind, _, count = value.partition(":")
    if not re.fullmatch(r"[a-z0-9-]+", kind) or not re.fullmatch(r"[1-9][0-9]?|", count):
        raise InputError(f"Bad --gpu {value!r}: use TYPE:COUNT, e.g. --gpu nvidia-tesla-t4:1")
    return kind, int(count or 1)


# GPUs on Compute Engine (https://cloud.google.com/compute/docs/gpus, "GPU machine types"): N1 is the
# only family GPUs attach to (T4, V100, P100, P4; T4 in counts of 1, 2 or 4, with at most 48 vCPUs for
# 1-2 of them and 96 for 4); the accelerator-optimized families come with theirs built in: G2 = L4,
# A2 = A100 (40 GB highgpu/megagpu, 80 GB ultragpu), A3 = H100 (highgpu, edgegpu, megagpu) or H200
# (ultragpu), A4 = B200, G4 = RTX PRO 6000. The image's torch (uv.lock's 2.15.0+cu132) is built for
# sm_75 sm_80 sm_86 sm_90 sm_100 sm_120 (torch._C._cuda_getArchFlags()), so T4 (sm_75) and everything
# newer runs; V100 (sm_70), P100 (sm_60), P4 (sm_61) and K80 (sm_37) do not.
_BUILTIN_GPUS: tuple[tuple[str, str], ...] = (
    (r"g2-standard-(\d+)", "nvidia-l4"),
    (r"a2-(?:high|mega)gpu-(\d+)g", "nvidia-tesla-a100"),
    (r"a2-ultragpu-(\d+)g", "nvidia-a100-80gb"),
    (r"a3-(?:high|edge)gpu-(\d+)g", "nvidia-h100-80gb"),
    (r"a3-megagpu-(\d+)g", "nvidia-h100-mega-80gb"),
    (r"a3-ultragpu-(\d+)g", "nvidia-h200-141gb"),
    (r"a4-highgpu-(\d+)g", "nvidia-b200"),
    (r"g4-standard-(\d+)", "nvidia-rtx-pro-6000"),
)
G2_GPUS = {24: 2, 32: 1, 48: 4, 96: 8}  # g2-standard-N: L4s by vCPUs (the rest have one)
GPU_MACHINE_EXAMPLES = {  # a built-in GPU type -> the smallest machine type that carries it
    "nvidia-l4": "g2-standard-8",
    "nvidia-tesla-a100": "a2-highgpu-1g",
    "nvidia-a100-80gb": "a2-ultragpu-1g",
    "nvidia-h100-80gb": "a3-highgpu-8g",
    "nvidia-h100-mega-80gb": "a3-megagpu-8g",
    "nvidia-h200-141gb": "a3-ultragpu-8g",
    "nvidia-b200": "a4-highgpu-8g",
    "nvidia-rtx-pro-6000": "g4-standard-48",
}
ATTACHABLE_GPUS = {"nvidia-tesla-t4": (1, 2, 4)}  # what --gpu may attach (to N1), and in which counts
T4_MAX_VCPUS = {1: 48, 2: 48, 4: 96}
TOO_OLD_GPUS = {  # attachable to N1, but older than the image's torch supports
    "nvidia-tesla-v100": "sm_70",
    "nvidia-tesla-p100": "sm_60",
    "nvidia-tesla-p4": "sm_61",
    "nvidia-tesla-k80": "sm_37",
}
GPU_CHOICES = (
    "--gpu nvidia-tesla-t4:1 (on n1-*), or a machine type with GPUs built in and no --gpu: "
    "g2-standard-8 (L4), a2-highgpu-1g (A100), a3-highgpu-8g (H100), a3-ultragpu-8g (H200), a4-highgpu-8g (B200)"
)

# Compute Engine's limits (https://cloud.google.com/compute/docs/instances/limit-vm-runtime): a run
# duration of 30 s to 120 days; names RFC 1035 (every compute.v1 `name`); label values 0-63 lowercase
# letters, digits, '_' and '-' (https://cloud.google.com/compute/docs/labeling-resources#requirements).
MIN_RUN_SECONDS, MAX_RUN_SECONDS = 30, 120 * 24 * 3600
MIN_DISK_GB = 10
_NAME_RE = re.compile(r"[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?")


def builtin_gpu(machine_type: str) -> tuple[str, int] | None:
    """(GPU type, count) that come with the machine type itself (g2/a2/a3/a4); None for others."""
    for pattern, kind in _BUILTIN_GPUS:
        m = re.fullmatch(pattern, machine_type)
        if m:
            n = int(m.group(1))
            if kind == "nvidia-l4":
                return kind, G2_GPUS.get(n, 1)
            return kind, (max(1, n // 48) if kind == "nvidia-rtx-pro-6000" else n)  # g4-standard-48: one GPU
    return None


def builtin_gpus(machine_type: str) -> int:
    """GPUs that come with the machine type itself; 0 for others."""
    gpu = builtin_gpu(machine_type)
    return gpu[1] if gpu else 0


def machine_family(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def boot_disk_type(machine_type: str) -> str:
    """pd-balanced, except where the machine series boots from Hyperdisk (A3, A4, G4: compute.v1's
    diskType description names hyperdisk-balanced as their default, and the type must suit the series)."""
    return "hyperdisk-balanced" if machine_family(machine_type) in ("a3", "a4", "g4") else "pd-balanced"


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


def check_hardware(machine_type: str, gpu: tuple[str, int] | None) -> None:
    """The machine type and --gpu make a VM Compute Engine creates and the image's torch can use."""
    if gpu is None:
        return
    kind, count = gpu
    if kind in TOO_OLD_GPUS:
        raise InputError(
            f"--gpu {kind} ({TOO_OLD_GPUS[kind]}) is too old for the training image's torch, which needs sm_75 "
            f"or newer: use {GPU_CHOICES}"
        )
    builtin = builtin_gpu(machine_type)
    if builtin:
        raise InputError(
            f"{machine_type} comes with {builtin[1]} x {builtin[0]} built in: drop --gpu "
            f"(for more GPUs pick a larger {machine_family(machine_type).upper()} machine type)"
        )
    if kind in GPU_MACHINE_EXAMPLES:
        raise InputError(
            f"{kind} comes built into machine types, it does not attach: use --machine-type "
            f"{GPU_MACHINE_EXAMPLES[kind]} and drop --gpu"
        )
    if kind not in ATTACHABLE_GPUS:
        raise InputError(f"Unknown GPU type {kind!r}: use {GPU_CHOICES}")
    if machine_family(machine_type) != "n1":
        raise InputError(
            f"{kind} attaches only to N1 machine types, not {machine_type}: use --machine-type n1-standard-8"
        )
    counts = ATTACHABLE_GPUS[kind]
    if count not in counts:
        raise InputError(
            f"{kind} comes {', '.join(map(str, counts[:-1]))} or {counts[-1]} to a VM, not {count}: "
            f"use --gpu {kind}:{min((c for c in counts if c >= count), default=counts[-1])}"
        )
    m = re.fullmatch(r"n1-[a-z]+-(\d+)", machine_type)
    if m and int(m.group(1)) > T4_MAX_VCPUS[count]:
        raise InputError(
            f"{machine_type} has {m.group(1)} vCPUs, more than a VM with {count} x {kind} may have "
            f"({T4_MAX_VCPUS[count]}): pick a smaller machine type or --gpu {kind}:4"
        )


def offering_zones(clients: Clients, project: str, machine_type: str, gpu: tuple[str, int] | None) -> set[str]:
    """Every zone that offers the machine type and, if any, the attached GPUs in that number: one
    aggregated list per type, filtered by name (zones that do not offer it come back empty)."""
    flt = f'name = "{machine_type}"'
    with _translated("list machine types", project):
        zones = {
            _last(scope)
            for scope, scoped in clients.machine_types.aggregated_list(request={"project": project, "filter": flt})
            for m in scoped.machine_types
            if m.name == machine_type and m.deprecated.state not in ("OBSOLETE", "DELETED")
        }
    if gpu and zones:
        kind, count = gpu
        with _translated("list GPU types", project):
            zones &= {
                _last(scope)
                for scope, scoped in clients.accelerator_types.aggregated_list(
                    request={"project": project, "filter": f'name = "{kind}"'}
                )
                for a in scoped.accelerator_types
                if a.name == kind and a.maximum_cards_per_instance >= count
                and a.deprecated.state not in ("OBSOLETE", "DELETED")
            }
    return zones


def region_of(zone: str) -> str:
    return zone.rsplit("-", 1)[0]


def candidate_zones(zone: str, zones_setting: str, offered: set[str] | frozenset[str]) -> list[str]:
    """The zones to try, in order, among those that offer the hardware: the zone, then settings.zones
    (comma list), else the zone's region's other zones (what the API listed, not guessed letters)."""
    extra = [z.strip() for z in zones_setting.split(",") if z.strip()]
    if not extra:
        extra = sorted(z for z in offered if region_of(z) == region_of(zone))
    out: list[str] = []
    for z in [zone, *extra]:
        if z not in out and z in offered:
            out.append(z)
    return out


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


def _metadata_items(items: dict[str, str]) -> list[Any]:
    from google.cloud import compute_v1

    return [compute_v1.Items(key=k, value=v) for k, v in items.items()]


def instance_resource(req: RunRequest, zone: str, source_image: str, script: str | None = None, *, project: str) -> Any:
    """The compute_v1.Instance that `cloud run` inserts for a new VM."""
    from google.cloud import compute_v1

    gpus = req.gpus
    scheduling = compute_v1.Scheduling(
        max_run_duration=compute_v1.Duration(seconds=_run_seconds(req.max_hours)),
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
        metadata=compute_v1.Metadata(items=_metadata_items(instance_metadata(req, gpus, script))),
        scheduling=scheduling,
    )
    if req.gpu:
        instance.guest_accelerators = _accelerators(project, zone, req.gpu)
    return instance


def _accelerators(project: str, zone: str, gpu: tuple[str, int] | None) -> list[Any]:
    """guestAccelerators in the form compute.v1 documents: projects/P/zones/Z/acceleratorTypes/T."""
    from google.cloud import compute_v1

    if gpu is None:
        return []
    url = f"projects/{project}/zones/{zone}/acceleratorTypes/{gpu[0]}"
    return [compute_v1.AcceleratorConfig(accelerator_type=url, accelerator_count=gpu[1])]


# ------------------------------------------------------------------------------------------------- VMs


def _last(url: str) -> str:
    return url.rsplit("/", 1)[-1] if url else ""


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
        gpu_type = _last(accels[0].accelerator_type) if accels else None
        gpu_count = sum(a.accelerator_count for a in accels)
        boot = [d for d in inst.disks if d.boot]
        disk_gb = sum(d.disk_size_gb for d in boot)
        return cls(
            name=inst.name,
            zone=_last(inst.zone),
            status=inst.status,
            machine_type=_last(inst.machine_type),
            gpu_type=gpu_type,
            gpu_count=gpu_count,
            spot=inst.scheduling.provisioning_model == "SPOT" or bool(inst.scheduling.preemptible),
            disk_gb=int(disk_gb),
            labels=dict(inst.labels),
            metadata={i.key: i.value for i in inst.metadata.items},
            metadata_fingerprint=inst.metadata.fingerprint,
            label_fingerprint=inst.label_fingerprint,
            last_start=_parse_time(inst.last_start_timestamp),
            boot_disk=_last(boot[0].source) if boot else "",
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
        now = now or datetime.now(timezone.utc)
        return max(0.0, (now - self.last_start).total_seconds())

    def hardware(self) -> str:
        builtin = builtin_gpu(self.machine_type)
        gpu = f" + {self.gpu_count} x {self.gpu_type}" if self.attached_gpu else ""
        gpu = f" ({builtin[1]} x {builtin[0]} built in)" if builtin else gpu
        return f"{self.machine_type}{gpu}{' (spot)' if self.spot else ''}"


def _api_errors() -> tuple[type[BaseException], ...]:
    from google.api_core import exceptions as gexc

    return (gexc.GoogleAPICallError, gexc.RetryError)


@contextlib.contextmanager
def _translated(action: str, project: str) -> Iterator[None]:
    """Turn Google API errors into one-line CloudErrors that name the fix."""
    import requests
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_exc

    try:
        yield
    except (gexc.Unauthorized, auth_exc.RefreshError, auth_exc.DefaultCredentialsError) as e:
        raise CloudError(
            f"Not authenticated to {action}: run `gcloud auth application-default login` ({_short(e)})"
        ) from e
    except gexc.Forbidden as e:
        if capacity_reason(e):
            raise
        raise CloudError(
            f"Permission denied to {action} in project {project}: {_short(e)}; grant your account "
            "roles/compute.instanceAdmin.v1 and roles/iam.serviceAccountUser, or check NEWSCLF_GCP_PROJECT"
        ) from e
    except requests.exceptions.ConnectionError as e:
        raise CloudError(
            f"Cannot reach the Compute Engine API to {action}: check the network or NEWSCLF_COMPUTE_API_ENDPOINT"
        ) from e
    except gexc.GoogleAPICallError as e:
        if "serviceaccount" in _short(e).lower().replace(" ", ""):  # missing, or not ours to use (actAs)
            raise CloudError(
                f"Could not {action}: {_short(e)}; run `newsclf cloud setup`, which creates the VMs' service account "
                "(NEWSCLF_VM_SERVICE_ACCOUNT) and checks that you may use it (roles/iam.serviceAccountUser)"
            ) from e
        if isinstance(e, gexc.NotFound) or capacity_reason(e):
            raise  # the caller decides what these mean
        raise CloudError(f"Could not {action}: {_short(e)}; check `newsclf cloud status` and retry") from e


def _short(e: BaseException) -> str:
    message = (getattr(e, "message", None) or str(e)).strip()
    message = re.sub(r"^(GET|POST|PUT|PATCH|DELETE) \S+: ", "", message)  # the REST transport's prefix
    return message.splitlines()[0] if message else type(e).__name__


def capacity_reason(error: Any) -> str | None:
    """The capacity/quota code in an API exception or a finished Operation's error, else None."""
    codes: list[str] = []
    if hasattr(error, "error") and hasattr(error.error, "errors"):  # a compute_v1.Operation
        codes += [f"{e.code} {e.message}" for e in error.error.errors]
    else:
        for item in getattr(error, "errors", None) or []:
            if isinstance(item, dict):
                codes += [str(v) for v in item.values()]
            else:
                codes.append(str(item))
        if getattr(error, "reason", None):
            codes.append(str(error.reason))
        codes.append(str(getattr(error, "message", "") or ""))
    for text in codes:
        for word in re.findall(r"[A-Za-z_]+", text):
            squashed = word.upper().replace("_", "")
            if any(marker in squashed for marker in _CAPACITY_MARKERS):
                return word
    return None


class OperationFailed(CloudError):
    """A zone operation finished with an error."""

    def __init__(self, message: str, operation: Any) -> None:
        super().__init__(message)
        self.operation = operation


def wait_operation(clients: Clients, project: str, zone: str, op: Any, *, timeout_s: float = 900) -> Any:
    """Poll the zone operation (`wait`, on the same endpoint as the clients) until DONE; raise on error."""
    from google.cloud import compute_v1

    done = compute_v1.Operation.Status.DONE
    deadline = time.monotonic() + timeout_s
    while op.status != done:
        if time.monotonic() > deadline:
            raise CloudError(
                f"Operation {op.name} in {zone} did not finish in {timeout_s:.0f} s: check `newsclf cloud status`"
            )
        op = clients.operations.wait(project=project, zone=zone, operation=op.name)
        if op.status != done:
            time.sleep(0.2)
    if op.error and op.error.errors:
        first = op.error.errors[0]
        raise OperationFailed(f"{first.code}: {first.message}", op)
    return op


def list_vms(clients: Clients, project: str, zone: str | None = None) -> list[VM]:
    """newsclf-labelled VMs in one zone, or in every zone (aggregated list)."""
    label_filter = f"labels.{LABEL}:*"
    with _translated("list VMs", project):
        if zone:
            instances = list(
                clients.instances.list(request={"project": project, "zone": zone, "filter": label_filter})
            )
        else:
            instances = [
                inst
                for _, scoped in clients.instances.aggregated_list(
                    request={"project": project, "filter": label_filter}
                )
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
        with _translated("read the VM", project):
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


# ------------------------------------------------------------------------------------------ run store


class RunStore:
    """A run's files in the bucket: status.json, metrics.json and logs/ (names from layout.py)."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _json(self, name: str) -> dict | None:
        from newsclf.cloud.storage import read_json

        doc = read_json(self.client.bucket(self.bucket), name)
        return doc if isinstance(doc, dict) else None

    def has_dataset(self) -> bool:
        """Whether `newsclf job` will find data: data/processed/manifest.json, or anything in data/raw/."""
        from newsclf.cloud.storage import list_objects

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
        from newsclf.cloud.storage import list_objects

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


# -------------------------------------------------------------------------------------------- start


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


def check_max_hours(max_hours: float) -> None:
    """--max-hours within what Compute Engine's max_run_duration takes (inf and nan are not)."""
    if not (math.isfinite(max_hours) and MIN_RUN_SECONDS <= _run_seconds(max_hours) <= MAX_RUN_SECONDS):
        raise InputError(
            f"Bad --max-hours {max_hours:g}: Compute Engine stops a VM after 30 seconds to 120 days, "
            "so use 0.0084 to 2880"
        )


def _run_seconds(max_hours: float) -> int:
    return int(round(max_hours * 3600))


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
    sched.max_run_duration = compute_v1.Duration(seconds=_run_seconds(req.max_hours))
    sched.instance_termination_action = "STOP"
    if plan.gpus:
        sched.on_host_maintenance = "TERMINATE"  # GPU VMs cannot live-migrate
    if sched != before:
        plan.scheduling = sched
        old = vm.scheduling.max_run_duration.seconds if vm.scheduling is not None else 0
        if old != _run_seconds(req.max_hours):
            plan.changes.append(f"run limit {old / 3600:g} -> {req.max_hours:g} h" if old else f"run limit {req.max_hours:g} h")
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
                guest_accelerators=_accelerators(project, vm.zone, gpu)
            ),
        )
        wait_operation(clients, project, vm.zone, op)

    with _translated("change the VM", project):
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


def start_run(clients: Clients, project: str, req: RunRequest, *, store: RunStore | None, poll_s: float = 2.0) -> Started:
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
        raise CloudError(
            f"VM {vm.name} is suspended: delete it with `newsclf cloud stop --delete` and rerun"
        )
    return _restart(clients, project, vm, req, plan)


def _restart(clients: Clients, project: str, vm: VM, req: RunRequest, plan: _Reshape) -> Started:
    from google.cloud import compute_v1

    _reshape(clients, project, vm, plan)
    items = {k: v for k, v in vm.metadata.items() if k not in OPTIONAL_META}
    items.update(instance_metadata(req, plan.gpus))
    log.info("Starting VM %s (%s) for run %s", vm.name, vm.zone, req.run_id)
    with _translated("update the VM", project):
        op = clients.instances.set_metadata_unary(
            project=project,
            zone=vm.zone,
            instance=vm.name,
            metadata_resource=compute_v1.Metadata(
                fingerprint=vm.metadata_fingerprint, items=_metadata_items(items)
            ),
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
            with _translated("create the VM", project):
                op = clients.instances.insert_unary(
                    project=project, zone=zone, instance_resource=instance_resource(req, zone, source_image, project=project),
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
                raise CloudError(f"Creating VM {req.vm_name} in {zone} failed: {_short(e)}") from e
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
        log.warning("%s %s not offer %s; trying %s", ", ".join(skipped), "do" if len(skipped) > 1 else "does",
                    what, ", ".join(zones))
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
        with _translated("read the VM image", project):
            image = clients.images.get_from_family(project=image_project, family=family)
    except gexc.NotFound:
        raise CloudError(
            f"No VM image family {family} in project {image_project}: set NEWSCLF_VM_IMAGE_FAMILY "
            "to a current Deep Learning VM family"
        ) from None
    return image.self_link


# --------------------------------------------------------------------------------------------- stop


def _stop(clients: Clients, project: str, vm: VM) -> None:
    with _translated("stop the VM", project):
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
        with _translated("delete the VM", project):
            op = clients.instances.delete_unary(project=project, zone=vm.zone, instance=vm.name)
            wait_operation(clients, project, vm.zone, op)
    except gexc.NotFound:
        pass
    return StopResult(vm.name, vm.zone, before, None, deleted=True)


# ------------------------------------------------------------------------------------------- follow


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
    api_errors = _api_errors()
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
        except api_errors:  # a stopped or deleted VM may not serve its serial port
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
        except (*api_errors, CloudError) as e:  # a blip in a follow that lasts hours: poll again
            failures += 1
            if failures >= FOLLOW_MAX_FAILURES:  # the VM bills on: say so, and how to end it
                seen = f"last seen {current.status}" if current is not None else "state unknown"
                raise CloudError(
                    f"Stopped following run {run_id} after {failures} failed polls ({_short(e)}); VM {vm.name} "
                    f"({vm.zone}, {seen}) keeps running and billing: re-attach with `newsclf cloud logs {run_id} "
                    "--follow` or stop it with `newsclf cloud stop`"
                ) from e
            log.debug("Polling run %s failed (%s); retrying", run_id, _short(e))
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
