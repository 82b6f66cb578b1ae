"""A longer fuzzing run over the readers: random mutations of valid GGUF, safetensors and
config.json files, for a fixed time per target. Reports executions, the rate, the slowest input
and the findings: exceptions outside membudget's documented tree, and inputs that took over a
second. Each finding's input is saved for replay.

    python benchmarks/fuzz.py --seconds 60 --out build/fuzz
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fuzz import ALLOWED, TARGETS, seeds

SLOW_S = 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="time per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("build/fuzz"), help="findings go here")
    parser.add_argument("--target", choices=sorted(TARGETS), action="append")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    findings = 0
    print(
        f"{'target':<12} {'executions':>10} {'per s':>8} {'refused':>8} {'read':>6} "
        f"{'slowest ms':>10} {'findings':>8}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        corpus = seeds(work)
        for name in args.target or sorted(TARGETS):
            run, mutate = TARGETS[name]
            execs = refused = ok = found = 0
            slowest = 0.0
            stop = time.monotonic() + args.seconds
            while time.monotonic() < stop:
                data = mutate(rng.choice(corpus[name]), rng)
                t0 = time.perf_counter()
                problem = None
                try:
                    run(data, work)
                    ok += 1
                except ALLOWED:
                    refused += 1
                except Exception:  # noqa: BLE001 - a finding, recorded with its input
                    problem = traceback.format_exc()
                elapsed = time.perf_counter() - t0
                slowest = max(slowest, elapsed)
                if elapsed > SLOW_S:
                    problem = (problem or "") + f"slow input: {elapsed:.2f} s\n"
                execs += 1
                if problem is not None:
                    found += 1
                    args.out.mkdir(parents=True, exist_ok=True)
                    stem = args.out / f"{name}-{found:04d}"
                    stem.with_suffix(".bin").write_bytes(data)
                    stem.with_suffix(".txt").write_text(problem)
            findings += found
            rate = execs / args.seconds
            print(
                f"{name:<12} {execs:>10,} {rate:>8,.0f} {refused:>8,} {ok:>6,} "
                f"{slowest * 1000:>10.1f} {found:>8}"
            )
    print(f"findings: {findings}" + (f" (inputs in {args.out})" if findings else ""))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
