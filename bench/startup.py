"""`newsclf --help` wall time vs `python -c "import torch"` (run by hand: uv run python bench/startup.py)."""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def wall(cmd: list[str], repeats: int) -> float:
    """Median wall time of `cmd` over `repeats` runs (after one warm-up run for the page cache)."""
    subprocess.run(cmd, capture_output=True, check=True)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    help_s = wall([sys.executable, "-m", "newsclf", "--help"], args.repeats)
    train_help_s = wall([sys.executable, "-m", "newsclf", "train", "--help"], args.repeats)
    torch_s = wall([sys.executable, "-c", "import torch"], args.repeats)
    print(f"newsclf --help         {help_s * 1000:7.0f} ms (median of {args.repeats})")
    print(f"newsclf train --help   {train_help_s * 1000:7.0f} ms")
    print(f'python -c "import torch" {torch_s * 1000:5.0f} ms')
    print(f"ratio newsclf --help / import torch: {help_s / torch_s:.2f}")


if __name__ == "__main__":
    main()
