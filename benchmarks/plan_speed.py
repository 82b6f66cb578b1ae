"""Wall time of ``membudget plan`` (start-up included), now and at an earlier commit, side by side.

    python benchmarks/plan_speed.py [--baseline REF] [--runs N]

Each row is one command of a fixed set: catalogue models from 0.6B to 405B parameters on one
pool of RAM, one to eight GPUs, RPC workers, and ``--help``. Every command runs as its own
process (``python -m membudget ...``, the interpreter that runs this script), alternately from
this checkout's ``src`` and from ``REF``'s (default ``a28efc8``, the commit before the placement
search), checked out in a temporary git worktree. The table gives each side's median over
``--runs`` runs and their ratio. Targets (issue 12): every plan under 1 s, ``--help`` under
0.25 s, on the 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "a28efc8"
_GPU24 = ["--gpu", "24GiB"]
_GPU80 = ["--gpu", "80GiB"]
COMMANDS: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("qwen3-0.6b, RAM", ["plan", "qwen3-0.6b", "--memory", "8GiB"]),
    ("qwen3-8b Q4_K_M, 8 GiB GPU", ["plan", "qwen3-8b", "--quant", "Q4_K_M", "--gpu", "8GiB", "--memory", "32GiB"]),
    ("gemma-3-12b Q4_K_M, 2 GPUs", ["plan", "gemma-3-12b", "--quant", "Q4_K_M", *_GPU24, "--gpu", "8GiB", "--memory", "32GiB"]),
    ("llama-3.1-70b Q4_K_M, 2 GPUs", ["plan", "llama-3.1-70b", "--quant", "Q4_K_M", *_GPU24, *_GPU24, "--memory", "64GiB"]),
    ("qwen3-30b-a3b Q4_K_M, 12 GiB GPU", ["plan", "qwen3-30b-a3b", "--quant", "Q4_K_M", "--gpu", "12GiB", "--memory", "32GiB"]),
    ("qwen3-235b-a22b Q4_K_M, 1 GPU", ["plan", "qwen3-235b-a22b", "--quant", "Q4_K_M", *_GPU24, "--memory", "128GiB"]),
    ("deepseek-v3 Q2_K, 2 GPUs", ["plan", "deepseek-v3", "--quant", "Q2_K", *_GPU80, *_GPU80, "--memory", "256GiB"]),
    ("llama-3.1-405b Q4_K_M, 3 GPUs", ["plan", "llama-3.1-405b", "--quant", "Q4_K_M", *_GPU80, *_GPU80, *_GPU80, "--memory", "128GiB"]),
    ("llama-3.1-405b Q4_K_M, 8 GPUs", ["plan", "llama-3.1-405b", "--quant", "Q4_K_M", *(_GPU80 * 8), "--memory", "128GiB"]),
    ("llama-3.1-70b Q4_K_M, GPU + 2 RPC", ["plan", "llama-3.1-70b", "--quant", "Q4_K_M", *_GPU24, "--rpc-node", "24GiB", "--rpc-node", "16GiB", "--memory", "32GiB"]),
]  # fmt: skip


def _run(src: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "MEMBUDGET_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "membudget", *args, "-q"]
        if args != ["--help"]
        else [sys.executable, "-m", "membudget", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed from {src}: {done.stderr.decode()[-300:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default=BASELINE, help="the git commit to compare with")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.baseline],
            check=True,
        )
        try:
            rows = []
            for label, cmd in COMMANDS:
                before, now = [], []
                for _ in range(args.runs):  # alternate, so drift in the machine hits both
                    before.append(_run(tree / "src", cmd))
                    now.append(_run(ROOT / "src", cmd))
                rows.append((label, statistics.median(before), statistics.median(now)))
                print(f"  {label}: done", file=sys.stderr, flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False
            )
    width = max(len(r[0]) for r in rows)
    print(f"median wall time of {args.runs} runs, start-up included (s); baseline {args.baseline}")
    print(f"{'command':<{width}}  {'baseline':>8}  {'now':>6}  {'ratio':>6}")
    for label, b, n in rows:
        print(f"{label:<{width}}  {b:>8.2f}  {n:>6.2f}  {b / n:>5.1f}x")
    worst = max(n for label, _, n in rows if label != "--help")
    help_now = next(n for label, _, n in rows if label == "--help")
    print(
        f"slowest plan now: {worst:.2f} s (target < 1 s); --help: {help_now:.2f} s (target < 0.25 s)"
    )


if __name__ == "__main__":
    main()
