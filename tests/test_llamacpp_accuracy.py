"""membudget against the real llama.cpp (llama-cpp-python built from source), across
architectures (each with a realistic and a 512-token vocabulary) and settings. Weights, KV cache, recurrent state and output must equal what
llama.cpp prints, the compute buffer included (the graph simulation); the phase model that
serves other architectures is held to the tolerance below.

These tests skip when llama-cpp-python is missing, unless MEMBUDGET_REQUIRE_LLAMACPP=1 (CI sets
it), in which case they fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from membudget.engines.llamacpp.run import llamacpp_available
from tests.accuracy import GRID, REAL, REAL_GRID, Case, label, run_case
from tests.arch_models import ARCHS, SMALL_VOCAB

# Issue 4 asks for the compute buffer within 5% and the total within 3%. The graph simulation
# (membudget.engines.llamacpp.graph) equals llama.cpp's printed figure for every architecture in
# the grid, so compute is held to the same 0.01 MiB as the other buffers, and the total to 0.5%
# (what is left is llama.cpp's rounding of each buffer to 0.01 MiB).
TOTAL_TOLERANCE = 0.005
# The phase model (the fallback for architectures without a graph builder), held to the bound it
# was measured at (worst 14.6% under, flash attention on and the logits dominating) on the nine
# architectures that bound was set on; it must only tighten. On the architectures added since
# it misses by up to 18.8% (Jamba), which benchmarks/accuracy.py reports; those are simulated.
PHASE_MODEL_TOLERANCE = 0.15
PHASE_MODEL_ARCHS = frozenset(
    {
        "llama",
        "qwen3",
        "qwen3moe",
        "gemma2",
        "gemma3",
        "deepseek2",
        "mamba2",
        "granitehybrid",
        "phi3",
    }
)

pytestmark = pytest.mark.llamacpp

if not llamacpp_available():
    if os.environ.get("MEMBUDGET_REQUIRE_LLAMACPP") == "1":
        raise RuntimeError(
            "llama-cpp-python is required (MEMBUDGET_REQUIRE_LLAMACPP=1) but missing"
        )
    pytest.skip("llama-cpp-python is not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("zoo")


@pytest.mark.parametrize("settings", GRID, ids=label)
@pytest.mark.parametrize("arch", [*ARCHS, *SMALL_VOCAB])
def test_against_llama_cpp(arch: str, settings: object, zoo: Path) -> None:
    case: Case = run_case(arch, settings, zoo)  # type: ignore[arg-type]
    assert case.compute_method == "simulated", f"{arch}: no graph builder"
    for row in case.rows:
        assert row.exact, (
            f"{row.kind}: estimated {row.estimated_mib} MiB, llama.cpp {row.actual_mib} MiB"
        )
    assert abs(case.total_relative_error) <= TOTAL_TOLERANCE
    # the fallback is held to its bound where vocabularies are realistic (its use); with 512
    # tokens it misses the layers' working set by up to 50% (benchmarks/accuracy.py)
    for row in case.phase_model_compute if arch in PHASE_MODEL_ARCHS else ():
        assert abs(row.relative_error) <= PHASE_MODEL_TOLERANCE, (
            f"phase model: compute off by {row.relative_error:+.1%}"
        )
    assert {r.kind for r in case.rows} >= {"model", "output", "compute"}


@pytest.mark.parametrize("settings", REAL_GRID, ids=label)
def test_real_gemma3_270m(settings: object, gemma_gguf: Path) -> None:
    """The real Gemma 3 270M Q4_K_M (262,144-token vocabulary, repacked Q4_K weights, SWA and
    full caches): every buffer, a compute buffer of up to 1 GiB included, equals llama.cpp's."""
    case: Case = run_case(REAL, settings, gemma_gguf.parent, path=gemma_gguf)  # type: ignore[arg-type]
    for row in case.rows:
        assert row.exact, (
            f"{row.kind}: estimated {row.estimated_mib} MiB, llama.cpp {row.actual_mib} MiB"
        )
