"""What fits this machine: one exact sweep over models and presets.

For each model the candidates are the weights as stored, then each llama.cpp preset of
:data:`~membudget.plan.PRESET_LADDER` below them (never a requantisation upward: no F16 for a
model released at 1 bit, nothing above a GGUF's own type), best first. The first candidate
that fits ``min_ctx`` tokens of one sequence is the model's row, planned exactly as
``membudget plan MODEL [--quant P] --ctx MIN_CTX --parallel 1`` plans it (the same request, the
same planner): its largest context, its most parallel sequences at ``ctx``, whether every
layer sits on the GPUs, its needed bytes and its command; a candidate that does not fit
is asked of the placer alone. For vLLM and SGLang each checkpoint is swept as published, on
one GPU.

What does not change between candidates is computed once: the budget (the machine is read
once), the model as loaded, and each preset's retyped model. Models are independent of one
another, so :func:`sweep` spreads them over worker processes (``jobs``); each worker gets the
model as loaded and the machine as read here, so a row is the same whichever process made it.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal, TypeVar

from membudget._collector import pace_here, paced
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.plan import PRESET_LADDER, ContextLimit, check_pins, placer_for
from membudget.presets import apply_preset
from membudget.progress import advance, reporting
from membudget.request import (
    PlanRequest,
    llamacpp_plan,
    llamacpp_settings,
    request_budget,
    served_name,
    sglang_settings,
    vllm_settings,
)
from membudget.units import GIB

if TYPE_CHECKING:
    from membudget.engines.sglang import SglangEstimate, SglangSettings
    from membudget.engines.vllm import VllmEstimate, VllmSettings

__all__ = [
    "FitRow",
    "FitSweep",
    "SortKey",
    "candidates",
    "default_jobs",
    "fit_model",
    "sweep",
]

SortKey = Literal["params", "quality", "context", "headroom"]


@dataclass(frozen=True, slots=True)
class FitRow:
    """One model's best fit on the machine."""

    model: str
    """The catalogue name or the source as given."""
    name: str
    architecture: str
    n_params: int
    moe: bool
    preset: str
    """The weights' type: the stored one (``BF16``, a GGUF's ``Q4_K_M``) or the preset."""
    quant: str | None
    """``--quant`` for the command (None: as stored)."""
    quality: int
    """Rank of the preset, 0 best (the stored weights of a 16-bit model)."""
    max_context: int
    max_context_limit: ContextLimit
    max_parallel: int
    placement: Literal["gpu", "offload", "cpu"]
    """Every layer on the GPUs, some on the CPU beside them, or a machine without GPUs."""
    needed_bytes: int
    headroom_bytes: int
    kv_tokens_per_gib: int | None
    """Tokens of KV cache one GiB holds at this plan's cache types (None: no KV cache)."""
    command: tuple[str, ...]

    @property
    def gpu_only(self) -> bool:
        return self.placement == "gpu"


@dataclass(frozen=True, slots=True)
class FitSweep:
    rows: tuple[FitRow, ...]
    skipped: tuple[tuple[str, str], ...]
    """(model, why) for models that fit at no candidate or could not be planned."""


def _stored_label(spec: ModelSpec) -> str:
    label = spec.quant.file_type or "as stored"
    return {"bfloat16": "BF16", "float16": "F16", "float32": "F32"}.get(label, label)


def candidates(spec: ModelSpec) -> Iterator[tuple[str | None, ModelSpec]]:
    """The weights as stored, then every ladder preset strictly smaller per weight, best
    first; with each retyped model (retyped only when asked for)."""
    yield None, spec
    if not spec.tensors:
        return
    stored = spec.bits_per_weight
    for preset in PRESET_LADDER:
        if _NOMINAL_BITS[preset] > stored + 0.5:
            continue  # clearly upward: not even retyped
        retyped = apply_preset(spec, preset)
        if retyped.bits_per_weight < stored - 0.05:
            yield preset, retyped


def _quality(preset: str | None, spec: ModelSpec) -> int:
    if preset is None:
        # the stored weights rank where their bits per weight fall on the ladder
        return sum(1 for p in PRESET_LADDER if _NOMINAL_BITS[p] > spec.bits_per_weight + 0.05)
    return PRESET_LADDER.index(preset)


# nominal bits per weight of each ladder preset, for ranking stored types against them
_NOMINAL_BITS = {
    "F16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.5,
    "Q4_K_M": 4.8,
    "Q3_K_M": 3.9,
    "Q2_K": 2.9,
}


def fit_model(
    model: str,
    spec: ModelSpec,
    base: PlanRequest,
    probe: Callable[[], Hardware],
    min_ctx: int,
    ctx: int,
) -> FitRow | str:
    """``spec``'s row, or why it fits nowhere."""
    if base.engine == "vllm":
        return _fit_vllm(model, spec, base, probe, min_ctx, ctx)
    if base.engine == "sglang":
        return _fit_sglang(model, spec, base, probe, min_ctx, ctx)
    request = replace(base, ctx=min_ctx, parallel=1, source=model).resolved()
    budget = request_budget(request, probe)
    for preset, typed in candidates(spec):
        asked = replace(request, quant=preset)
        settings = llamacpp_settings(asked)
        # a candidate that does not fit needs no estimate of its placement: whether some
        # placement fits is the placer's answer, which make_plan checks its estimate against
        check_pins(typed, budget, asked.pins)
        if not placer_for(typed, settings, budget, pins=asked.pins).fits(
            settings.n_ctx, settings.n_parallel
        ):
            continue
        # the winner is planned as membudget plan plans it: the same request, the same call
        plan = llamacpp_plan(asked, spec, probe, extras=False)
        most = plan.max_parallel
        if ctx != min_ctx:
            at_ctx = llamacpp_plan(replace(asked, ctx=ctx), spec, probe, full=False)
            most = at_ctx.max_parallel if at_ctx.fits else 0
        e = plan.estimate
        s = e.settings
        gpu_only = bool(budget.gpus) and s.n_gpu_layers >= typed.n_layer + 1 and not s.n_cpu_moe
        kv_plain = e.kv_cache_bytes - e.kv_swa_bytes
        per_token = kv_plain / s.n_ctx if s.n_ctx and kv_plain else 0
        return FitRow(
            model=model,
            name=spec.name,
            architecture=spec.architecture,
            n_params=spec.n_params,
            moe=spec.is_moe,
            preset=preset or _stored_label(spec),
            quant=preset,
            quality=_quality(preset, spec),
            max_context=plan.max_context,
            max_context_limit=plan.max_context_limit,
            max_parallel=most,
            placement="gpu" if gpu_only else "offload" if budget.gpus else "cpu",
            needed_bytes=plan.needed_bytes,
            headroom_bytes=plan.headroom_bytes,
            kv_tokens_per_gib=int(GIB / per_token) if per_token else None,
            command=plan.command,
        )
    return f"does not fit {min_ctx:,} tokens at any preset down to {PRESET_LADDER[-1]}"


def _fit_vllm(
    model: str,
    spec: ModelSpec,
    base: PlanRequest,
    probe: Callable[[], Hardware],
    min_ctx: int,
    ctx: int,
) -> FitRow | str:
    from membudget.engines.vllm import estimate_vllm, max_model_len, vllm_command  # noqa: PLC0415

    def at(tp: int) -> tuple[PlanRequest, VllmSettings, VllmEstimate]:
        request = replace(
            base, ctx=min_ctx, max_model_len=min_ctx, source=model, tensor_parallel=tp
        )
        settings = vllm_settings(request, spec, probe)
        return request, settings, estimate_vllm(spec, settings)

    found = _fewest_gpus(base, probe, at)
    if found is None:
        return f"vLLM cannot serve one request of {min_ctx:,} tokens{_on_gpus(base, probe)}"
    request, settings, e = found
    at_ctx = estimate_vllm(spec, replace(settings, max_model_len=ctx)) if ctx != min_ctx else e
    per_token = e.page_bytes / e.block_size if e.block_size else 0
    return _as_published(
        model,
        spec,
        max_context=max_model_len(spec, settings),
        max_parallel=int(at_ctx.max_concurrency) if at_ctx.fits else 0,
        placement="cpu" if settings.platform == "cpu" else "gpu",
        needed_bytes=e.needed_bytes,
        headroom_bytes=e.requested_bytes - e.needed_bytes,
        kv_tokens_per_gib=int(GIB / per_token) if per_token else None,
        command=tuple(vllm_command(e, served_name(request, spec))),
    )


def _as_published(
    model: str,
    spec: ModelSpec,
    *,
    max_context: int,
    max_parallel: int,
    placement: Literal["gpu", "cpu"],
    needed_bytes: int,
    headroom_bytes: int,
    kv_tokens_per_gib: int | None,
    command: tuple[str, ...],
) -> FitRow:
    """The row of a checkpoint a serving engine runs as published (no preset)."""
    train = spec.n_ctx_train
    return FitRow(
        model=model,
        name=spec.name,
        architecture=spec.architecture,
        n_params=spec.n_params,
        moe=spec.is_moe,
        preset=_stored_label(spec),
        quant=None,
        quality=_quality(None, spec),
        max_context=max_context,
        max_context_limit="n_ctx_train" if train and max_context >= train else "memory",
        max_parallel=max_parallel,
        placement=placement,
        needed_bytes=needed_bytes,
        headroom_bytes=headroom_bytes,
        kv_tokens_per_gib=kv_tokens_per_gib,
        command=command,
    )


def _fit_sglang(
    model: str,
    spec: ModelSpec,
    base: PlanRequest,
    probe: Callable[[], Hardware],
    min_ctx: int,
    ctx: int,
) -> FitRow | str:
    """The checkpoint as published on one GPU, as ``membudget plan --engine sglang --ctx
    MIN_CTX`` plans it: its pool holds one request of ``min_ctx`` tokens."""
    from membudget.engines.sglang import (  # noqa: PLC0415
        estimate_sglang,
        longest_context,
        sglang_command,
    )

    def at(tp: int) -> tuple[PlanRequest, SglangSettings, SglangEstimate]:
        request = replace(base, ctx=min_ctx, source=model, tensor_parallel=tp)
        settings = sglang_settings(request, spec, probe)
        return request, settings, estimate_sglang(spec, settings)

    found = _fewest_gpus(base, probe, at)
    if found is None:
        return f"SGLang's token pool cannot hold one request of {min_ctx:,} tokens" + _on_gpus(
            base, probe
        )
    request, settings, e = found
    at_ctx = e if ctx == min_ctx else estimate_sglang(spec, replace(settings, context_length=ctx))
    return _as_published(
        model,
        spec,
        max_context=longest_context(spec, settings),
        max_parallel=at_ctx.max_total_num_tokens // max(at_ctx.context_length, 1),
        placement="gpu",
        needed_bytes=e.needed_bytes,
        headroom_bytes=settings.gpu_memory_bytes - e.needed_bytes,
        kv_tokens_per_gib=GIB // e.cell_bytes if e.cell_bytes else None,
        command=tuple(sglang_command(e, served_name(request, spec))),
    )


_S = TypeVar("_S")
_Served = TypeVar("_Served", bound="VllmEstimate | SglangEstimate")


def _tensor_parallel(base: PlanRequest, probe: Callable[[], Hardware]) -> list[int]:
    """The tensor-parallel sizes a serving engine is swept at, fewest GPUs first: 1, 2, 4, ...
    up to the GPUs given or detected (one on vLLM's CPU build)."""
    if base.platform == "cpu":
        return [1]
    n = len(base.gpu_bytes) if base.gpu_bytes else sum(1 for g in probe().gpus if not g.unified)
    sizes = [1]
    while sizes[-1] * 2 <= n:
        sizes.append(sizes[-1] * 2)
    return sizes


def _fewest_gpus(
    base: PlanRequest,
    probe: Callable[[], Hardware],
    at: Callable[[int], tuple[PlanRequest, _S, _Served]],
) -> tuple[PlanRequest, _S, _Served] | None:
    """The plan at the fewest GPUs (tensor parallel) where one request of the least context
    fits, or None; a size that does not divide the model's heads is passed over (one GPU's
    refusal is the model's, and is raised)."""
    for tp in _tensor_parallel(base, probe):
        try:
            found = at(tp)
        except InvalidArgumentError:
            if tp == 1:
                raise
            continue
        if found[2].fits:
            return found
    return None


def _on_gpus(base: PlanRequest, probe: Callable[[], Hardware]) -> str:
    most = _tensor_parallel(base, probe)[-1]
    return f" on up to {most} GPUs (tensor parallel)" if most > 1 else ""


def _needs_gpu(base: PlanRequest, probe: Callable[[], Hardware]) -> None:
    """Refuse a sweep for an engine that runs on NVIDIA GPUs (vLLM's CUDA build, SGLang)
    when none was given or detected: every row would fail for the same reason."""
    if base.engine not in ("vllm", "sglang") or base.platform == "cpu" or base.gpu_bytes:
        return
    if not any(not g.unified for g in probe().gpus):
        engine = "vLLM" if base.engine == "vllm" else "SGLang"
        raise InvalidArgumentError(
            "--gpu",
            InvalidArgumentError.NO_VALUE,
            f"is needed: {engine} runs on NVIDIA GPUs and none was detected",
        )


def default_jobs() -> int:
    """The CPUs this process may run on (``sched_getaffinity`` where the OS has it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def sweep(
    models: Iterable[tuple[str, Callable[[], ModelSpec]]],
    base: PlanRequest,
    probe: Callable[[], Hardware],
    *,
    min_ctx: int = 4096,
    ctx: int | None = None,
    keep: Callable[[ModelSpec], bool] = lambda _: True,
    jobs: int = 1,
) -> FitSweep:
    """Every model's row (models whose ``keep`` is false are left out), in the order given.
    With ``jobs`` > 1 the models are planned in that many worker processes."""
    with paced():
        return _sweep(models, base, probe, min_ctx, ctx, keep, jobs)


def _sweep(
    models: Iterable[tuple[str, Callable[[], ModelSpec]]],
    base: PlanRequest,
    probe: Callable[[], Hardware],
    min_ctx: int,
    ctx: int | None,
    keep: Callable[[ModelSpec], bool],
    jobs: int,
) -> FitSweep:
    cached = functools.cache(probe)
    _needs_gpu(base, cached)
    found: list[tuple[str, FitRow | str]] = []
    work: list[tuple[int, str, ModelSpec]] = []
    for model, load in models:
        try:
            spec = load()
        except MembudgetError as e:
            found.append((model, str(e)))
            continue
        if keep(spec):
            work.append((len(found), model, spec))
            found.append((model, ""))
    # the machine is read once, here; workers are handed what was read
    request_budget(replace(base, ctx=min_ctx, parallel=1).resolved(), cached)
    hardware = cached() if cached.cache_info().currsize else None
    jobs = max(1, min(jobs, len(work)))
    tasks = [(model, spec, base, hardware, min_ctx, ctx or min_ctx) for _, model, spec in work]
    total = len(tasks)
    if jobs == 1:
        answers = []
        for t in tasks:
            answers.append(_fit_task(t, cached))
            advance(len(answers), total, t[0])
    else:
        # Models of one geometry (a fine-tune, a longer-context release, a preset of another
        # entry) share their graphs and splits, which each process keeps: they go to one
        # worker together. Largest groups first (they search the most placements), so no
        # worker is left with a long one at the end; answers come back in the order given.
        groups: dict[object, list[int]] = {}
        for i, (_, spec, *_rest) in enumerate(tasks):
            groups.setdefault(_geometry(spec), []).append(i)
        batches = sorted(groups.values(), key=lambda g: -sum(tasks[i][1].weights.total for i in g))
        method = _start_method()
        context = multiprocessing.get_context(method)
        done: dict[int, FitRow | str] = {}

        def collect(submit: Callable[[list[int]], Future[list[FitRow | str]]]) -> None:
            """Each batch's answers as it ends, with a step of progress per model."""
            running = {submit(g): g for g in batches}
            for future in as_completed(running):
                g = running[future]
                done.update(zip(g, future.result(), strict=True))
                advance(len(done), total, tasks[g[-1]][0])

        if method == "fork":
            # forked workers inherit the tasks: each is handed only its indices (one sweep
            # at a time sets them)
            with _INHERITED_LOCK:
                _INHERITED[:] = tasks
                try:
                    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                        collect(lambda g: pool.submit(_fit_inherited, g))
                finally:
                    _INHERITED.clear()
        else:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
                collect(lambda g: pool.submit(_fit_batch, [tasks[i] for i in g]))
        answers = [done[i] for i in range(total)]
    for (at, model, _), answer in zip(work, answers, strict=True):
        found[at] = (model, answer)
    rows = [r for _, r in found if isinstance(r, FitRow)]
    skipped = [(m, r) for m, r in found if isinstance(r, str)]
    return FitSweep(tuple(rows), tuple(skipped))


def _start_method() -> str:
    """How workers start: forked where the OS forks and this process runs no other thread
    (the CLI: no interpreter to start, nothing to import again); otherwise spawned, a fresh
    interpreter, which is safe beside threads (the web server's)."""
    if "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


_Task = tuple[str, ModelSpec, PlanRequest, Hardware | None, int, int]


def _geometry(spec: ModelSpec) -> object:
    """What a model's graphs depend on: its architecture, layers and tensor shapes."""
    return (spec.architecture, spec.layers, tuple((t.name, t.shape) for t in spec.tensors))


_INHERITED: list[_Task] = []
"""The sweep's tasks, for workers forked while it runs (read-only there)."""
_INHERITED_LOCK = threading.Lock()


def _fit_inherited(batch: list[int]) -> list[FitRow | str]:
    """A forked worker's unit of work: the inherited tasks at these indices (the parent's
    progress display stays the parent's)."""
    with reporting(_silent):
        return [_fit_task(_INHERITED[i]) for i in batch]


def _silent(done: int, total: int, label: str) -> None:
    """A progress callback that shows nothing."""


def _fit_batch(tasks: list[_Task]) -> list[FitRow | str]:
    """A worker's unit of work: models of one geometry, planned one after the other (in a
    fresh interpreter, at the sweep's collector pace)."""
    pace_here()
    return [_fit_task(t) for t in tasks]


def _fit_task(task: _Task, probe: Callable[[], Hardware] | None = None) -> FitRow | str:
    """One model's row or why it has none (a worker's unit of work)."""
    model, spec, base, hardware, min_ctx, ctx = task
    if probe is None:
        from membudget.hardware import detect  # noqa: PLC0415 - reached only if unread

        probe = functools.cache(detect) if hardware is None else lambda: hardware
    try:
        return fit_model(model, spec, base, probe, min_ctx, ctx)
    except MembudgetError as e:
        return str(e)


def sort_rows(rows: Iterable[FitRow], key: SortKey) -> list[FitRow]:
    """GPU-only fits first, then with offload; within each, by ``key`` (best first)."""
    order: dict[SortKey, Callable[[FitRow], tuple[float, ...]]] = {
        "params": lambda r: (-r.n_params, r.quality),
        "quality": lambda r: (r.quality, -r.n_params),
        "context": lambda r: (-r.max_context, -r.n_params),
        "headroom": lambda r: (-r.headroom_bytes, -r.n_params),
    }
    by = order[key]
    return sorted(rows, key=lambda r: (not r.gpu_only, *by(r)))
