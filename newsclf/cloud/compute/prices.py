"""A small Compute Engine price table: ESTIMATES for `cloud status` and the run status line, not a bill."""

from __future__ import annotations

# On-demand USD per hour, europe-west1/us-central1 list prices rounded (2025). Prices change and differ
# by region; the Cloud Billing console is the source of truth. Machine types with built-in GPUs (g2, a2)
# include them.
MACHINE_USD_PER_HOUR = {
    "e2-standard-4": 0.134,
    "e2-standard-8": 0.268,
    "e2-standard-16": 0.536,
    "n1-standard-4": 0.190,
    "n1-standard-8": 0.380,
    "n1-standard-16": 0.760,
    "n1-highmem-4": 0.237,
    "n1-highmem-8": 0.473,
    "n2-standard-4": 0.194,
    "n2-standard-8": 0.388,
    "n2-standard-16": 0.777,
    "g2-standard-4": 0.707,
    "g2-standard-8": 0.854,
    "g2-standard-12": 1.000,
    "g2-standard-16": 1.147,
    "a2-highgpu-1g": 3.673,
    "a2-highgpu-2g": 7.347,
}
GPU_USD_PER_HOUR = {
    "nvidia-tesla-t4": 0.35,
    "nvidia-tesla-p4": 0.60,
    "nvidia-tesla-v100": 2.48,
    "nvidia-tesla-p100": 1.46,
    "nvidia-l4": 0.56,
}
# Persistent disk, USD per GB-month of provisioned size, billed while the disk exists: a stopped VM's
# boot disk keeps billing until the VM is deleted. US list prices from "Disk and image pricing"
# (https://cloud.google.com/compute/disks-image-pricing: a 200 GB pd-standard volume is $8.00 a month);
# europe-west1 is within a few percent.
DISK_USD_PER_GB_MONTH = {
    "pd-standard": 0.04,
    "pd-balanced": 0.10,  # what `cloud run` creates
    "pd-ssd": 0.17,
}
HOURS_PER_MONTH = 730  # Google's pricing pages convert monthly prices with 730 hours
DISK_USD_PER_GB_HOUR = DISK_USD_PER_GB_MONTH["pd-balanced"] / HOURS_PER_MONTH
SPOT_FACTOR = 0.35  # spot VMs and GPUs cost roughly 60-91% less; a middle-of-the-road guess


def hourly_estimate(
    machine_type: str, gpu_type: str | None = None, gpu_count: int = 0, *, spot: bool = False, disk_gb: int = 0
) -> float | None:
    """Estimated USD per hour while running, or None for a machine type or GPU not in the table."""
    machine = MACHINE_USD_PER_HOUR.get(machine_type)
    if machine is None:
        return None
    gpu = 0.0
    if gpu_type and gpu_count:
        per_gpu = GPU_USD_PER_HOUR.get(gpu_type)
        if per_gpu is None:
            return None
        gpu = per_gpu * gpu_count
    compute = (machine + gpu) * (SPOT_FACTOR if spot else 1.0)
    return round(compute + disk_gb * DISK_USD_PER_GB_HOUR, 4)


def disk_hourly(disk_gb: int, disk_type: str = "pd-balanced") -> float | None:
    """Estimated USD per hour for a persistent disk of `disk_gb`, running or not; None for an unknown type."""
    per_month = DISK_USD_PER_GB_MONTH.get(disk_type)
    return None if per_month is None else round(disk_gb * per_month / HOURS_PER_MONTH, 4)
