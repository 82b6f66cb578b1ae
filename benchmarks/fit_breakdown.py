"""Where ``membudget fit``'s time goes, machine by machine: exact solves and their cost.

    python benchmarks/fit_breakdown.py

Each machine of ``fit_speed.py`` is swept in its own process, in one worker (``--jobs 1``),
with counters around the planner's parts: the largest-context search and the most-parallel
search of each row, and the others (the presets tried at ``--min-ctx``, the rest of each
plan). An *exact solve* is the placer choosing a placement at a context and sequence count it
has not solved before; a *split* is the scheduler's split of one placement's graph (short or
whole). Side by side in one run: the seconds and exact solves of each part, solves per model,
milliseconds per solve, splits per solve (all, and in the most-parallel search), and what the
most-parallel search alone takes when the CPUs this benchmark may use share it evenly; then
the seconds spent building graphs, splitting them as the scheduler does and replaying
ggml-alloc over them.

Each search needs at least one exact solve at its answer and one a step beyond (unless it
stops at a bound), and each preset that is not the row's needs one: that count times the cost
of a solve is the floor no change of search order goes below.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from fit_speed import MACHINES, _cpus  # noqa: E402


def _measure(flags: list[str]) -> dict[str, Any]:
    """One sweep of the catalogue in this process, with the counters around it."""
    import membudget.fit as fit_module
    import membudget.plan as plan_module
    from membudget.cli import main as cli_main
    from membudget.engines.llamacpp import ggml, graph, layout, reduce, sched
    from membudget.placement import Placer

    seconds: defaultdict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    phase = ["others"]

    def timed(owner: Any, name: str, label: str, sets_phase: bool = False) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            was = phase[0]
            if sets_phase:
                phase[0] = label
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - start
                counts[label] += 1
                phase[0] = was

        setattr(owner, name, wrapper)

    def counted(owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[f"{label}:{phase[0]}"] += 1
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)

    timed(fit_module, "fit_model", "models")
    timed(plan_module, "context_search", "context", sets_phase=True)
    timed(plan_module, "parallel_search", "parallel", sets_phase=True)
    counted(Placer, "_solve", "solves")
    counted(sched, "split_graph", "splits")
    # the simulation's three walks, wherever they are called from (none calls another)
    for owner in (graph, layout):
        timed(owner, "build_graph", "build")
    timed(sched, "split_graph", "split")
    for owner in (ggml, sched, reduce):
        timed(owner, "replay", "replay")
    argv = sys.argv
    sys.argv = ["membudget", "fit", *flags, "--jobs", "1", "-q"]
    try:
        cli_main()
    except SystemExit:
        pass
    finally:
        sys.argv = argv
    return {"seconds": dict(seconds), "counts": dict(counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--machine", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.machine is not None:
        found = _measure(MACHINES[args.machine][1])
        Path(args.out).write_text(json.dumps(found))
        return
    env = {**os.environ, "MEMBUDGET_PROGRESS": "0"}
    cpus = _cpus()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, _) in enumerate(MACHINES):
            out = Path(tmp) / f"{i}.json"
            subprocess.run(
                [sys.executable, __file__, "--machine", str(i), "--out", str(out)],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            rows.append((name, json.loads(out.read_text())))
    print(f"one process per machine, --jobs 1; CPUs here: {cpus}")
    head = (
        f"{'machine':30} {'models':>6} {'sweep s':>8} {'others s/solves':>16} "
        f"{'context s/solves':>17} {'parallel s/solves':>18} {'solves/model':>13} "
        f"{'ms/solve':>9} {'splits/solve':>13} {'in parallel':>12} {'parallel s/CPU':>15}"
    )
    print(head)
    for name, r in rows:
        s, c = r["seconds"], r["counts"]
        models = c.get("models", 0)
        solves = {p: c.get(f"solves:{p}", 0) for p in ("others", "context", "parallel")}
        total = sum(solves.values())
        splits = sum(v for k, v in c.items() if k.startswith("splits:"))
        searched = s.get("context", 0.0) + s.get("parallel", 0.0)
        others_s = s.get("models", 0.0) - searched
        pairs = [
            f"{others_s:.2f}/{solves['others']}",
            f"{s.get('context', 0.0):.2f}/{solves['context']}",
            f"{s.get('parallel', 0.0):.2f}/{solves['parallel']}",
        ]
        print(
            f"{name:30} {models:6} {s.get('models', 0.0):8.2f} "
            f"{pairs[0]:>16} {pairs[1]:>17} {pairs[2]:>18} "
            f"{total / max(models, 1):13.2f} "
            f"{1000 * s.get('models', 0.0) / max(total, 1):9.1f} "
            f"{splits / max(total, 1):13.2f} "
            f"{c.get('splits:parallel', 0) / max(solves['parallel'], 1):12.2f} "
            f"{s.get('parallel', 0.0) / cpus:15.2f}"
        )
    print()
    print("seconds of each sweep in the simulation's walks, and in the rest")
    print(
        f"{'machine':30} {'graphs built':>13} {'scheduler split':>16} {'ggml-alloc':>11} {'rest':>8}"
    )
    for name, r in rows:
        s = r["seconds"]
        walks = [s.get(k, 0.0) for k in ("build", "split", "replay")]
        rest = s.get("models", 0.0) - sum(walks)
        print(f"{name:30} {walks[0]:13.2f} {walks[1]:16.2f} {walks[2]:11.2f} {rest:8.2f}")


if __name__ == "__main__":
    main()
