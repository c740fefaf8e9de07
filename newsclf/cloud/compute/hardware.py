"""Machine types and GPUs: what Compute Engine creates, what the image's torch can use, and which zones offer it."""

from __future__ import annotations

import re

from newsclf.cloud.compute.clients import Clients
from newsclf.cloud.compute.errors import translated
from newsclf.errors import InputError


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
    with translated("list machine types", project):
        zones = {
            last_segment(scope)
            for scope, scoped in clients.machine_types.aggregated_list(request={"project": project, "filter": flt})
            for m in scoped.machine_types
            if m.name == machine_type and m.deprecated.state not in ("OBSOLETE", "DELETED")
        }
    if gpu and zones:
        kind, count = gpu
        with translated("list GPU types", project):
            zones &= {
                last_segment(scope)
                for scope, scoped in clients.accelerator_types.aggregated_list(
                    request={"project": project, "filter": f'name = "{kind}"'}
                )
                for a in scoped.accelerator_types
                if a.name == kind
                and a.maximum_cards_per_instance >= count
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


def last_segment(url: str) -> str:
    """`zones/europe-west1-b` -> `europe-west1-b`: what compute.v1 names by URL, by name."""
    return url.rsplit("/", 1)[-1] if url else ""
