"""Time `newsclf data prepare` on a full-size (45k rows, ~110 MB) synthetic ISOT pair.

The pair is built in a temp dir from the real sample rows (/work/shared/data/isot-sample): rows are
repeated up to the full ISOT counts (Fake 23,481, True 21,417), each copy's title tagged with its copy
number so that deduplication keeps it (the tag is in the title, so leak stripping at either end of the
body still runs on every row). The baseline, measured in the same run, is the time to parse both CSVs
with Python's csv module and nothing else: the floor for any csv-module pipeline.

    uv run python bench/prepare_speed.py [--sample DIR] [--repeat N]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "isot-sample"
FULL_ROWS = {"Fake.csv": 23_481, "True.csv": 21_417}


def build(sample: Path, out: Path) -> int:
    """Write the full-size pair into out; return its total size in bytes."""
    total = 0
    for name, n in FULL_ROWS.items():
        with open(sample / name, encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            rows = list(reader)
        with open(out / name, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            for i in range(n):
                title, text, subject, date = rows[i % len(rows)]
                w.writerow([f"{title} #{i // len(rows)}", text, subject, date])
        total += (out / name).stat().st_size
    return total


def baseline(data: Path) -> float:
    """Seconds to parse both CSVs with the csv module (rows kept in memory, like prepare)."""
    csv.field_size_limit(1 << 30)
    t = time.perf_counter()
    for name in FULL_ROWS:
        with open(data / name, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
        assert len(rows) == FULL_ROWS[name] + 1
    return time.perf_counter() - t


def prepare(data: Path, out: Path) -> float:
    """Seconds for `python -m newsclf data prepare` (a fresh interpreter: start-up included)."""
    cmd = [sys.executable, "-m", "newsclf", "-q", "data", "prepare", "--fake", str(data / "Fake.csv"),
           "--true", str(data / "True.csv"), "--out", str(out), "--force"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sample", type=Path, default=SAMPLE, help="dir with the sample Fake.csv and True.csv")
    p.add_argument("--repeat", type=int, default=3, help="timed runs of each; the best is reported")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="newsclf-bench-") as tmp:
        tmp = Path(tmp)
        size = build(args.sample, tmp)
        base = min(baseline(tmp) for _ in range(args.repeat))
        runs = [prepare(tmp, tmp / "processed") for _ in range(args.repeat)]
        best = min(runs)
        manifest = json.loads((tmp / "processed" / "manifest.json").read_text())
    print(f"machine:  {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"input:    {sum(FULL_ROWS.values()):,} rows, {size / 1e6:.1f} MB (synthetic, from the ISOT sample)")
    print(f"baseline: {base:.2f} s  (csv.reader parse of both files, best of {args.repeat})")
    print(f"prepare:  {best:.2f} s  (`newsclf data prepare`, process start-up included, best of {args.repeat}; "
          f"all: {', '.join(f'{r:.2f}' for r in runs)})")  # fmt: skip
    print(f"ratio:    {best / base:.1f}x the csv-parse baseline")
    print(f"written:  {manifest['rows_written']:,} rows; dropped: {manifest['dropped']}")


if __name__ == "__main__":
    main()
