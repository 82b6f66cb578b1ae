"""Solvers: does it fit, the largest context, the most parallel sequences, the best preset and
the fewest GPUs, each the best over every placement the planner may choose.

The placement (``-ngl``, ``-ts``, ``--n-cpu-moe``) comes from :class:`membudget.placement.Placer`,
which is exact over the planner's choices for one context. The solvers here search llama.cpp's
grid (contexts are padded to 256 per sequence) for the largest value at which *some* placement
fits. Fitting only gets harder as the context or the number of sequences grows, and only easier
as any device gets more memory, so the answers are exact: the returned context fits and the next
step does not fit under any placement, and more memory never lowers them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from membudget._collector import paced_call
from membudget.engines.llamacpp import (
    LlamaCppEstimate,
    LlamaCppRules,
    LlamaCppSettings,
    estimate_llamacpp,
    scheduled_exactly,
)
from membudget.engines.llamacpp.devices import CPU, has_host_buffer
from membudget.engines.ollama import OllamaLaunch
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.hardware import AppleInfo, Hardware, apple_working_set
from membudget.model import ModelSpec
from membudget.placement import Pins, Placer, least
from membudget.presets import apply_preset
from membudget.units import GIB, format_bytes, parse_size

__all__ = [
    "DEFAULT_MARGIN_BYTES",
    "LLAMA_MAX_SEQ",
    "PRESET_LADDER",
    "Budget",
    "ContextLimit",
    "Plan",
    "apple_target",
    "best_preset",
    "budget_for",
    "check_pins",
    "context_search",
    "fits",
    "llamacpp_flags",
    "make_plan",
    "max_context",
    "max_parallel",
    "min_gpus",
    "offload",
    "parallel_search",
    "placer_for",
    "rpc_commands",
    "share_text",
]

# llama.cpp's own fitting (common/fit.cpp, --fit) leaves 1 GiB free per device; a budget taken
# from detection keeps the same margin. An explicit --memory is used as given.
DEFAULT_MARGIN_BYTES = GIB
LLAMA_MAX_SEQ = 256  # llama.h LLAMA_MAX_SEQ: the most sequences one context can hold
_CTX_STEP = 256  # llama-context.cpp pads n_ctx (per sequence) to 256
_CTX_CAP = 1 << 21  # no model trains past two million tokens yet; the search needs a ceiling
RPC_PORT = 50052  # ggml-rpc: rpc-server's default port
PRESET_LADDER = ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M", "Q2_K")

ContextLimit = Literal["memory", "n_ctx_train"]


@dataclass(frozen=True, slots=True)
class Budget:
    """The memory a plan may use: ``memory_bytes`` of RAM after the margin is taken off, and
    each device's budget (also after the margin) in ``gpus``, in llama.cpp's device order:
    RPC servers first (``src/llama.cpp``, "add RPC servers at the front of the list"), then
    local GPUs."""

    memory_bytes: int
    raw_bytes: int
    margin_bytes: int
    source: str
    gpus: tuple[tuple[str, int], ...] = ()
    pool_bytes: int | None = None
    """Unified memory (Apple Silicon): the CPU and the devices together must fit in it."""
    cpu_devices: tuple[str, ...] = ()
    """RPC workers whose backend is a CPU (their buffers follow the CPU backend's rules)."""

    def limit(self, device: str) -> int:
        if device == CPU:
            return self.memory_bytes
        return dict(self.gpus).get(device, 0)

    @property
    def devices(self) -> tuple[tuple[str, int], ...]:
        """Every budgeted device, the CPU first."""
        return ((CPU, self.memory_bytes), *self.gpus)


def fits(estimate: LlamaCppEstimate, budget: Budget) -> bool:
    """Every device's resident buffers fit its budget. Memory-mapped weight pages that were
    copied to CPU_REPACK buffers do not count: the OS drops them under pressure."""
    used = estimate.by_device(resident=True)
    known = dict(budget.devices)
    if budget.pool_bytes is not None and sum(used.values()) > budget.pool_bytes:
        return False
    return all(dev in known and n <= known[dev] for dev, n in used.items())


def budget_for(
    memory_bytes: int | None,
    hardware: Hardware | None,
    margin_bytes: int | None = None,
    gpu_bytes: tuple[int, ...] | None = None,
    rpc_bytes: tuple[int, ...] = (),
    apple: AppleInfo | None = None,
    rpc_cpu: tuple[bool, ...] = (),
) -> Budget:
    """A budget from explicit sizes, or from this machine: available RAM and each NVIDIA GPU's
    free memory, each less the margin (llama.cpp's own fitting keeps 1 GiB per device).

    Apple Silicon (``apple``, or detected) is one pool of unified memory: the Metal device
    ``MTL0`` may take up to the GPU working set, and the CPU and Metal together the pool."""
    detected_apple = hardware.apple if hardware is not None and memory_bytes is None else None
    target = apple or detected_apple
    if target is not None:
        explicit = apple is not None or memory_bytes is not None
        margin = (0 if explicit else DEFAULT_MARGIN_BYTES) if margin_bytes is None else margin_bytes
        raw = target.unified_bytes
        if memory_bytes is not None:
            raw = memory_bytes
        elif apple is None and hardware is not None:
            raw = hardware.ram.available_bytes
        pool = max(0, raw - margin)
        metal = max(0, min(target.gpu_working_set_bytes, raw) - margin)
        source = (
            f"unified memory of {'the target' if apple is not None else 'this'} Apple Silicon "
            f"machine; Metal's working set {target.gpu_working_set_bytes:,} bytes ({target.source})"
        )
        rpc = tuple((f"RPC{i}", max(0, n - margin)) for i, n in enumerate(rpc_bytes))
        return Budget(
            pool,
            raw,
            margin,
            source,
            (*rpc, ("MTL0", metal)),
            pool_bytes=pool,
            cpu_devices=_cpu_workers(rpc_cpu),
        )
    if memory_bytes is not None:
        margin = 0 if margin_bytes is None else margin_bytes
        ram, raw, source = max(0, memory_bytes - margin), memory_bytes, "--memory"
    elif hardware is not None:
        margin = DEFAULT_MARGIN_BYTES if margin_bytes is None else margin_bytes
        raw = hardware.ram.available_bytes
        ram, source = max(0, raw - margin), f"available RAM ({hardware.ram.source})"
    else:
        raise InvalidArgumentError(
            "budget", InvalidArgumentError.NO_VALUE, "needs --memory or a detected machine"
        )
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
    # Worker nodes of llama.cpp's RPC backend are devices too, each with its own memory, and
    # llama.cpp lists them before the local GPUs.
    rpc = tuple((f"RPC{i}", max(0, n - margin)) for i, n in enumerate(rpc_bytes))
    return Budget(ram, raw, margin, source, rpc + gpus, cpu_devices=_cpu_workers(rpc_cpu))


def _cpu_workers(rpc_cpu: tuple[bool, ...]) -> tuple[str, ...]:
    return tuple(f"RPC{i}" for i, cpu in enumerate(rpc_cpu) if cpu)


_APPLE_NAME = re.compile(r"^m(?P<gen>[1-9])(?:-(?P<tier>pro|max|ultra))?-(?P<gb>[0-9]+)gb$")


def apple_target(text: str, wired_limit_mb: int | None = None) -> AppleInfo:
    """An Apple Silicon machine to plan for: its unified memory as a size (``16GiB``) or a
    name such as ``m3-16gb`` or ``m2-max-96gb`` (Apple's "GB" of unified memory are GiB)."""
    m = _APPLE_NAME.match(text.strip().lower())
    if m is not None:
        unified = int(m["gb"]) * GIB
    else:
        try:
            unified = parse_size(text)
        except MembudgetError:
            raise InvalidArgumentError(
                "--apple", text, "must be a size such as 16GiB or a name such as m3-16gb"
            ) from None
    if unified <= 0:
        raise InvalidArgumentError("--apple", text, "must be more than 0 bytes")
    working, source = apple_working_set(unified, wired_limit_mb)
    return AppleInfo(unified, working, source)


def check_pins(spec: ModelSpec, budget: Budget, pins: Pins) -> None:
    """Refuse offload flags llama.cpp could not honour on these devices."""
    names = [name for name, _ in budget.gpus]
    for flag, value in (("--n-gpu-layers", pins.n_gpu_layers), ("--n-cpu-moe", pins.n_cpu_moe)):
        if value is not None and value < 0:
            raise InvalidArgumentError(flag, value, "must be 0 or more")
    if pins.tensor_split and len(pins.tensor_split) > len(names):
        have = f"{len(names)} ({', '.join(names)})" if names else "none"
        raise InvalidArgumentError(
            "--tensor-split",
            ",".join(f"{x:g}" for x in pins.tensor_split),
            f"has {len(pins.tensor_split)} shares but the devices given or detected are {have}",
        )
    if not names:
        if pins.n_gpu_layers:
            raise InvalidArgumentError(
                "--n-gpu-layers",
                pins.n_gpu_layers,
                "needs a GPU or RPC device (--gpu, --rpc-node); none was given or detected",
            )
        if pins.n_cpu_moe:
            raise InvalidArgumentError(
                "--n-cpu-moe",
                pins.n_cpu_moe,
                "keeps experts on the CPU instead of a GPU, and no GPU or RPC device was given or detected",
            )
    if pins.n_cpu_moe and not spec.is_moe:
        raise InvalidArgumentError(
            "--n-cpu-moe", pins.n_cpu_moe, f"needs a mixture of experts; {spec.name} is dense"
        )


def placer_for(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    pins: Pins | None = None,
) -> Placer:
    return Placer(
        spec,
        settings,
        budget.memory_bytes,
        budget.gpus,
        rules,
        pins,
        pool=budget.pool_bytes,
        cpu_devices=budget.cpu_devices,
    )


def _grid_context(kv_unified: bool, n_parallel: int, steps: int) -> int:
    per_seq = steps * _CTX_STEP
    return per_seq if kv_unified else per_seq * max(1, n_parallel)


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


def _guided_largest(
    lo: int, hi: int, ok: Callable[[int], bool], guess: Callable[[int], bool]
) -> int:
    """The largest k in [lo, hi] with ``ok(k)`` (``ok`` true, then false; lo - 1 if none),
    asking ``ok`` as rarely as the cheap ``guess`` allows.

    Every answer rests on ``ok`` alone: ``guess`` only picks where to ask next. The bracket
    (a, b) has ``ok(a)`` true (or a = lo - 1) and ``ok(b)`` false (or b = hi + 1). Each probe is
    the boundary the guess predicts (its largest k that fits, then the one after), so a close
    guess settles it with two calls to ``ok``. A probe where ``ok`` contradicts the guess
    gives the guess a new exact solve to go by (the placer's figures there), so the next
    probe still follows the guess; after two contradictions in a row one probe halves the
    bracket instead, so a poor guess costs at most three times a bisection."""
    a, b = lo - 1, hi + 1
    misses = 0
    while b - a > 1:
        bisect = misses >= 2
        k = (a + b) // 2 if bisect else min(max(_largest(a + 1, b - 1, guess), a + 1), b - 1)
        predicted = None if bisect else guess(k)
        fits = ok(k)
        if fits:
            a = k
        else:
            b = k
        misses = 0 if bisect or predicted == fits else misses + 1
    return a


def context_search(
    placer: Placer, n_parallel: int, kv_unified: bool
) -> tuple[int, int, ContextLimit]:
    """(``-c``, tokens per sequence, what limits it): the largest context on llama.cpp's
    256-token grid at which some placement fits, each sequence getting at most the trained
    context (two million tokens when the model does not say). (0, 0, "memory") if none fits."""
    train = placer.spec.n_ctx_train
    hi = max(1, (train or _CTX_CAP) // _CTX_STEP)

    def ctx(steps: int) -> int:
        return _grid_context(kv_unified, n_parallel, steps)

    def ok(steps: int) -> bool:
        return placer.fits(ctx(steps), n_parallel)

    def along(c: int, n: int) -> int | None:
        return c if n == n_parallel else None

    def guess(steps: int) -> bool:
        found = placer.fits_guess(ctx(steps), n_parallel, along)
        return ok(steps) if found is None else found

    best = _guided_largest(1, hi, ok, guess)
    if best < 1:
        return 0, 0, "memory"
    limit: ContextLimit = "n_ctx_train" if train and best == hi else "memory"
    return ctx(best), best * _CTX_STEP, limit


def parallel_search(placer: Placer, per_seq: int, kv_unified: bool) -> int:
    """The most sequences (up to llama.cpp's 256) that fit when each gets ``per_seq`` tokens,
    over every placement (0 if not even one does)."""

    def ctx(n: int) -> int:
        return per_seq if kv_unified else per_seq * n

    def ok(n: int) -> bool:
        return placer.fits(ctx(n), n)

    def along(c: int, m: int) -> int | None:
        return m if c == ctx(m) else None

    def guess(n: int) -> bool:
        found = placer.fits_guess(ctx(n), n, along)
        return ok(n) if found is None else found

    return max(0, _guided_largest(1, LLAMA_MAX_SEQ, ok, guess))


def max_context(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    pins: Pins | None = None,
) -> int:
    """The largest ``-c`` that fits under some placement (0 if none does)."""
    placer = placer_for(spec, settings, budget, rules, pins)
    return context_search(placer, settings.n_parallel, settings.kv_unified)[0]


def max_parallel(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    pins: Pins | None = None,
) -> int:
    """The most sequences that fit when each gets ``settings.n_ctx`` tokens (0 if none)."""
    placer = placer_for(spec, settings, budget, rules, pins)
    return parallel_search(placer, max(1, settings.n_ctx), settings.kv_unified)


def offload(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    pins: Pins | None = None,
) -> LlamaCppSettings:
    """``settings`` with the placement the planner chooses for its context."""
    placer = placer_for(spec, settings, budget, rules, pins)
    return placer.solve(settings.n_ctx, settings.n_parallel).settings


def min_gpus(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    gpu_bytes: int,
    ram_bytes: int,
    rules: LlamaCppRules | None = None,
    most: int = 16,
) -> int:
    """The fewest GPUs of ``gpu_bytes`` each that hold every layer and expert, with the rest
    in ``ram_bytes`` (0 if ``most`` do not)."""
    everything = Pins(n_gpu_layers=spec.n_layer + 1, n_cpu_moe=0)

    def ok(n: int) -> bool:
        gpus = tuple((f"CUDA{i}", gpu_bytes) for i in range(n))
        placer = Placer(spec, settings, ram_bytes, gpus, rules, everything)
        return placer.fits(settings.n_ctx, settings.n_parallel)

    found = least(1, most, ok)
    return 0 if found is None else found


@dataclass(frozen=True, slots=True)
class BestPreset:
    """The highest-quality llama.cpp presets that fit: on the devices alone, and with offload."""

    gpu_only: str | None
    with_offload: str | None


def best_preset(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    pins: Pins | None = None,
) -> BestPreset:
    """The highest-quality presets of :data:`PRESET_LADDER` at which the model fits, under the
    same pins: with the planner's placement, and (with devices) every layer on them."""
    if not spec.tensors:
        return BestPreset(None, None)
    pins = pins or Pins()
    everything = Pins(n_gpu_layers=spec.n_layer + 1, n_cpu_moe=0, tensor_split=pins.tensor_split)
    gpu_only = with_offload = None
    for preset in PRESET_LADDER:
        candidate = apply_preset(spec, preset)
        if with_offload is None and placer_for(candidate, settings, budget, rules, pins).fits(
            settings.n_ctx, settings.n_parallel
        ):
            with_offload = preset
        if (
            budget.gpus
            and gpu_only is None
            and pins.n_gpu_layers in (None, spec.n_layer + 1)
            and not pins.n_cpu_moe
            and placer_for(candidate, settings, budget, rules, everything).fits(
                settings.n_ctx, settings.n_parallel
            )
        ):
            gpu_only = preset
        if with_offload is not None and (gpu_only is not None or not budget.gpus):
            break
    return BestPreset(gpu_only, with_offload)


def share_text(x: float) -> str:
    """A ``-ts`` share as llama.cpp's flag takes it: a whole count without its ``.0``."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _ngl(estimate: LlamaCppEstimate) -> str:
    """-ngl as people write it: 99 for "every slot" where that is enough, else the count."""
    s = estimate.settings
    if not s.gpus:
        return "0"
    slots = estimate.spec.n_layer + 1
    if s.n_gpu_layers >= slots and slots <= 99 and not s.tensor_split:
        return "99"
    return str(s.n_gpu_layers)


def llamacpp_flags(estimate: LlamaCppEstimate, model_path: str | None = None) -> list[str]:
    """``llama-server`` arguments that reproduce ``estimate``'s settings."""
    s = estimate.settings
    flags = ["llama-server", "-m", model_path or "MODEL.gguf", "-c", str(estimate.n_ctx)]
    flags += ["-np", str(estimate.n_seq_max)]
    if s.kv_unified:
        flags.append("--kv-unified")
    flags += ["-b", str(s.n_batch), "-ub", str(s.n_ubatch)]
    if s.cache_type_k != "f16" or s.cache_type_v != "f16":
        flags += ["-ctk", s.cache_type_k, "-ctv", s.cache_type_v]
    flags += ["-fa", "on" if estimate.flash_attn else "off"]
    flags += ["-ngl", _ngl(estimate)]
    if s.tensor_split:  # several devices, or one named by a pinned -ts
        flags += ["-ts", ",".join(share_text(x) for x in s.tensor_split)]
    if s.n_cpu_moe:
        flags += ["--n-cpu-moe", str(s.n_cpu_moe)]
    if s.swa_full:
        flags.append("--swa-full")
    if not s.repack:
        flags.append("--no-repack")
    if s.tensor_overrides:
        flags += ["-ot", ",".join(f"{p}={b}" for p, b in s.tensor_overrides)]
    if s.n_cpu_ffn:
        flags += ["-ncffn", str(s.n_cpu_ffn)]
    if s.no_host:
        flags.append("--no-host")
    flags += s.rope_flags
    if s.load_mode != "auto":
        flags += ["-lm", s.load_mode]
    return flags


def rpc_commands(
    estimate: LlamaCppEstimate, command: Sequence[str] | None = None, port: int = RPC_PORT
) -> list[list[str]]:
    """Commands for llama.cpp's RPC backend: one ``rpc-server`` a worker node, then the main
    ``llama-server`` (``command``, the plan's own) pointing at them, in the order that names
    them ``RPC0``, ``RPC1``, ..."""
    workers = [d for d in estimate.settings.gpus if d.startswith("RPC")]
    if not workers:
        return []
    cmds = [["rpc-server", "-H", "0.0.0.0", "-p", str(port)] for _ in workers]  # noqa: S104 - runs on the worker, by design
    hosts = ",".join(f"WORKER{i}:{port}" for i in range(len(workers)))
    main = list(command) if command is not None else llamacpp_flags(estimate)
    cmds.append([*main, "--rpc", hosts])
    return cmds


RPC_WARNING = (
    "rpc-server -H 0.0.0.0 listens on every interface with no authentication: run it only on "
    "a private network you trust (rpc-server itself warns: never expose it to an open network)"
)


@dataclass(frozen=True, slots=True)
class ServerCheckpoints:
    """llama-server's context checkpoints: ``count`` a slot, each up to ``each_bytes`` of host
    memory, for ``slots`` slots (:mod:`.engines.llamacpp.server`)."""

    count: int
    each_bytes: int
    slots: int

    @property
    def total_bytes(self) -> int:
        return self.count * self.each_bytes * self.slots


@dataclass(frozen=True, slots=True)
class FitChoice:
    """The context ``--fit`` gives a bare llama-server (None: not modelled, or fit gives up)."""

    n_ctx: int | None
    reason: str
    n_gpu_layers: int | None = None
    """The layers fit offloads (``-ngl``), where it chooses them; None: it keeps the bare
    command's (every layer on the GPUs), or is not modelled."""
    overrides: tuple[str, ...] = ()
    """The ``-ot PATTERN=BUFT`` overrides fit adds: the expert tensors it keeps on the CPU."""


@dataclass(frozen=True, slots=True)
class Plan:
    """A deployment plan: what the engine allocates, against a budget, with its limits."""

    estimate: LlamaCppEstimate
    budget: Budget
    max_context: int
    max_context_per_sequence: int
    max_context_limit: ContextLimit
    max_parallel: int
    command: tuple[str, ...]
    pins: Pins = field(default_factory=Pins)
    best_quant: BestPreset = field(default_factory=lambda: BestPreset(None, None))
    min_gpus: int | None = None
    """The fewest GPUs of the first budgeted device's size that hold the whole model."""
    warnings: tuple[str, ...] = ()
    fit: FitChoice | None = None
    """What a bare llama-server's --fit would choose (the llama-server engine, -c not given)."""
    ollama: OllamaLaunch | None = None
    """The settings Ollama starts llama-server with (the ollama engine)."""
    checkpoints: ServerCheckpoints | None = None
    """llama-server's context checkpoints, for the models that take them."""
    prompt_cache_bytes: int | None = None
    """The most host memory llama-server's prompt cache may take as prompts are cached
    (``--cache-ram``; -1: no limit); None where there is no server (no plan was made for one)."""

    @property
    def needs(self) -> dict[str, int]:
        """Resident bytes per budgeted device (0 for a device holding nothing)."""
        used = self.estimate.by_device(resident=True)
        return {dev: used.get(dev, 0) for dev, _ in self.budget.devices}

    @property
    def needed_bytes(self) -> int:
        """The one figure compared with the budget: every device's resident bytes."""
        return self.estimate.resident_bytes

    @property
    def fits(self) -> bool:
        return fits(self.estimate, self.budget)

    @property
    def headroom_bytes(self) -> int:
        """The tightest device's spare bytes (negative when it does not fit)."""
        return min(self.budget.limit(d) - n for d, n in self.needs.items())

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)

    def verdict(self) -> str:
        b = self.budget
        verdict = "fits" if self.fits else "does NOT fit"
        if b.gpus:
            parts = [
                f"{d} {format_bytes(n)} of {format_bytes(b.limit(d))}"
                + ("" if n <= b.limit(d) else " (over)")
                for d, n in self.needs.items()
            ]
            return f"{verdict}: " + ", ".join(parts)
        need = format_bytes(self.needed_bytes)
        if self.fits:
            return f"fits: needs {need} of {format_bytes(b.memory_bytes)}"
        short = format_bytes(-self.headroom_bytes)
        return f"does NOT fit: needs {need} of {format_bytes(b.memory_bytes)} ({short} short)"


def memlock_limit() -> int | None:
    """This machine's soft RLIMIT_MEMLOCK in bytes; None when unlimited or unknown."""
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY or soft < 0 else int(soft)


def _warnings(spec: ModelSpec, estimate: LlamaCppEstimate, requested_ubatch: int) -> list[str]:
    out = []
    train = spec.n_ctx_train
    if train and estimate.n_ctx_seq > train:
        # llama-context.cpp: "n_ctx_seq (%u) > n_ctx_train (%u) -- possible training context
        # overflow"
        out.append(
            f"{estimate.n_ctx_seq:,} tokens per sequence is past the {train:,} the model was "
            "trained on; llama.cpp warns of a possible training context overflow"
        )
    s = estimate.settings
    if requested_ubatch > s.n_batch:
        out.append(
            f"-ub {requested_ubatch} is larger than -b {s.n_batch}; llama.cpp uses "
            f"-ub {estimate.n_ubatch} (the physical batch cannot exceed the logical one)"
        )
    if any(d.startswith("RPC") for d in s.gpus):
        out.append(RPC_WARNING)
    if s.load_mode in ("mlock", "mmap+mlock"):
        locked = sum(b.n_bytes for b in estimate.buffers if b.device == CPU and b.kind == "model")
        limit = memlock_limit()
        if limit is not None and limit < locked:
            # llama-mmap.cpp, llama_mlock::raw_lock: "failed to mlock ... buffer: ... Try
            # increasing RLIMIT_MEMLOCK ('ulimit -l' as root)"; the weights then stay unlocked.
            out.append(
                f"-lm {s.load_mode} locks {format_bytes(locked)} of weights, but this machine's "
                f"locked-memory limit (ulimit -l) is {format_bytes(limit)}: llama.cpp will fail "
                "to lock them and go on unlocked; raise the limit first"
            )
    # A CUDA device takes the large-batch matrix products of CPU layers too (op offload), so
    # its compute buffer exists even with -ngl 0. CPU RPC workers, one CUDA device in any
    # placement, and one device of any kind holding every layer, are scheduled as llama.cpp
    # schedules them; other splits are not yet.
    split = s.gpus and (s.n_gpu_layers > 0 or any(has_host_buffer(d) for d in s.gpus))
    scheduled = estimate.compute_method == "scheduled"
    if split and not (scheduled and scheduled_exactly(spec, s.gpus)):
        out.append(
            "compute buffers with more than one backend are estimated: membudget follows "
            "llama.cpp's scheduler with CPU RPC workers, with one CUDA device, and with "
            "every layer on one device (not yet for several GPUs with their pipeline copies, "
            "CPU layers beside a GPU other than CUDA, a Mamba scan CUDA cannot run, or a "
            "gated-delta-net hybrid on CUDA); weights, KV cache and output are exact"
        )
    return out


def _gpu_size(gpus: tuple[tuple[str, int], ...]) -> int:
    """The size "these GPUs" means: the first local GPU's, else the first device's."""
    return next((n for d, n in gpus if not d.startswith("RPC")), gpus[0][1])


@paced_call
def make_plan(
    spec: ModelSpec,
    settings: LlamaCppSettings,
    budget: Budget,
    rules: LlamaCppRules | None = None,
    model_path: str | None = None,
    pins: Pins | None = None,
    *,
    extras: bool = True,
    limits: bool = True,
) -> Plan:
    """Place, estimate, check against the budget and solve for the limits (``limits``), the best
    preset and the fewest GPUs (``extras``). Suggestions are made a level up, by the request
    layer, which knows how to apply them (:func:`membudget.request.run_plan`)."""
    pins = pins or Pins()
    if settings.n_parallel > LLAMA_MAX_SEQ:
        raise MembudgetError(
            f"--parallel {settings.n_parallel} is more than llama.cpp's {LLAMA_MAX_SEQ} sequences."
        )
    check_pins(spec, budget, pins)
    placer = placer_for(spec, settings, budget, rules, pins)
    solution = placer.solve(settings.n_ctx, settings.n_parallel)
    estimate = estimate_llamacpp(spec, solution.settings, rules)
    if fits(estimate, budget) != solution.fits:  # the placer and the estimate share one table
        raise MembudgetError(
            f"internal error: the placement of {spec.name} and its estimate disagree on fitting; "
            "please report it"
        )
    if limits:
        ctx, per_seq, limit = context_search(placer, settings.n_parallel, settings.kv_unified)
        most = parallel_search(placer, estimate.n_ctx_seq, settings.kv_unified)
    else:
        ctx, per_seq, limit, most = 0, 0, "memory", 0
    gpus = budget.gpus
    return Plan(
        estimate=estimate,
        budget=budget,
        max_context=ctx,
        max_context_per_sequence=per_seq,
        max_context_limit=limit,
        max_parallel=most,
        command=tuple(llamacpp_flags(estimate, model_path)),
        pins=pins,
        best_quant=best_preset(spec, settings, budget, rules, pins)
        if extras
        else BestPreset(None, None),
        min_gpus=(
            min_gpus(spec, settings, _gpu_size(gpus), budget.memory_bytes, rules)
            if gpus and extras and budget.pool_bytes is None
            else None
        ),
        warnings=tuple(_warnings(spec, estimate, settings.n_ubatch)),
    )
