"""Solvers: does it fit, the largest context, the most parallel sequences, and the cheapest
single change when it does not fit.

All solvers search llama.cpp's own grid (contexts are padded to 256 per sequence), by bisection
over an estimate that never shrinks as the context or the number of sequences grows, so the
answers are exact for the engine profile: the returned context fits and the next step does not.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace

from membudget.engines.llamacpp import (
    LlamaCppEstimate,
    LlamaCppRules,
    LlamaCppSettings,
    estimate_llamacpp,
)
from membudget.engines.llamacpp_devices import CPU
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.presets import apply_preset
from membudget.units import GIB, format_bytes

__all__ = [
    "DEFAULT_MARGIN_BYTES",
    "LLAMA_MAX_SEQ",
    "PRESET_LADDER",
    "Budget",
    "Plan",
    "Suggestion",
    "best_preset",
    "budget_for",
    "fits",
    "llamacpp_flags",
    "make_plan",
    "max_context",
    "max_parallel",
    "min_gpus",
    "offload",
    "rpc_commands",
    "suggestions",
]

# llama.cpp's own fitting (common/fit.cpp, --fit) leaves 1 GiB free per device; a budget taken
# from detection keeps the same margin. An explicit --memory is used as given.
DEFAULT_MARGIN_BYTES = GIB
LLAMA_MAX_SEQ = 256  # llama.h: the most sequences one context can hold
_CTX_STEP = 256
_CTX_CAP = 1 << 21  # no model trains past two million tokens yet; the search needs a ceiling


@dataclass(frozen=True, slots=True)
class Budget:
    """The memory a plan may use: ``memory_bytes`` of RAM after the margin is taken off, and
    each GPU's budget (also after the margin) in ``gpus``."""

    memory_bytes: int
    raw_bytes: int
    margin_bytes: int
    source: str
    gpus: tuple[tuple[str, int], ...] = ()

    def limit(self, device: str) -> int:
        if device == CPU:
            return self.memory_bytes
        return dict(self.gpus).get(device, 0)


def fits(estimate: LlamaCppEstimate, budget: Budget) -> bool:
    """Every device's resident buffers fit its budget (a single pool when there are no GPUs).
    Memory-mapped weight pages that were copied to CPU_REPACK buffers do not count: the OS
    drops them under pressure."""
    if not budget.gpus:
        return estimate.resident_bytes <= budget.memory_bytes
    return all(n <= budget.limit(dev) for dev, n in estimate.by_device(resident=True).items())


def budget_for(
    memory_bytes: int | None,
    hardware: Hardware | None,
    margin_bytes: int | None = None,
    gpu_bytes: tuple[int, ...] | None = None,
    rpc_bytes: tuple[int, ...] = (),
) -> Budget:
    """A budget from explicit sizes, or from this machine: available RAM and each NVIDIA GPU's
    free memory, each less the margin (llama.cpp's own fitting keeps 1 GiB per device)."""
    if memory_bytes is not None:
        margin = 0 if margin_bytes is None else margin_bytes
        ram, raw, source = max(0, memory_bytes - margin), memory_bytes, "--memory"
    elif hardware is not None and hardware.apple is not None:
        # Apple Silicon: Metal holds the model in unified memory, up to the GPU working set.
        margin = DEFAULT_MARGIN_BYTES if margin_bytes is None else margin_bytes
        raw = min(hardware.ram.available_bytes, hardware.apple.gpu_working_set_bytes)
        ram, source = (
            max(0, raw - margin),
            f"unified memory within the Metal working set ({hardware.apple.source})",
        )
    elif hardware is not None:
        margin = DEFAULT_MARGIN_BYTES if margin_bytes is None else margin_bytes
        raw = hardware.ram.available_bytes
        ram, source = max(0, raw - margin), f"available RAM ({hardware.ram.source})"
    else:
        raise InvalidArgumentError("budget", None, "needs --memory or a detected machine")
    if gpu_bytes is not None:
        gpus = tuple((f"CUDA{i}", max(0, n - margin)) for i, n in enumerate(gpu_bytes))
    elif hardware is not None and memory_bytes is None:
        gpus = tuple(
            (f"CUDA{g.index}", max(0, g.free_bytes - margin))
            for g in hardware.gpus
            if not g.unified
        )
    else:
        gpus = ()
    # Worker nodes of llama.cpp's RPC backend are devices too, each with its own memory.
    gpus += tuple((f"RPC{i}", max(0, n - margin)) for i, n in enumerate(rpc_bytes))
    return Budget(ram, raw, margin, source, gpus)


Estimator = Callable[[LlamaCppSettings], LlamaCppEstimate]


def _estimator(spec: ModelSpec, rules: LlamaCppRules | None) -> Estimator:
    return lambda s: estimate_llamacpp(spec, s, rules)


def _largest(lo: int, hi: int, ok: Callable[[int], bool]) -> int:
    """The largest k in [lo, hi] with ok(k), given ok is true then false; lo - 1 if none."""
    if hi < lo or not ok(lo):
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _context_for(settings: LlamaCppSettings, steps: int) -> int:
    per_seq = steps * _CTX_STEP
    return per_seq if settings.kv_unified else per_seq * max(1, settings.n_parallel)


def max_context(
    spec: ModelSpec, settings: LlamaCppSettings, budget: Budget, rules: LlamaCppRules | None = None
) -> int:
    """The largest ``-c`` that fits (0 if none does), on llama.cpp's 256-token grid per
    sequence, each sequence getting at most the trained context (or two million tokens when the
    model does not say)."""
    est = _estimator(spec, rules)
    # The trained context bounds each sequence's context, not their sum.
    hi = max(1, (spec.n_ctx_train or _CTX_CAP) // _CTX_STEP)

    def ok(steps: int) -> bool:
        return fits(est(replace(settings, n_ctx=_context_for(settings, steps))), budget)

    best = _largest(1, hi, ok)
    return 0 if best < 1 else _context_for(settings, best)


def max_parallel(
    spec: ModelSpec, settings: LlamaCppSettings, budget: Budget, rules: LlamaCppRules | None = None
) -> int:
    """The most sequences that fit when each gets ``settings.n_ctx`` tokens (0 if none)."""
    est = _estimator(spec, rules)
    per_seq = max(1, settings.n_ctx)

    def ok(n: int) -> bool:
        n_ctx = per_seq if settings.kv_unified else per_seq * n
        return fits(est(replace(settings, n_parallel=n, n_ctx=n_ctx)), budget)

    return max(0, _largest(1, LLAMA_MAX_SEQ, ok))


@dataclass(frozen=True, slots=True)
class Suggestion:
    """One change that makes the plan fit, with the memory it then needs."""

    change: str
    total_bytes: int
    flags: tuple[str, ...]


_SMALLER_PRESETS = ("Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def suggestions(
    spec: ModelSpec, settings: LlamaCppSettings, budget: Budget, rules: LlamaCppRules | None = None
) -> list[Suggestion]:
    """Single changes that make it fit, cheapest in quality first: a smaller KV-cache type, a
    shorter context, fewer parallel sequences, a smaller quantisation."""
    out: list[Suggestion] = []
    est = _estimator(spec, rules)
    for kv in ("q8_0", "q4_0"):
        if settings.cache_type_k == kv and settings.cache_type_v == kv:
            continue
        s = replace(settings, cache_type_k=kv, cache_type_v=kv, flash_attn="on")
        e = est(s)
        total = e.total_bytes
        if fits(e, budget):
            out.append(
                Suggestion(
                    f"quantise the KV cache to {kv}", total, ("-ctk", kv, "-ctv", kv, "-fa", "on")
                )
            )
            break
    if settings.gpus and budget.gpus:
        placed = offload(
            spec, replace(settings, gpus=(), tensor_split=(), n_cpu_moe=0), budget, rules
        )
        e = est(placed)
        if fits(e, budget) and (placed.n_gpu_layers, placed.n_cpu_moe) != (
            settings.n_gpu_layers,
            settings.n_cpu_moe,
        ):
            on_cpu = spec.n_layer + 1 - placed.n_gpu_layers
            what = (
                f"keep the experts of {placed.n_cpu_moe} layers on the CPU"
                if placed.n_cpu_moe
                else f"keep {on_cpu} layer(s) on the CPU"
            )
            flags = ("-ngl", str(placed.n_gpu_layers)) + (
                ("--n-cpu-moe", str(placed.n_cpu_moe)) if placed.n_cpu_moe else ()
            )
            out.append(Suggestion(what, e.resident_bytes, flags))
    ctx = max_context(spec, settings, budget, rules)
    if 0 < ctx < est(settings).n_ctx:
        total = est(replace(settings, n_ctx=ctx)).total_bytes
        out.append(Suggestion(f"shorten the context to {ctx} tokens", total, ("-c", str(ctx))))
    if settings.n_parallel > 1:
        per_seq = max(1, settings.n_ctx // (1 if settings.kv_unified else settings.n_parallel))
        n = max_parallel(spec, replace(settings, n_ctx=per_seq), budget, rules)
        if 0 < n < settings.n_parallel:
            n_ctx = per_seq if settings.kv_unified else per_seq * n
            total = est(replace(settings, n_parallel=n, n_ctx=n_ctx)).total_bytes
            out.append(
                Suggestion(
                    f"serve {n} parallel sequence(s)", total, ("-np", str(n), "-c", str(n_ctx))
                )
            )
    if spec.tensors:
        current = spec.weights.total
        for preset in _SMALLER_PRESETS:
            smaller = apply_preset(spec, preset)
            if smaller.weights.total >= current:
                continue
            e = estimate_llamacpp(smaller, settings, rules)
            total = e.total_bytes
            if fits(e, budget):
                out.append(Suggestion(f"requantise the weights to {preset}", total, ()))
                break
    return out


def llamacpp_flags(estimate: LlamaCppEstimate, model_path: str | None = None) -> list[str]:
    """``llama-server`` arguments that reproduce ``estimate``'s settings."""
    s = estimate.settings
    flags = ["llama-server", "-m", model_path or "MODEL.gguf", "-c", str(estimate.n_ctx)]
    if estimate.n_seq_max > 1:
        flags += ["-np", str(estimate.n_seq_max)]
    if s.kv_unified:
        flags.append("--kv-unified")
    flags += ["-b", str(s.n_batch), "-ub", str(s.n_ubatch)]
    if s.cache_type_k != "f16" or s.cache_type_v != "f16":
        flags += ["-ctk", s.cache_type_k, "-ctv", s.cache_type_v]
    flags += [
        "-fa",
        "on" if estimate.flash_attn else "off",
        "-ngl",
        str(s.n_gpu_layers if s.gpus else 0),
    ]
    if len(s.gpus) > 1 and s.tensor_split:
        top = max(s.tensor_split)
        flags += ["-ts", ",".join(f"{x / top:.3g}" for x in s.tensor_split)]
    if s.n_cpu_moe:
        flags += ["--n-cpu-moe", str(s.n_cpu_moe)]
    if s.swa_full:
        flags.append("--swa-full")
    if not s.repack:
        flags.append("--no-repack")
    return flags


@dataclass(frozen=True, slots=True)
class Plan:
    """A deployment plan: what the engine allocates, against a budget."""

    estimate: LlamaCppEstimate
    budget: Budget
    max_context: int
    max_parallel: int
    suggestions: tuple[Suggestion, ...]
    command: tuple[str, ...]
    best_quant: str | None = None
    min_gpus: int | None = None
    """The fewest GPUs of the first budgeted GPU's size that hold the whole model."""

    @property
    def fits(self) -> bool:
        return fits(self.estimate, self.budget)

    @property
    def headroom_bytes(self) -> int:
        """The tightest device's spare bytes (negative when it does not fit)."""
        if not self.budget.gpus:
            return self.budget.memory_bytes - self.estimate.resident_bytes
        used = self.estimate.by_device(resident=True)
        devices = {CPU, *dict(self.budget.gpus)}
        return min(self.budget.limit(d) - used.get(d, 0) for d in devices)

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    def verdict(self) -> str:
        e, b = self.estimate, self.budget
        if b.gpus:
            used = e.by_device(resident=True)
            parts = [
                f"{d} {format_bytes(used.get(d, 0))} of {format_bytes(b.limit(d))}"
                for d in (CPU, *dict(b.gpus))
            ]
            return ("fits: " if self.fits else "does NOT fit: ") + ", ".join(parts)
        need = format_bytes(e.resident_bytes)
        if self.fits:
            return f"fits: needs {need} of {format_bytes(b.memory_bytes)}"
        short = format_bytes(-self.headroom_bytes)
        return f"does NOT fit: needs {need} of {format_bytes(b.memory_bytes)} ({short} short)"


def make_plan(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    model_path: str | None = None,
) -> Plan:
    """Estimate, check against the budget, solve for the limits, and suggest fixes."""
    if settings.n_parallel > LLAMA_MAX_SEQ:
        raise MembudgetError(
            f"--parallel {settings.n_parallel} is more than llama.cpp's {LLAMA_MAX_SEQ} sequences."
        )
    if budget.gpus and not settings.gpus:
        settings = offload(spec, settings, budget, rules)
    estimate = estimate_llamacpp(spec, settings, rules)
    per_seq = estimate.n_ctx_seq
    ok = fits(estimate, budget)
    return Plan(
        estimate=estimate,
        budget=budget,
        max_context=max_context(spec, settings, budget, rules),
        max_parallel=max_parallel(spec, replace(settings, n_ctx=per_seq), budget, rules),
        suggestions=() if ok else tuple(suggestions(spec, settings, budget, rules)),
        command=tuple(llamacpp_flags(estimate, model_path)),
        best_quant=best_preset(spec, settings, budget, rules) if spec.tensors else None,
        min_gpus=(
            min_gpus(
                spec,
                replace(settings, gpus=(), tensor_split=(), n_cpu_moe=0),
                budget.gpus[0][1],
                budget.memory_bytes,
                rules,
            )
            if budget.gpus
            else None
        ),
    )


def _gpu_fit(e: LlamaCppEstimate, budget: Budget) -> bool:
    return all(n <= budget.limit(dev) for dev, n in e.by_device().items() if dev != CPU)


def offload(
    spec: ModelSpec, settings: LlamaCppSettings, budget: Budget, rules: LlamaCppRules | None = None
) -> LlamaCppSettings:
    """Place the model on the budget's GPUs the way a careful user would: everything on the
    GPUs if it fits; else, for a mixture of experts, the fewest layers' experts on the CPU
    (``--n-cpu-moe``); else the most layers on the GPUs (``-ngl``). GPUs share the layers in
    proportion to their budgets (``-ts``), as llama.cpp splits by free memory."""
    names = tuple(name for name, _ in budget.gpus)
    split = tuple(float(n) for _, n in budget.gpus)
    slots = spec.n_layer + 1
    base = replace(settings, gpus=names, tensor_split=split if len(names) > 1 else ())
    est = _estimator(spec, rules)
    full = replace(base, n_gpu_layers=slots)
    if _gpu_fit(est(full), budget):
        return full
    if spec.is_moe:
        k = (
            _largest(
                0, spec.n_layer, lambda k: not _gpu_fit(est(replace(full, n_cpu_moe=k)), budget)
            )
            + 1
        )
        if k <= spec.n_layer and _gpu_fit(est(replace(full, n_cpu_moe=k)), budget):
            return replace(full, n_cpu_moe=k)
    best = 0
    for n in range(slots, 0, -1):
        if _gpu_fit(est(replace(base, n_gpu_layers=n)), budget):
            best = n
            break
    return replace(base, n_gpu_layers=best)


def min_gpus(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    gpu_bytes: int,
    ram_bytes: int,
    rules: LlamaCppRules | None = None,
    most: int = 16,
) -> int:
    """The fewest GPUs of ``gpu_bytes`` each that hold the whole model (0 if ``most`` do not)."""
    for n in range(1, most + 1):
        gpus = tuple((f"CUDA{i}", gpu_bytes) for i in range(n))
        b = Budget(ram_bytes, ram_bytes, 0, "test", gpus)
        s = replace(
            settings,
            gpus=tuple(name for name, _ in gpus),
            tensor_split=(1.0,) * n if n > 1 else (),
            n_gpu_layers=spec.n_layer + 1,
        )
        if fits(estimate_llamacpp(spec, s, rules), b):
            return n
    return 0


PRESET_LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")


def best_preset(
    spec: ModelSpec, settings: LlamaCppSettings, budget: Budget, rules: LlamaCppRules | None = None
) -> str | None:
    """The highest-quality llama.cpp preset at which the model fits (offloading as
    :func:`offload` does when the budget has GPUs), or ``None``."""
    if not spec.tensors:
        return None
    for preset in PRESET_LADDER:
        candidate = apply_preset(spec, preset)
        s = offload(candidate, settings, budget, rules) if budget.gpus else settings
        if fits(estimate_llamacpp(candidate, s, rules), budget):
            return preset
    return None


def rpc_commands(estimate: LlamaCppEstimate, port: int = 50052) -> list[list[str]]:
    """Commands for llama.cpp's RPC backend: one ``rpc-server`` a worker node, then the main
    ``llama-server`` pointing at them (devices named ``RPC<i>`` are the workers)."""
    workers = [d for d in estimate.settings.gpus if d.startswith("RPC")]
    if not workers:
        return []
    cmds = [["rpc-server", "--host", "0.0.0.0", "-p", str(port)] for _ in workers]  # noqa: S104 - runs on the worker, by design
    hosts = ",".join(f"WORKER{i}:{port}" for i in range(len(workers)))
    main = llamacpp_flags(estimate)
    cmds.append([*main, "--rpc", hosts])
    return cmds
