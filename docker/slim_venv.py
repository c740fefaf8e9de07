"""Remove from the image's venv what `newsclf job` never loads, so every VM pulls less.

The Dockerfile's builder runs it on /opt/venv (`python docker/slim_venv.py /opt/venv`); check_image.py
then proves training still imports and every CUDA library torch links against still resolves.
What goes, and why it is safe:

- triton (1.0 GB): the compiler behind torch.compile / TorchInductor; training runs eager PyTorch
  (the Trainer's torch_compile stays off), and torch imports triton only when compiling.
- torch/include (40 MB): C++ headers for building extensions and for Inductor's C++ code; nothing
  is compiled at training time.
- `tests/` packages of dependencies (63 MB: sympy, scipy, scikit-learn, networkx, numpy, ...):
  their own test suites, never imported by the libraries themselves.
- static archives (`*.a`, 7 MB): only a linker reads them; the runtime loads shared objects.
- libcusolverMg (120 MB): cuSOLVER's multi-GPU variant; torch links only the single-GPU
  libcusolver (libtorch_cuda_linalg.so needs libcusolver.so, nothing needs libcusolverMg).

Every other CUDA library stays: torch's shared objects need them (libtorch_cuda.so alone needs
cudart, cublas, cublasLt, cudnn, cufft, cufile, cusparse, cusparseLt, nccl, nvrtc, nvshmem, cupti),
or they load them on demand (cuDNN's engine libraries, nvrtc-builtins, nvJitLink).
Run it with any Python: it only deletes files.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# (glob under site-packages, what it is); each one is justified in the docstring above
REMOVE = (
    ("triton", "torch.compile's compiler"),
    ("triton-*.dist-info", "its metadata: the package is gone, not broken"),
    ("torch/include", "C++ headers"),
    ("**/tests", "test suites of dependencies"),
    ("**/*.a", "static archives"),
    ("nvidia/*/lib/libcusolverMg.so*", "multi-GPU cuSOLVER"),
)
# never removed, whatever the globs match: the project, and packages whose `tests` are code they run
KEEP = ("newsclf", "torch/lib", "torch/testing")


def site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if len(found) != 1:
        raise SystemExit(f"slim_venv: expected one lib/python3*/site-packages in {venv}, found {len(found)}")
    return found[0]


def size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def slim(venv: Path) -> dict[str, int]:
    """Delete what REMOVE names under venv's site-packages; returns the bytes freed per glob."""
    site = site_packages(venv)
    freed: dict[str, int] = {}
    for pattern, _why in REMOVE:
        freed[pattern] = 0
        for path in sorted(site.glob(pattern)):
            rel = path.relative_to(site).as_posix()
            if any(rel == k or rel.startswith(k + "/") for k in KEEP) or not path.exists():
                continue
            freed[pattern] += size(path)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    return freed


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: slim_venv.py VENV", file=sys.stderr)
        return 2
    freed = slim(Path(args[0]))
    for pattern, n in freed.items():
        print(f"slim_venv: {pattern}: {n / 1e6:.0f} MB removed")
    print(f"slim_venv: {sum(freed.values()) / 1e6:.0f} MB removed in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
