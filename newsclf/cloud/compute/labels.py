"""How newsclf finds its VMs, and what it tells the startup script: labels, metadata keys, serial prefixes."""

from __future__ import annotations

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

# Serial-port line prefixes written by startup.sh
JOB_PREFIX = "newsclf-job"
VM_PREFIX = "newsclf-vm"
