"""Values of secret-looking options never reach a log: the lock holder's command line (newsclf.locks)
and the train arguments the VM's startup script writes to the serial port (cloud/startup.sh)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from newsclf import locks

SCRIPT = (Path(__file__).resolve().parents[1] / "newsclf" / "cloud" / "startup.sh").read_text()

CASES = [
    (["--wandb-api-key", "s3cr3t", "--epochs", "2"], ["--wandb-api-key", "****", "--epochs", "2"]),
    (["--hf-token=hf_abc", "--lr", "1e-4"], ["--hf-token=****", "--lr", "1e-4"]),
    (
        ["--DB_PASSWORD", "pw", "--secret", "x", "--keep-checkpoints"],
        ["--DB_PASSWORD", "****", "--secret", "****", "--keep-checkpoints"],
    ),
    (["--apikey", "k", "--key=", "--passwd", "p"], ["--apikey", "****", "--key=****", "--passwd", "****"]),
    (
        ["--tokenizer", "bert", "--monkey", "m", "--max-length", "64"],
        ["--tokenizer", "bert", "--monkey", "m", "--max-length", "64"],
    ),
]


@pytest.mark.parametrize(("argv", "shown"), CASES)
def test_mask_argv(argv, shown):
    assert locks.mask_argv(argv) == shown


def test_startup_script_masks_the_train_arguments_it_echoes():
    function = re.search(r"^shown_args\(\) \{.*?^\}$", SCRIPT, re.S | re.M)
    assert function, "shown_args() not found in startup.sh"
    assert 'say "running: newsclf job --bucket $BUCKET --run-id $RUN_ID $(shown_args "${TRAIN_ARGS[@]}")"' in SCRIPT
    for argv, shown in CASES:
        out = subprocess.run(["bash", "-c", f'set -euo pipefail\n{function.group(0)}\nshown_args "$@"', "bash", *argv],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert out == " ".join(shown), argv
    empty = subprocess.run(["bash", "-c", f"set -euo pipefail\n{function.group(0)}\nshown_args", "bash"],
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert empty.stdout == ""
