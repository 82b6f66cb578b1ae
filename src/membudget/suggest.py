"""What to change when a plan does not fit: single changes, each planned in full.

A suggestion is a changed request. It is planned exactly as the user's own request would be
(:func:`membudget.request.llamacpp_plan`), and kept only when that plan fits; its
``needed_bytes`` is that plan's, and ``plan_args`` are the ``membudget plan`` arguments that make
the same request, so applying a suggestion gives what it said, by construction.

They are sorted by what they cost the user: quality first (a quantised KV cache or smaller
weights lose a little of it, a shorter context loses what the model can read), then speed
(layers or experts on the CPU run slower, fewer parallel sequences serve fewer users), then
hardware (one more GPU).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from membudget.errors import MembudgetError
from membudget.model import ModelSpec
from membudget.plan import share_text
from membudget.presets import apply_preset
from membudget.units import format_bytes

if TYPE_CHECKING:
    from membudget.engines.vllm import VllmEstimate
    from membudget.hardware import Hardware
    from membudget.plan import Plan
    from membudget.request import PlanRequest

__all__ = ["Suggestion", "llamacpp_suggestions", "suggestion_lines", "vllm_suggestions"]

# Quality lost by each smaller preset, on the scale of the KV-cache types' (q8_0 = 1).
_PRESET_COST = {"Q8_0": 1, "Q6_K": 1, "Q5_K_M": 2, "Q4_K_M": 2, "Q3_K_M": 3, "Q2_K": 4}
_SMALLER_PRESETS = tuple(_PRESET_COST)
_HARDWARE = 9  # a change of hardware sorts after every change of settings


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One change that makes the plan fit."""

    change: str
    needed_bytes: int
    """What the changed plan needs: the figure its verdict compares with the budget."""
    flags: tuple[str, ...]
    """The engine's flags that carry the change (its whole command is ``command``)."""
    plan_args: tuple[str, ...]
    """``membudget plan`` arguments that apply it, added to the ones given."""
    command: tuple[str, ...]
    cost: tuple[int, int]
    """(quality, speed) the change costs: lower sorts first."""

    def to_dict(self) -> dict[str, object]:
        return {
            "change": self.change,
            "needed_bytes": self.needed_bytes,
            "flags": list(self.flags),
            "plan_args": list(self.plan_args),
            "command": list(self.command),
            "cost": {"quality": self.cost[0], "speed": self.cost[1]},
        }

    def line(self) -> str:
        extra = f"  ({' '.join(self.flags)})" if self.flags else ""
        return f"{self.change}: needs {format_bytes(self.needed_bytes)}{extra}"


def suggestion_lines(found: tuple[Suggestion, ...], fits: bool) -> list[str]:
    """The text a plan prints about what to change."""
    lines = [f"  to fit: {x.line()}" for x in found]
    if not fits and not found:
        lines.append("  no single change makes it fit")
    return lines


@dataclass(frozen=True, slots=True)
class _Candidate:
    change: str
    request: PlanRequest
    flags: tuple[str, ...]
    plan_args: tuple[str, ...]
    cost: tuple[int, int]


def _given(request: PlanRequest, *fields: str) -> frozenset[str]:
    return request.given | frozenset(fields)


def _placement(plan: Plan) -> list[tuple[str, str, str]]:
    """The plan's placement as (llama.cpp flag, membudget argument, value)."""
    s = plan.estimate.settings
    out = [("-ngl", "--n-gpu-layers", str(s.n_gpu_layers))]
    if len(s.gpus) > 1 and s.tensor_split:
        out.append(("-ts", "--tensor-split", ",".join(share_text(x) for x in s.tensor_split)))
    if s.n_cpu_moe:
        out.append(("--n-cpu-moe", "--n-cpu-moe", str(s.n_cpu_moe)))
    return out


def _placement_flags(plan: Plan) -> tuple[str, ...]:
    return tuple(x for flag, _, value in _placement(plan) for x in (flag, value))


def _placement_args(plan: Plan) -> tuple[str, ...]:
    return tuple(x for _, arg, value in _placement(plan) for x in (arg, value))


def llamacpp_suggestions(
    request: PlanRequest,
    spec: ModelSpec,
    probe: Callable[[], Hardware],
    plan: Plan,
) -> tuple[Suggestion, ...]:
    """Single changes that make a llama.cpp plan fit (``spec`` as loaded, before ``--quant``)."""
    from membudget.request import llamacpp_plan  # noqa: PLC0415 - the request layer calls here

    def plan_for(r: PlanRequest) -> Plan:
        return llamacpp_plan(r, spec, probe, full=False)

    e = plan.estimate
    found: list[Suggestion] = []
    candidates: list[_Candidate] = []
    if request.pins.pinned and plan.budget.gpus:
        free = replace(request, n_gpu_layers=None, tensor_split=(), n_cpu_moe=None)
        try:
            placed = plan_for(free)
        except MembudgetError:
            placed = None
        if placed is not None and placed.fits:
            s = placed.estimate.settings
            on_cpu = spec.n_layer + 1 - min(s.n_gpu_layers, spec.n_layer + 1)
            what = f"keep {on_cpu} layer(s) on the CPU" if on_cpu else "offload every layer"
            if s.n_cpu_moe:
                what += f", with the experts of {s.n_cpu_moe} layer(s) on the CPU"
            args = _placement_args(placed)
            pinned = replace(
                request,
                n_gpu_layers=s.n_gpu_layers,
                tensor_split=s.tensor_split if len(s.gpus) > 1 else (),
                n_cpu_moe=s.n_cpu_moe or None,
            )
            candidates.append(_Candidate(what, pinned, _placement_flags(placed), args, (0, 2)))
    if request.n_parallel > 1 and 0 < plan.max_parallel < request.n_parallel:
        n = plan.max_parallel
        ctx = e.n_ctx_seq if request.kv_unified else e.n_ctx_seq * n
        candidates.append(
            _Candidate(
                f"serve {n} parallel sequence(s) of {e.n_ctx_seq:,} tokens",
                replace(request, parallel=n, ctx=ctx, given=_given(request, "parallel", "ctx")),
                ("-np", str(n), "-c", str(ctx)),
                ("--parallel", str(n), "--ctx", str(ctx)),
                (0, 1),
            )
        )
    if any(layer.has_kv for layer in spec.layers):
        for cost, kv in ((1, "q8_0"), (2, "q4_0")):
            if request.cache_type_k == kv and request.cache_type_v == kv:
                continue
            fa = "on" if request.flash_attn == "off" else request.flash_attn
            kv_args: tuple[str, ...] = ("--cache-type-k", kv, "--cache-type-v", kv)
            kv_flags: tuple[str, ...] = ("-ctk", kv, "-ctv", kv)
            if fa != request.flash_attn:
                kv_args += ("--flash-attn", fa)
                kv_flags += ("-fa", fa)
            candidates.append(
                _Candidate(
                    f"quantise the KV cache to {kv}",
                    replace(
                        request,
                        cache_type_k=kv,
                        cache_type_v=kv,
                        flash_attn=fa,
                        given=_given(request, "cache_type_k", "cache_type_v", "flash_attn"),
                    ),
                    kv_flags,
                    kv_args,
                    (cost, 0),
                )
            )
    if 0 < plan.max_context < e.n_ctx:
        ctx = plan.max_context
        candidates.append(
            _Candidate(
                f"shorten the context to {ctx:,} tokens",
                replace(request, ctx=ctx, given=_given(request, "ctx")),
                ("-c", str(ctx)),
                ("--ctx", str(ctx)),
                (3, 0),
            )
        )
    if spec.tensors:
        current = plan.estimate.spec.weights.total
        for preset in _SMALLER_PRESETS:
            if apply_preset(spec, preset).weights.total >= current:
                continue
            candidates.append(
                _Candidate(
                    f"requantise the weights to {preset}",
                    replace(request, quant=preset, given=_given(request, "quant")),
                    (),
                    ("--quant", preset),
                    (_PRESET_COST[preset], 0),
                )
            )
    if request.gpu_bytes:
        size = request.gpu_bytes[-1]
        candidates.append(
            _Candidate(
                f"add one more GPU of {format_bytes(size)}",
                replace(request, gpu_bytes=(*request.gpu_bytes, size)),
                (),
                ("--gpu", f"{size}"),
                (_HARDWARE, 0),
            )
        )
    kv_found = preset_found = False
    for c in candidates:
        is_kv = c.change.startswith("quantise the KV")
        is_preset = c.change.startswith("requantise")
        if (is_kv and kv_found) or (is_preset and preset_found):
            continue  # the mildest of its kind that fits is enough
        try:
            p = plan_for(c.request)
        except MembudgetError:
            continue
        if not p.fits:
            continue
        kv_found |= is_kv
        preset_found |= is_preset
        carried = c.flags
        if (
            p.budget.gpus
            and c.flags[:1] != ("-ngl",)
            and _placement_flags(p) != _placement_flags(plan)
        ):
            carried += _placement_flags(p)  # the change moves layers too
        found.append(Suggestion(c.change, p.needed_bytes, carried, c.plan_args, p.command, c.cost))
    found.sort(key=lambda x: (x.cost, x.needed_bytes))
    return tuple(found)


def vllm_suggestions(
    request: PlanRequest,
    spec: ModelSpec,
    probe: Callable[[], Hardware],
    estimate: VllmEstimate,
) -> tuple[Suggestion, ...]:
    """Single changes that make a vLLM plan fit."""
    from membudget.engines.vllm import estimate_vllm, max_model_len, vllm_command  # noqa: PLC0415
    from membudget.request import vllm_settings  # noqa: PLC0415 - the request layer calls here

    candidates: list[_Candidate] = []
    longest = max_model_len(spec, estimate.settings)
    if 0 < longest < estimate.max_model_len:
        candidates.append(
            _Candidate(
                f"shorten --max-model-len to {longest:,} tokens",
                replace(request, max_model_len=longest, given=_given(request, "max_model_len")),
                ("--max-model-len", str(longest)),
                ("--max-model-len", str(longest)),
                (3, 0),
            )
        )
    if request.kv_cache_dtype == "auto" and any(layer.has_kv for layer in spec.layers):
        candidates.append(
            _Candidate(
                "store the KV cache in fp8",
                replace(request, kv_cache_dtype="fp8", given=_given(request, "kv_cache_dtype")),
                ("--kv-cache-dtype", "fp8"),
                ("--kv-cache-dtype", "fp8"),
                (1, 0),
            )
        )
    tp = request.tensor_parallel
    sizes = request.gpu_bytes or ()
    if len(sizes) >= 2 * tp * max(request.pipeline_parallel, request.nodes):
        candidates.append(
            _Candidate(
                f"split the model over {2 * tp} GPUs (tensor parallel)",
                replace(request, tensor_parallel=2 * tp, given=_given(request, "tensor_parallel")),
                ("-tp", str(2 * tp)),
                ("--tensor-parallel-size", str(2 * tp)),
                (0, 0),
            )
        )
    if request.gpu_memory_utilization < 0.95:
        candidates.append(
            _Candidate(
                "let vLLM use 95% of each GPU",
                replace(
                    request,
                    gpu_memory_utilization=0.95,
                    given=_given(request, "gpu_memory_utilization"),
                ),
                ("--gpu-memory-utilization", "0.95"),
                ("--gpu-memory-utilization", "0.95"),
                (0, 1),
            )
        )
    if request.gpu_bytes and len(request.gpu_bytes) < 2 * tp:
        size = request.gpu_bytes[-1]
        candidates.append(
            _Candidate(
                f"add a GPU of {format_bytes(size)} and split the model over {2 * tp} (tensor parallel)",
                replace(
                    request,
                    gpu_bytes=(*request.gpu_bytes, *((size,) * (2 * tp - len(request.gpu_bytes)))),
                    tensor_parallel=2 * tp,
                    given=_given(request, "tensor_parallel"),
                ),
                ("-tp", str(2 * tp)),
                ("--gpu", f"{size}", "--tensor-parallel-size", str(2 * tp)),
                (_HARDWARE, 0),
            )
        )
    found = []
    for c in candidates:
        try:
            settings = vllm_settings(c.request, spec, probe)
        except MembudgetError:
            continue
        e = estimate_vllm(spec, settings)
        if e.fits:
            cmd = tuple(vllm_command(e, request.source or spec.name))
            found.append(Suggestion(c.change, e.needed_bytes, c.flags, c.plan_args, cmd, c.cost))
    found.sort(key=lambda x: (x.cost, x.needed_bytes))
    return tuple(found)
