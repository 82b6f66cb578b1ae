"""Wall time of ``membudget fit`` over the whole catalogue, against issue 16's 2 s target.

    python benchmarks/fit_speed.py [--runs N]

Each row is one machine and one ``--jobs``: the catalogue swept with
``python -m membudget fit ... -q`` as its own process (start-up included), the median of
``--runs`` runs beside the target and their ratio, and the answer. Side by side in one run: the
machine it runs on as ``fit`` detects it, a CPU-only machine, one GPU, two GPUs; each in one
process (``--jobs 1``) and in a worker per CPU this benchmark may use (the default).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 2.0
MACHINES: list[tuple[str, list[str]]] = [
    ("this machine, as detected", []),
    ("32 GiB RAM", ["--memory", "32GiB"]),
    ("64 GiB RAM + 24 GiB GPU", ["--memory", "64GiB", "--gpu", "24GiB"]),
    ("128 GiB RAM + 2 x 80 GiB GPUs", ["--memory", "128GiB", "--gpu", "80GiB", "--gpu", "80GiB"]),
]


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MEMBUDGET_PROGRESS": "0"}
    print(f"{'machine':32} {'jobs':>4} {'median s':>9} {'target s':>9} {'ratio':>7}  answer")
    for name, flags in MACHINES:
        for jobs in sorted({1, _cpus()}):
            times = []
            answer = ""
            for _ in range(args.runs):
                start = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "membudget", "fit", *flags, "--jobs", str(jobs), "-q"],
                    capture_output=True,
                    text=True,
                    env=env,
                    check=False,
                )
                times.append(time.perf_counter() - start)
                answer = done.stdout.strip() or done.stderr.strip()
            median = statistics.median(times)
            print(
                f"{name:32} {jobs:4} {median:9.2f} {TARGET_S:9.2f} {median / TARGET_S:7.1f}  "
                f"{answer}"
            )


if __name__ == "__main__":
    main()
