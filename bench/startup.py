"""Start-up wall time of `newsclf --help` and `newsclf cloud status --help` vs `python -c "import torch"`.

Run by hand:  uv run python bench/startup.py [--repeats 15]
The commands run in turn, round after round (interleaved), so load from other jobs hits each alike;
each figure is the median over the rounds, after one warm-up round for the page cache.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "newsclf --help": [sys.executable, "-m", "newsclf", "--help"],
    "newsclf cloud status --help": [sys.executable, "-m", "newsclf", "cloud", "status", "--help"],
    "newsclf train --help": [sys.executable, "-m", "newsclf", "train", "--help"],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
}
BASELINE = 'python -c "import torch"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    load0 = os.getloadavg()[0]
    for r in range(args.repeats + 1):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, capture_output=True, check=True)
            if r:  # round 0 warms the page cache
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}; load average {load0:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")  # fmt: skip
    for name, s in med.items():
        ratio = "" if name == BASELINE else f"  ratio {s / med[BASELINE]:.3f}"
        print(f"{name:30} {s * 1000:6.0f} ms median of {args.repeats} (min {min(times[name]) * 1000:.0f}){ratio}")


if __name__ == "__main__":
    main()
