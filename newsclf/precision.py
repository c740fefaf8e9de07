"""The number format a model trains or predicts in (--precision), resolved for this machine."""

from __future__ import annotations

from newsclf.errors import InputError

PRECISIONS = ("auto", "bf16", "fp16", "tf32", "fp32")


def resolve_precision(precision: str, cuda: bool) -> str:
    """What `precision` means on this machine: "bf16", "fp16", "tf32" (CUDA only) or "fp32".

    auto, measured in bench/README.md: on CUDA GPUs with TF32 (Ampere and newer) tf32, i.e. fp32
    weights and activations with TF32 tensor-core matmuls: on an H200, bf16 autocast trained
    MiniLM and a BERT-base-sized model 0.78-0.97x as fast at batch 16-64 (the steps are bound by
    kernel launches, and autocast adds cast kernels); fp16 autocast on older GPUs, where fp32 has
    no tensor cores. On CPUs bf16 only where AMX makes it fast (~1.8x per training step, same F1),
    else fp32.
    """
    import torch

    if precision == "auto":
        if cuda:
            return "tf32" if torch.cuda.get_device_capability()[0] >= 8 else "fp16"
        return "bf16" if cpu_bf16_fast() else "fp32"
    if not cuda and precision in ("fp16", "tf32"):
        raise InputError(f"--precision {precision} needs a CUDA GPU: use bf16 or fp32 on the CPU")
    if cuda and precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise InputError("This GPU has no bf16: use --precision fp16, tf32 or fp32")
    return precision


def cpu_bf16_fast() -> bool:
    """True on CPUs with AMX tiles (Xeon Sapphire Rapids and newer), where bf16 matmuls run ~7x fp32."""
    import torch

    try:
        return bool(torch.cpu._is_amx_tile_supported()) and torch.backends.mkldnn.is_available()
    except AttributeError:  # a torch without the probe
        return False
