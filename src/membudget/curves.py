"""Memory against context length, and side-by-side comparisons: the data behind the plot.

Engine-aware and drawing-free: :func:`memory_curve` evaluates the engine profile at a grid of
contexts and returns each component's bytes per device; :func:`compare` evaluates one context
under several KV-cache types or quantisation presets. ``membudget plot`` and the web page draw
these; the numbers are the same ones ``membudget plan`` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

from membudget._collector import paced_call
from membudget.engines.llamacpp import LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp.devices import CPU
from membudget.engines.vllm import estimate_vllm
from membudget.errors import InvalidArgumentError
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.plan import (
    PRESET_LADDER,
    Budget,
    context_search,
    fits,
    max_context,
    offload,
    placer_for,
)
from membudget.presets import apply_preset
from membudget.progress import advance
from membudget.quant import CACHE_TYPES
from membudget.report_plan import VllmPlanReport
from membudget.request import PlanRequest, llamacpp_settings, request_budget, run_plan

__all__ = [
    "PLOT_SCHEMA",
    "CompareBar",
    "CompareKind",
    "MemoryCurve",
    "compare",
    "context_grid",
    "memory_curve",
]

PLOT_SCHEMA = "membudget/plot/1"
CompareKind = Literal["cache-types", "quants"]

# Components in stacking order, named as the plan's table names them.
REPACK_LABEL = "weights, repacked copy (CPU_REPACK)"
_LLAMACPP_PARTS = (
    ("model", "weights"),
    ("repack", REPACK_LABEL),
    ("kv", "KV cache"),
    ("kv_swa", "KV cache, SWA"),
    ("recurrent", "recurrent state"),
    ("output", "output (logits)"),
    ("compute", "compute buffer"),
)
_COMPARE_CACHE_TYPES = ("f16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl")
_GRID_POINTS = 48
_STEP = 256


@dataclass(frozen=True, slots=True)
class MemoryCurve:
    """Bytes of each component on each device, at each context length."""

    engine: str
    model: str
    contexts: tuple[int, ...]
    devices: tuple[str, ...]
    parts: tuple[tuple[str, str, tuple[int, ...]], ...]
    """(device, component, bytes at each context)."""
    budgets: tuple[tuple[str, int], ...]
    """(device, budget bytes); a single ``CPU`` entry when there are no GPUs."""
    max_context: int
    """The largest context that fits (0 when none does)."""
    n_ctx_train: int = 0
    """The model's trained context (0: unknown); the x axis goes past it when it, not memory,
    is the limit."""

    def totals(self, device: str) -> tuple[int, ...]:
        rows = [values for dev, _, values in self.parts if dev == device]
        return tuple(sum(col) for col in zip(*rows, strict=True)) if rows else ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "model": self.model,
            "contexts": list(self.contexts),
            "devices": [
                {
                    "device": dev,
                    "budget_bytes": dict(self.budgets).get(dev),
                    "parts": [
                        {"component": name, "bytes": list(values)}
                        for d, name, values in self.parts
                        if d == dev
                    ],
                }
                for dev in self.devices
            ],
            "max_context": self.max_context,
            "n_ctx_train": self.n_ctx_train,
        }


@dataclass(frozen=True, slots=True)
class CompareBar:
    """One variant (a cache type or a preset) at the chosen context."""

    label: str
    parts: tuple[tuple[str, int], ...]
    max_context: int
    fits: bool

    @property
    def total_bytes(self) -> int:
        return sum(n for _, n in self.parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "parts": [{"component": c, "bytes": n} for c, n in self.parts],
            "total_bytes": self.total_bytes,
            "max_context": self.max_context,
            "fits": self.fits,
        }


def context_grid(limit: int, points: int = _GRID_POINTS) -> tuple[int, ...]:
    """About ``points`` contexts from 256 to ``limit``, on llama.cpp's 256-token grid."""
    top = max(_STEP, -(-limit // _STEP) * _STEP)
    steps = top // _STEP
    picks = sorted({max(1, round(steps * i / (points - 1))) for i in range(points)})
    return tuple(s * _STEP for s in picks)


def _limit(spec: ModelSpec, request: PlanRequest, best: int) -> int:
    """How far the x axis goes: past the fit point and the ask, and a quarter past the
    trained context when that, not memory, is the limit (so the limit shows as a line)."""
    want = max(request.n_ctx, best + best // 4, 4096)
    train = spec.n_ctx_train
    if not train:
        return want * 2
    if best >= train:
        return train + train // 4
    return min(train, want * 2)


def _settings_and_budget(
    request: PlanRequest, spec: ModelSpec, probe: Callable[[], Hardware]
) -> tuple[LlamaCppSettings, Budget]:
    budget = request_budget(request, probe)
    settings = offload(spec, llamacpp_settings(request), budget, pins=request.pins)
    return settings, budget


@paced_call
def memory_curve(
    spec: ModelSpec, request: PlanRequest, probe: Callable[[], Hardware]
) -> MemoryCurve:
    """Memory by component against context, for ``request``'s engine and settings."""
    if request.quant is not None:
        spec = apply_preset(spec, request.quant)
    if request.engine == "vllm":
        return _vllm_curve(spec, request, probe)
    if request.engine not in ("llama.cpp", "llama-server"):
        raise InvalidArgumentError("--engine", request.engine, "must be llama.cpp or vllm to plot")
    budget = request_budget(request, probe)
    # Each context at the placement the planner chooses for it (layers move to the CPU as the
    # context grows), so the curve and the largest context that fits tell the same story.
    placer = placer_for(spec, llamacpp_settings(request), budget, pins=request.pins)
    request = request.resolved()
    best = context_search(placer, request.n_parallel, request.kv_unified)[0]
    contexts = context_grid(_limit(spec, request, best))
    devices = [CPU, *(dev for dev, _ in budget.gpus)]
    values: dict[tuple[str, str], list[int]] = {
        (dev, label): [] for dev in devices for _, label in _LLAMACPP_PARTS
    }
    for i, ctx in enumerate(contexts):
        e = estimate_llamacpp(spec, placer.solve(ctx, request.n_parallel).settings)
        for dev in devices:
            for kind, label in _LLAMACPP_PARTS:
                values[(dev, label)].append(
                    sum(
                        b.n_bytes - b.reclaimable_bytes
                        for b in e.buffers
                        if _part_kind(b.kind, b.detail) == kind and b.device == dev
                    )
                )
        advance(i + 1, len(contexts), f"{ctx} tokens")
    parts = tuple((dev, label, tuple(v)) for (dev, label), v in values.items() if any(v))
    used = tuple(dev for dev in devices if any(d == dev for d, _, _ in parts))
    budgets = ((CPU, budget.memory_bytes), *budget.gpus)
    return MemoryCurve(
        "llama.cpp", spec.name, contexts, used, parts, budgets, best, spec.n_ctx_train
    )


def _part_kind(kind: str, detail: str) -> str:
    """The curve's component of a buffer: its kind, with the CPU_REPACK copies of the weights
    apart from the mapped weights."""
    return "repack" if kind == "model" and "REPACK" in detail else kind


def _vllm_curve(
    spec: ModelSpec, request: PlanRequest, probe: Callable[[], Hardware]
) -> MemoryCurve:
    base = run_plan(request, spec, probe)
    assert isinstance(base, VllmPlanReport)
    e = base.estimate
    best = base.to_dict()["budget"]["max_context"]
    contexts = context_grid(_limit(spec, request, best))
    kv: list[int] = []
    for i, ctx in enumerate(contexts):
        kv.append(estimate_vllm(spec, replace(e.settings, max_model_len=ctx)).request_bytes)
        advance(i + 1, len(contexts), f"{ctx} tokens")
    n = len(contexts)
    fixed = (
        ("weights", e.weights_bytes),
        ("activations", e.activation_bytes),
        ("non-torch", e.non_torch_bytes),
        ("CUDA graphs", e.cuda_graph_bytes),
    )
    parts = (
        *(("GPU", label, (v,) * n) for label, v in fixed if v),
        ("GPU", "KV cache, one request", tuple(kv)),
    )
    return MemoryCurve(
        "vllm",
        spec.name,
        contexts,
        ("GPU",),
        parts,
        (("GPU", e.requested_bytes),),
        best,
        spec.n_ctx_train,
    )


@paced_call
def compare(
    spec: ModelSpec, request: PlanRequest, probe: Callable[[], Hardware], kind: CompareKind
) -> tuple[CompareBar, ...]:
    """The chosen context under each KV-cache type, or each llama.cpp quantisation preset."""
    if request.engine not in ("llama.cpp", "llama-server"):
        raise InvalidArgumentError("--engine", request.engine, "must be llama.cpp to compare")
    if request.quant is not None and kind == "cache-types":
        spec = apply_preset(spec, request.quant)
    variants: list[tuple[str, ModelSpec, PlanRequest]] = []
    if kind == "cache-types":
        for t in _COMPARE_CACHE_TYPES:
            assert t in CACHE_TYPES
            fa = request.flash_attn if t == "f16" else "on"  # a quantised V needs it
            variants.append(
                (f"K/V {t}", spec, replace(request, cache_type_k=t, cache_type_v=t, flash_attn=fa))
            )
    elif kind == "quants":
        if not spec.tensors:
            raise InvalidArgumentError(
                "--compare", kind, "needs a model with a tensor list to requantise"
            )
        variants.extend((p, apply_preset(spec, p), request) for p in PRESET_LADDER)
    else:
        raise InvalidArgumentError("--compare", kind, "must be cache-types or quants")
    bars = []
    for i, (label, s, r) in enumerate(variants):
        settings, budget = _settings_and_budget(r, s, probe)
        e = estimate_llamacpp(s, settings)
        parts = tuple(
            (name, sum(b.n_bytes - b.reclaimable_bytes for b in e.buffers if b.kind == k))
            for k, name in _LLAMACPP_PARTS
        )
        bars.append(
            CompareBar(
                label,
                tuple(p for p in parts if p[1]),
                max_context(s, settings, budget, pins=r.pins),
                fits(e, budget),
            )
        )
        advance(i + 1, len(variants), label)
    return tuple(bars)
