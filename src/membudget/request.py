"""One plan request, whatever asks for it: the command line, the plot or the web page.

A :class:`PlanRequest` holds what a user chooses (engine, context, cache types, parallel
sequences, budget); :func:`run_plan` turns it and a loaded :class:`~membudget.model.ModelSpec`
into a report object. The interfaces only parse their own input into a request and render the
report, so ``membudget plan --json`` and ``POST /api/plan`` give the same document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from membudget.budget import MemoryBudget
from membudget.engines.llamacpp import FlashAttn, LlamaCppSettings
from membudget.engines.vllm import KvCacheDtype, VllmSettings, estimate_vllm
from membudget.errors import InvalidArgumentError
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.plan import Budget, budget_for, make_plan
from membudget.presets import apply_preset
from membudget.readers.catalog import hf_repo
from membudget.report import EstimateReport, Geometry
from membudget.report_plan import PlanReport, VllmPlanReport
from membudget.units import MIB

__all__ = [
    "ENGINES",
    "Engine",
    "PlanRequest",
    "PlanResult",
    "engine_name",
    "llamacpp_settings",
    "request_budget",
    "run_plan",
]

Engine = Literal["llama.cpp", "vllm", "reference"]
ENGINES: tuple[Engine, ...] = ("llama.cpp", "vllm", "reference")
_ENGINE_ALIASES: dict[str, Engine] = {
    "llama.cpp": "llama.cpp",
    "llamacpp": "llama.cpp",
    "llama-cpp": "llama.cpp",
    "vllm": "vllm",
    "reference": "reference",
    "ref": "reference",
}
_KV_DTYPES: tuple[KvCacheDtype, ...] = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")

PlanResult = PlanReport | VllmPlanReport | EstimateReport


def engine_name(text: str) -> Engine:
    """The canonical engine name for what a user typed (``llamacpp`` is ``llama.cpp``)."""
    try:
        return _ENGINE_ALIASES[text.strip().lower()]
    except KeyError:
        raise InvalidArgumentError(
            "--engine", text, "must be llama.cpp, vllm or reference"
        ) from None


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """Everything a user may choose for one plan. Defaults are llama-server's and vLLM's."""

    engine: Engine = "llama.cpp"
    ctx: int = 4096
    batch: int = 2048
    ubatch: int = 512
    parallel: int = 1
    kv_unified: bool = False
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    swa_full: bool = False
    quant: str | None = None
    """Requantise the weights to this llama.cpp preset first."""
    memory_bytes: int | None = None
    """RAM budget; ``None`` takes this machine's available RAM (less the margin)."""
    margin_bytes: int | None = None
    gpu_bytes: tuple[int, ...] | None = None
    """GPU budgets; ``None`` takes the detected GPUs when the RAM budget is detected too."""
    rpc_bytes: tuple[int, ...] = ()
    n_gpu_layers: int = -1
    """-1: solved from the GPU budgets."""
    tensor_split: tuple[float, ...] = ()
    n_cpu_moe: int = 0
    tensor_parallel: int = 1
    pipeline_parallel: int = 1
    nodes: int = 1
    max_model_len: int = 0
    gpu_memory_utilization: float = 0.9
    kv_cache_dtype: str = "auto"
    source: str = field(default="", compare=False)
    """The name the user gave (vLLM's command names the model by it)."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise InvalidArgumentError(
                "--engine", self.engine, "must be llama.cpp, vllm or reference"
            )
        if self.flash_attn not in ("on", "off", "auto"):
            raise InvalidArgumentError("--flash-attn", self.flash_attn, "must be on, off or auto")
        if self.kv_cache_dtype not in _KV_DTYPES:
            raise InvalidArgumentError(
                "--kv-cache-dtype", self.kv_cache_dtype, "must be auto, fp8, fp8_e4m3 or fp8_e5m2"
            )
        if self.nodes < 1:
            raise InvalidArgumentError("--nodes", self.nodes, "must be at least 1")
        split = self.tensor_split
        if any(not x >= 0 for x in split) or (split and not sum(split) > 0):
            raise InvalidArgumentError(
                "--tensor-split", split, "needs non-negative shares, not all zero"
            )


def llamacpp_settings(request: PlanRequest, spec: ModelSpec) -> LlamaCppSettings:
    """llama.cpp's settings for ``request`` (GPU layers are left to the solver unless pinned)."""
    fa: FlashAttn = (
        "on" if request.flash_attn == "on" else "off" if request.flash_attn == "off" else "auto"
    )
    settings = LlamaCppSettings(
        n_ctx=request.ctx,
        n_batch=request.batch,
        n_ubatch=request.ubatch,
        n_parallel=request.parallel,
        kv_unified=request.kv_unified,
        cache_type_k=request.cache_type_k.lower(),
        cache_type_v=request.cache_type_v.lower(),
        flash_attn=fa,
        swa_full=request.swa_full,
    )
    if request.n_gpu_layers >= 0 or request.tensor_split or request.n_cpu_moe:
        n_gpus = max(len(request.tensor_split), len(request.gpu_bytes or ()), 1)
        settings = replace(
            settings,
            n_gpu_layers=request.n_gpu_layers if request.n_gpu_layers >= 0 else spec.n_layer + 1,
            gpus=tuple(f"CUDA{i}" for i in range(n_gpus)),
            tensor_split=request.tensor_split,
            n_cpu_moe=request.n_cpu_moe,
        )
    return settings


def request_budget(request: PlanRequest, probe: Callable[[], Hardware]) -> Budget:
    """The budget ``request`` asks for; ``probe`` is called only when something is detected."""
    return budget_for(
        request.memory_bytes,
        None if request.memory_bytes is not None else probe(),
        request.margin_bytes,
        request.gpu_bytes,
        request.rpc_bytes,
    )


def _reference(request: PlanRequest, spec: ModelSpec) -> EstimateReport:
    if request.memory_bytes is None:
        raise InvalidArgumentError("--memory", None, "is required by the reference engine")
    layer = spec.layers[0] if spec.layers else None
    budget = MemoryBudget.estimate(request.memory_bytes // MIB, spec.n_params, spec.bits_per_weight)
    geometry = Geometry(
        spec.n_layer, layer.n_head if layer else 0, layer.head_dim_k if layer else 0
    )
    return EstimateReport(
        request.memory_bytes, spec.n_params, spec.bits_per_weight, budget, geometry, request.ctx
    )


def _vllm(request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]) -> VllmPlanReport:
    if request.gpu_bytes:
        sizes = list(request.gpu_bytes)
    else:
        sizes = [g.total_bytes for g in probe().gpus if not g.unified]
        if not sizes:
            raise InvalidArgumentError(
                "--gpu", None, "is needed: no NVIDIA GPU was detected for vLLM"
            )
    pp = request.nodes if request.nodes > 1 else request.pipeline_parallel
    tp = request.tensor_parallel
    if tp * pp > len(sizes) and len(sizes) > 1:
        raise InvalidArgumentError(
            "--tensor-parallel-size", tp, f"times -pp needs {tp * pp} GPUs, {len(sizes)} given"
        )
    dtype = next(d for d in _KV_DTYPES if d == request.kv_cache_dtype)
    settings = VllmSettings(
        gpu_memory_bytes=min(sizes),
        max_model_len=request.max_model_len,
        gpu_memory_utilization=request.gpu_memory_utilization,
        kv_cache_dtype=dtype,
        tensor_parallel_size=tp,
        pipeline_parallel_size=pp,
    )
    source = request.source or spec.name
    model = (hf_repo(source) or source) if spec.source_kind == "catalogue" else source
    return VllmPlanReport(estimate_vllm(spec, settings), model)


def run_plan(request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]) -> PlanResult:
    """Plan ``spec`` as ``request`` asks. ``probe`` reads this machine (only when needed)."""
    if request.quant is not None:
        spec = apply_preset(spec, request.quant)
    if request.engine == "reference":
        return _reference(request, spec)
    if request.engine == "vllm":
        return _vllm(request, spec, probe)
    settings = llamacpp_settings(request, spec)
    budget = request_budget(request, probe)
    model_path = spec.source if spec.source_kind == "gguf" else None
    return PlanReport(make_plan(spec, settings, budget, model_path=model_path))
