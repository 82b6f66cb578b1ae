"""What llama.cpp allocates: model, KV (non-SWA and SWA), recurrent-state, output and compute
buffers, per device.

The rules follow llama.cpp's own code and were checked against llama.cpp commit ``0c1e570``
(2026-10-01, the one llama-cpp-python 0.3.36 vendors); :class:`LlamaCppRules` keeps the
version-dependent ones switchable:

- ``n_ctx`` is rounded up to 256 (``llama-context.cpp``). Without ``--kv-unified`` each of the
  ``n_seq_max`` sequences gets its own stream of ``pad256(n_ctx / n_seq_max)`` cells.
- The SWA cache holds ``pad256(min(n_ctx_seq, n_swa * (n_seq_max if unified else 1) + n_ubatch))``
  cells unless ``--swa-full`` (``llama-kv-cache-iswa.cpp``).
- K is ``n_head_kv * head_dim_k`` values per token and layer; V likewise, except that MLA
  models cache K only (``has_v = !is_mla``). Without flash attention V rows are padded to the
  widest layer when their widths differ.
- Recurrent layers keep ``max(1, n_seq_max)`` F32 conv and SSM states (``llama-memory-recurrent.cpp``).
- The output buffer holds ``n_vocab`` logits (and ``n_embd`` embeddings when asked) for
  ``n_seq_max`` outputs (``llama_context::output_reserve``).
- Each buffer's tensors are padded to the backend's alignment (32 bytes on the CPU).
- The compute buffer is what ggml-alloc reserves for the worst-case graph: ``n_ubatch``
  tokens, one output per token, attention over the full cache. :mod:`.graph` rebuilds
  that graph op by op and replays the allocator (exact for the architectures it knows);
  :mod:`.phases` is the phase model for the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from membudget.engines.llamacpp.devices import (
    CPU,
    FFN_DENSE_REGEX,
    OP_OFFLOAD_MIN_BATCH,
    HostPins,
    cuda_runs_flash_attn,
    cuda_runs_ssm_scan,
    ffn_overrides,
    has_host_buffer,
    layer_devices,
    offload_device,
    tensor_device,
)
from membudget.engines.llamacpp.layout import (
    Resolved,
    WeightTable,
    cache_table,
    compute_for,
    pad,
    repacks,
    split_compute,
    weight_table,
)
from membudget.errors import InvalidArgumentError
from membudget.kv import cache_type
from membudget.model import ModelSpec, block_index

__all__ = [
    "LOAD_MODES",
    "Buffer",
    "BufferKind",
    "ComputeMethod",
    "FlashAttn",
    "LlamaCppEstimate",
    "LlamaCppRules",
    "LlamaCppSettings",
    "LoadMode",
    "estimate_llamacpp",
    "graph_bytes",
    "host_compute_bytes",
    "host_pins",
    "output_bytes",
    "repack_types",
    "repack_types_for",
    "resolve",
    "scheduled_exactly",
    "scheduled_split",
]

FlashAttn = Literal["on", "off", "auto"]
LoadMode = Literal["auto", "mmap", "none", "dio", "mlock", "mmap+mlock"]
LOAD_MODES: tuple[LoadMode, ...] = ("auto", "mmap", "none", "dio", "mlock", "mmap+mlock")
# llama-model-loader.cpp: use_mmap for auto, mmap and mmap+mlock; llama-model.cpp: use_mlock
# for mlock and mmap+mlock (host buffers locked, or the mapping locked as it is read).
MAPPED_MODES = frozenset({"auto", "mmap", "mmap+mlock"})
LOCKED_MODES = frozenset({"mlock", "mmap+mlock"})
BufferKind = Literal["model", "kv", "kv_swa", "recurrent", "output", "compute"]
ComputeMethod = Literal["simulated", "scheduled", "phase model"]
_F32 = 4


@dataclass(frozen=True, slots=True)
class LlamaCppRules:
    """Version-dependent rules, so an older build can be described without being wrong."""

    version: str = "0c1e570 (2026-10-01)"
    ctx_pad: int = 256
    """``n_ctx`` is padded to this (256 since mid 2025; 32 before)."""
    swa_pad: int = 256
    """The SWA cache size is padded to this after the min (256 since late 2025)."""
    mla_k_only: bool = True
    """MLA caches K only (the latent); older builds also kept a V cache of kv_lora_rank."""
    alignment: int = 32
    """Tensor alignment inside a CPU buffer (ggml TENSOR_ALIGNMENT)."""
    repack_types: frozenset[str] | None = None
    """Weight types the CPU backend repacks into a CPU_REPACK buffer; ``None`` asks this
    machine's CPU flags (:func:`repack_types_for`)."""
    simulate_graph: bool = True
    """Size the compute buffer by replaying ggml-alloc over the rebuilt graph
    (:mod:`.graph`); ``False`` uses the phase model (:mod:`.phases`), which
    does not depend on the graph's exact node order."""
    attn_rotation: bool = True
    """A quantised K or V cache with head dims that are multiples of 64 multiplies Q, K and V by
    a Hadamard matrix (added in 2026; ``LLAMA_ATTN_ROT_DISABLE=1`` turns it off)."""


@dataclass(frozen=True, slots=True)
class LlamaCppSettings:
    """The llama.cpp settings that change memory, with llama-server's defaults."""

    n_ctx: int = 4096
    n_batch: int = 2048
    n_ubatch: int = 512
    n_parallel: int = 1
    kv_unified: bool = False
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: FlashAttn = "auto"
    swa_full: bool = False
    embeddings: bool = False
    repack: bool = True
    """CPU weight repacking (llama.cpp's extra buffer types; ``--no-repack`` turns it off)."""
    n_gpu_layers: int = 0
    """``-ngl``: how many of the ``n_layer + 1`` slots (output last) go to the GPUs."""
    gpus: tuple[str, ...] = ()
    """GPU backend names, as llama.cpp names its devices: ``("CUDA0", "CUDA1")``."""
    tensor_split: tuple[float, ...] = ()
    """``-ts`` proportions per GPU; empty means equal shares."""
    n_cpu_moe: int = 0
    """``--n-cpu-moe``: the first N layers keep their routed experts on the CPU."""
    load_mode: LoadMode = "auto"
    """``-lm/--load-mode`` (common/arg.cpp): ``auto`` and ``mmap`` map the file, and the CPU's
    weights are a span of the mapping; ``none`` and ``dio`` read them into a buffer of their own
    (``CPU``, or the GPU backend's host buffer), so nothing is reported twice or reclaimable."""
    cpu_devices: tuple[str, ...] = ()
    """Devices (RPC workers) whose backend is a CPU: their buffers are allocated as the CPU
    backend does (no row padding, 32-byte alignment); ggml-rpc asks the worker's own backend
    (``ggml_backend_rpc_buffer_type_get_alloc_size``). Other devices follow CUDA's rules."""
    n_outputs_max: int = 0
    """``llama_context_params.n_outputs_max``: the most logits rows one batch may ask for; 0
    means ``n_batch`` (the C API's default). llama-server sets it to ``n_parallel`` (one token a
    sequence without speculative decoding; ``n_batch`` for embeddings), which shrinks the
    worst-case graph's logits (tools/server/server-context.cpp ``server_output_limits``)."""

    no_host: bool = False
    """``--no-host``: no pinned host buffer for the CPU's weights, so a CPU with a GPU beside
    it repacks as it would alone."""
    tensor_overrides: tuple[tuple[str, str], ...] = ()
    """``-ot PATTERN=BUFFER_TYPE`` in the order given (the first match wins); membudget plans
    ``CPU`` as the buffer type."""
    n_cpu_ffn: int = 0
    """``-ncffn``: the dense FFN weights of the first N layers stay on the CPU."""
    rope_flags: tuple[str, ...] = ()
    """RoPE flags passed through to the command (they change no buffer; what they change of
    the trained context is applied to the model before planning)."""

    def __post_init__(self) -> None:
        for pattern, buft in self.tensor_overrides:
            if buft != "CPU":
                raise InvalidArgumentError(
                    "--override-tensor",
                    f"{pattern}={buft}",
                    "names a buffer type membudget does not plan; it plans PATTERN=CPU",
                )
            try:
                re.compile(pattern)
            except re.error as e:
                raise InvalidArgumentError(
                    "--override-tensor", f"{pattern}={buft}", f"is not a regular expression: {e}"
                ) from None
        for name in ("n_ctx", "n_batch", "n_ubatch", "n_parallel", "n_outputs_max", "n_cpu_ffn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(name, value, "must be a non-negative integer")
        if self.n_batch < 1 or self.n_ubatch < 1:
            raise InvalidArgumentError("n_ubatch", self.n_ubatch, "must be at least 1")
        if self.load_mode not in LOAD_MODES:
            raise InvalidArgumentError(
                "load_mode", self.load_mode, f"must be one of {', '.join(LOAD_MODES)}"
            )
        if self.flash_attn not in ("on", "off", "auto"):
            raise InvalidArgumentError("flash_attn", self.flash_attn, "must be on, off or auto")
        cache_type(self.cache_type_k)
        cache_type(self.cache_type_v)


@dataclass(frozen=True, slots=True)
class Buffer:
    """One allocation llama.cpp reports, on one device."""

    device: str
    kind: BufferKind
    n_bytes: int
    detail: str = ""
    reclaimable_bytes: int = 0
    """Part of ``n_bytes`` the OS may drop under pressure: memory-mapped weights that were
    copied into CPU_REPACK buffers are clean file pages, read once at load."""


@dataclass(frozen=True, slots=True)
class LlamaCppEstimate:
    """Every buffer llama.cpp allocates for a model and settings, with the resolved settings."""

    spec: ModelSpec
    settings: LlamaCppSettings
    rules: LlamaCppRules
    n_ctx: int
    n_ctx_seq: int
    n_seq_max: int
    n_stream: int
    n_batch: int
    n_ubatch: int
    kv_size: int
    swa_size: int
    flash_attn: bool
    buffers: tuple[Buffer, ...] = field(default=())
    compute_method: ComputeMethod = "phase model"
    """How the compute buffer was sized: ``"simulated"`` replays ggml-alloc over the rebuilt
    graph; ``"phase model"`` takes the largest phase (architectures without a graph builder)."""

    def _sum(self, *kinds: BufferKind) -> int:
        return sum(b.n_bytes for b in self.buffers if b.kind in kinds)

    @property
    def weights_bytes(self) -> int:
        return self._sum("model")

    @property
    def kv_cache_bytes(self) -> int:
        return self._sum("kv", "kv_swa")

    @property
    def kv_swa_bytes(self) -> int:
        return self._sum("kv_swa")

    @property
    def recurrent_state_bytes(self) -> int:
        return self._sum("recurrent")

    @property
    def output_bytes(self) -> int:
        return self._sum("output")

    @property
    def compute_bytes(self) -> int:
        return self._sum("compute")

    @property
    def total_bytes(self) -> int:
        return sum(b.n_bytes for b in self.buffers)

    def by_device(self, resident: bool = False) -> dict[str, int]:
        """Bytes per device as llama.cpp reports them, or (``resident``) less what the OS
        can reclaim, which is what has to fit."""
        out: dict[str, int] = {}
        for b in self.buffers:
            n = b.n_bytes - (b.reclaimable_bytes if resident else 0)
            out[b.device] = out.get(b.device, 0) + n
        return out

    @property
    def resident_bytes(self) -> int:
        return self.total_bytes - sum(b.reclaimable_bytes for b in self.buffers)


def _resolve_flash_attn(
    setting: FlashAttn, type_v: str, spec: ModelSpec, devices: tuple[str, ...]
) -> bool:
    # "auto" enables flash attention unless it would run on another device than the layer's
    # cache (llama-context.cpp, sched_reserve: "Flash Attention was auto, set to disabled"):
    # the CPU runs every head size; CUDA only those it has kernels for. membudget decides by
    # the devices given (its printed command then pins -fa).
    on = setting == "on" or (
        setting == "auto"
        and not (any(d.startswith("CUDA") for d in devices) and not cuda_runs_flash_attn(spec))
    )
    if not on and cache_type(type_v).name not in ("F16", "F32", "BF16"):
        # llama-context.cpp, llama_init_from_model: "quantized V cache requires flash_attn".
        raise InvalidArgumentError(
            "--cache-type-v",
            type_v,
            "is a quantised V cache, which llama.cpp allows only with flash attention on",
        )
    return on


def repack_types_for(flags: frozenset[str], arch: str) -> frozenset[str]:
    """Weight types ggml's CPU backend repacks on a CPU with ``flags``
    (``ggml-cpu/repack.cpp``, ``ggml_repack_get_optimal_repack_type``)."""
    if arch in ("x86_64", "amd64", "i686"):
        types = set()
        if "avx2" in flags:
            types |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
        if "avx512f" in flags:
            types.add("Q2_K")
        return frozenset(types)
    if arch in ("aarch64", "arm64"):
        types = set()
        if "asimddp" in flags or "dotprod" in flags:
            types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4", "Q8_0", "Q1_0"}
        return frozenset(types)
    return frozenset()


def repack_types(
    s: LlamaCppSettings, r: LlamaCppRules, devices: tuple[str, ...] | None = None
) -> frozenset[str]:
    """The weight types the CPU backend repacks under ``s`` and ``r`` with ``devices`` (default
    ``s.gpus``) beside it: none with ``--no-repack``, and none when a device offers a pinned host
    buffer (CUDA) and ``--no-host`` is not given, since that buffer comes before the CPU's extra
    buffer types (llama-model.cpp ``make_cpu_buft_list``)."""
    if not s.repack:
        return frozenset()
    if not s.no_host and any(has_host_buffer(d) for d in (s.gpus if devices is None else devices)):
        return frozenset()
    if r.repack_types is not None:
        return r.repack_types
    from membudget.hardware import cpu_flags, machine_arch  # noqa: PLC0415

    return repack_types_for(cpu_flags(), machine_arch())


def host_pins(
    spec: ModelSpec, s: LlamaCppSettings, devices: tuple[str, ...] | None = None
) -> HostPins:
    """The weights that stay in host memory under ``s`` with ``devices`` (default ``s.gpus``):
    ``-ot PATTERN=CPU``, ``-ncffn``'s patterns, and ``ssm_a`` where CUDA cannot run the scan."""
    gpus = s.gpus if devices is None else devices
    patterns = tuple(p for p, _ in s.tensor_overrides)
    patterns += ffn_overrides(s.n_cpu_ffn, FFN_DENSE_REGEX)
    cuda = any(d.startswith("CUDA") for d in gpus)
    return HostPins(patterns, cuda and not cuda_runs_ssm_scan(spec))


def resolve(spec: ModelSpec, s: LlamaCppSettings, r: LlamaCppRules) -> Resolved:
    """llama.cpp's context figures for ``s`` (``llama_context`` constructor and
    ``llama_kv_cache_iswa``): padded context, streams, batch clamps, cache and window cells.
    Settings llama.cpp refuses raise :class:`InvalidArgumentError` with its reason."""
    if spec.mla is not None and spec.mla.compressed_cache and s.cache_type_k != s.cache_type_v:
        # llama-context.cpp, llama_init_from_model: "model does not support different K (%s)
        # and V (%s) cache types" when hparams.is_mla() (V is a view of the cached latent).
        raise InvalidArgumentError(
            "--cache-type-v",
            s.cache_type_v,
            f"differs from --cache-type-k {s.cache_type_k}: llama.cpp refuses different K and V "
            f"cache types for {spec.name} (MLA caches one latent for both)",
        )
    fa = _resolve_flash_attn(s.flash_attn, s.cache_type_v, spec, s.gpus)
    n_seq = max(1, s.n_parallel)
    n_ctx = pad(s.n_ctx or spec.n_ctx_train or 4096, r.ctx_pad)
    if s.kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = pad(n_ctx // n_seq, r.ctx_pad)
        n_ctx = n_ctx_seq * n_seq
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch)
    kv_size = n_ctx_seq
    n_swa = spec.sliding_window
    swa_size = 0
    if n_swa:
        swa_size = (
            kv_size
            if s.swa_full
            else pad(min(kv_size, n_swa * (n_seq if s.kv_unified else 1) + n_ubatch), r.swa_pad)
        )
    return Resolved(
        # llama-context.cpp: n_outputs_max == 0 means cparams.n_batch
        n_outputs_max=s.n_outputs_max or n_batch,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq=n_seq,
        n_stream=1 if s.kv_unified else n_seq,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        kv_size=kv_size,
        swa_size=swa_size,
        flash_attn=fa,
    )


def graph_bytes(
    spec: ModelSpec, res: Resolved, s: LlamaCppSettings, r: LlamaCppRules
) -> tuple[int, bool]:
    """The compute buffer of one backend holding layers, and whether the graph was simulated
    (:func:`~.layout.compute_for` with these settings and rules)."""
    return compute_for(
        spec,
        res,
        s.cache_type_k,
        s.cache_type_v,
        r.alignment,
        r.attn_rotation,
        r.simulate_graph,
    )


def output_bytes(spec: ModelSpec, s: LlamaCppSettings, n_seq: int) -> int:
    """The output buffer: ``n_vocab`` logits (and ``n_embd`` embeddings when asked) for
    ``n_seq`` outputs, in F32 (``llama_context::output_reserve``)."""
    floats = spec.n_vocab * n_seq + (
        spec.n_embd * n_seq if s.embeddings or spec.embedding_only else 0
    )
    return floats * _F32


def scheduled_split(
    spec: ModelSpec, res: Resolved, s: LlamaCppSettings, r: LlamaCppRules, slots: list[str]
) -> dict[str, int] | None:
    """Every backend's compute buffer as llama.cpp's scheduler splits the graph over the
    devices of ``slots`` (:func:`~.layout.split_compute`): with pipeline parallelism when
    several devices hold every layer (llama-context.cpp, ``llama_context``: more than one
    device, ``n_gpu_layers`` past ``n_layer``, no tensor overrides). None for the placements
    the model does not cover: several devices other than CPU RPC workers, and a device other
    than CUDA or a CPU RPC worker beside CPU layers."""
    if not s.gpus:
        return None
    workers = all(d in s.cpu_devices for d in s.gpus)
    alone = len(s.gpus) == 1 and all(d == s.gpus[0] for d in slots)
    # one CUDA device takes the large-batch ops of CPU layers too (op offload), -ngl 0 included
    cuda = len(s.gpus) == 1 and s.gpus[0].startswith("CUDA")
    if all(d == CPU for d in slots) and not cuda:
        return None
    if not (workers or alone or cuda):
        # Checked against the real engine: CPU RPC workers in any placement, one CUDA device
        # in any, and one device of any kind holding every layer. Not yet: several GPUs
        # (their pipeline copies follow the same rules, but no multi-GPU log pins them).
        return None
    if not workers and s.gpus[0].startswith("CUDA") and not cuda_runs_ssm_scan(spec):
        return None  # the scan runs on the host beside its ssm_a: a split not checked yet
    index = {d: i for i, d in enumerate(s.gpus)}
    pins = host_pins(spec, s)
    pipeline = (
        len(s.gpus) > 1
        and s.n_gpu_layers > spec.n_layer
        # llama-server writes -ncmoe, -cmoe and -ncffn as tensor overrides
        and not (s.n_cpu_moe or pins.patterns)
    )
    split = split_compute(
        spec,
        res,
        s.cache_type_k,
        s.cache_type_v,
        r.attn_rotation,
        tuple((d, d in s.cpu_devices) for d in s.gpus),
        tuple(index.get(d, len(s.gpus)) for d in slots),
        s.n_cpu_moe,
        pipeline,
        # llama-context.cpp, graph_get_cb: with every layer offloaded (or a batch under 32
        # tokens) each layer's norm runs on its layer's device
        s.n_gpu_layers > spec.n_layer or res.n_tokens < 32,
        pins,
    )
    if split is None:
        return None
    return dict(zip((*s.gpus, CPU), split, strict=True))


def scheduled_exactly(spec: ModelSpec, devices: tuple[str, ...]) -> bool:
    """Whether :func:`scheduled_split` matched llama.cpp's report to the 0.01 MiB on these
    devices for every case tried (tests/test_cuda_logs.py, tests/test_llama_server.py): not
    for a gated-delta-net hybrid on CUDA, which is a few KiB off in some settings."""
    recurrent = spec.recurrent.kind if spec.recurrent is not None else ""
    return not (recurrent == "gated_delta_net" and any(d.startswith("CUDA") for d in devices))


def host_compute_bytes(spec: ModelSpec, n_tokens: int) -> int:
    """The CPU's share of the graph when every layer is on a GPU: the embedding rows it feeds
    them (an estimate, for the placements the scheduler model does not cover)."""
    return 3 * spec.n_embd * n_tokens * _F32


def _mapped_span(
    spec: ModelSpec,
    slots: list[str],
    n_cpu_moe: int,
    repack: frozenset[str],
    pins: HostPins | None = None,
) -> int | None:
    """Bytes of the CPU_Mapped buffers llama.cpp reports: per file, the span from the first
    to the last tensor it keeps in the mapping, whatever lies between (offloaded or repacked
    tensors included) (``llama_model_loader::get_mapping_range``). None when the tensors' file
    offsets are not known (a catalogue entry, a requantised model)."""
    if not spec.tensors:
        return None
    spans: dict[int, tuple[int, int]] = {}
    for t in spec.tensors:
        il = block_index(t.name)
        if spec.n_layer_mtp and il is not None and il >= spec.n_layer:
            continue  # not loaded (TENSOR_SKIP)
        if tensor_device(t.name, slots, n_cpu_moe, pins) != CPU or repacks(t, repack):
            continue
        if t.offset is None:
            return None
        first, end = spans.get(t.part, (t.offset, t.offset + t.n_bytes))
        spans[t.part] = (min(first, t.offset), max(end, t.offset + t.n_bytes))
    return sum(end - first for first, end in spans.values())


def _weight_buffers(
    w: WeightTable,
    slots: list[str],
    n_cpu_moe: int,
    span: int | None = None,
    cpu_devices: tuple[str, ...] = (),
    mapped: bool = True,
    locked: bool = False,
) -> list[Buffer]:
    """The model buffers: per device, and the CPU's as llama.cpp reports it (the mapped
    ``span`` when known, else the tensors' sum), with what the OS may reclaim of it: the pages
    that nothing reads (offloaded tensors between mapped ones, repacked tensors' originals),
    none when ``locked`` (mlock keeps every page of the span in RAM)."""
    if w.flat_bytes:
        return [Buffer(CPU, "model", w.flat_bytes, "weights")]
    per_device: dict[str, int] = {CPU: w.input_bytes}
    repacked = w.input_repack
    for i, dev in enumerate(slots):
        if dev == CPU:
            per_device[CPU] += w.cpu_dense[i] + w.cpu_exps[i]
            repacked += w.repack_dense[i] + w.repack_exps[i]
            continue
        host = dev in cpu_devices
        per_device[dev] = per_device.get(dev, 0) + (w.cpu_dense[i] if host else w.gpu_dense[i])
        if i < n_cpu_moe:
            per_device[CPU] += w.cpu_exps[i]
            repacked += w.repack_exps[i]
        else:
            per_device[dev] += w.cpu_exps[i] if host else w.gpu_exps[i]
        if i == len(slots) - 1:
            per_device[dev] += w.tied_output_cpu if host else w.tied_output_gpu
    reclaimable = repacked
    if not mapped:
        # read into memory: the repacked tensors' originals are not kept, nothing is mapped
        per_device[CPU] -= repacked
        reclaimable = 0
    elif span is not None:
        read = per_device[CPU] - repacked  # the mapped tensors llama.cpp reads from the file
        per_device[CPU] = max(span, read)
        reclaimable = per_device[CPU] - read
    if locked:
        reclaimable = 0
    out = [
        Buffer(
            dev,
            "model",
            n,
            ("weights, memory-mapped" if mapped else "weights, read into memory")
            if dev == CPU
            else "weights",
            reclaimable_bytes=reclaimable if dev == CPU else 0,
        )
        for dev, n in per_device.items()
        if n or dev != CPU
    ]
    if repacked:
        out.append(Buffer(CPU, "model", repacked, "CPU_REPACK copies of matrix weights"))
    return out


def estimate_llamacpp(
    spec: ModelSpec,
    settings: LlamaCppSettings | None = None,
    rules: LlamaCppRules | None = None,
) -> LlamaCppEstimate:
    """Predict llama.cpp's buffers for ``spec`` under ``settings``, per device.

    With ``n_gpu_layers`` and ``gpus`` set, layers, their KV caches and states go to the GPUs as
    :mod:`.devices` describes. Checked against llama.cpp's CPU build, llama-server with RPC
    workers, and a CUDA llama-server's logs (tests/test_cuda_logs.py)."""
    s = settings or LlamaCppSettings()
    r = rules or LlamaCppRules()
    res = resolve(spec, s, r)
    slots = layer_devices(spec.n_layer, s.n_gpu_layers, s.gpus, s.tensor_split)
    types = repack_types(s, r)
    pins = host_pins(spec, s)
    w = weight_table(spec, r.alignment, types, pins)
    span = _mapped_span(spec, slots, s.n_cpu_moe, types, pins)
    mapped = s.load_mode in MAPPED_MODES
    locked = s.load_mode in LOCKED_MODES
    buffers = _weight_buffers(w, slots, s.n_cpu_moe, span, s.cpu_devices, mapped, locked)
    c = cache_table(spec, res, s.cache_type_k, s.cache_type_v, r.alignment, r.mla_k_only)
    # A slot's caches as its device allocates them: CUDA's rules on a GPU, the CPU backend's
    # on the CPU and on CPU RPC workers.
    gpu_slot = [d != CPU and d not in s.cpu_devices for d in slots]
    for kind, (cpu_col, gpu_col), detail in (
        ("kv", (c.kv, c.kv_gpu), f"{res.kv_size} cells x {res.n_stream} stream(s)"),
        ("kv_swa", (c.swa, c.swa_gpu), f"{res.swa_size} cells x {res.n_stream} stream(s)"),
        ("recurrent", (c.recurrent, c.recurrent_gpu), f"{res.n_seq} sequence state(s)"),
    ):
        per_device: dict[str, int] = {}
        for i, dev in enumerate(slots):
            n = gpu_col[i] if gpu_slot[i] else cpu_col[i]
            if n:
                per_device[dev] = per_device.get(dev, 0) + n
        buffers.extend(Buffer(dev, kind, n, detail) for dev, n in per_device.items())  # type: ignore[arg-type]
    # The output buffer is host memory (pinned when the output layer is on a GPU).
    buffers.append(
        Buffer(CPU, "output", output_bytes(spec, s, res.n_seq), f"logits for {res.n_seq} output(s)")
    )
    graph, simulated = graph_bytes(spec, res, s, r)
    method: ComputeMethod = "simulated" if simulated else "phase model"
    n_tokens = res.n_tokens
    detail = f"worst case: {n_tokens} tokens over {res.kv_size} cells ({method})"
    used = list(dict.fromkeys(slots))
    # Each backend holding layers reserves the graph's working set, and so does the device that
    # takes the CPU layers' large-batch products; a host that only feeds the GPUs keeps the
    # graph's inputs and the token rows it looks up.
    first = offload_device(s.gpus)
    if first >= 0 and s.gpus[first] not in used and res.n_tokens >= OP_OFFLOAD_MIN_BATCH:
        used.append(s.gpus[first])
    split = scheduled_split(spec, res, s, r, slots) if simulated else None
    if split is not None:
        method = "scheduled"
        detail = detail.replace("simulated", method)
        for dev, n in split.items():
            if n <= 1:
                continue  # llama.cpp reports a backend's compute buffer past one byte
            what = detail if dev in used else "graph inputs and token rows (scheduled)"
            buffers.append(Buffer(dev, "compute", n, what))
    else:
        buffers.extend(Buffer(dev, "compute", graph, detail) for dev in used)
    if CPU not in used and split is None:
        buffers.append(
            Buffer(
                CPU,
                "compute",
                host_compute_bytes(spec, n_tokens),
                "host side of the graph (estimate)",
            )
        )
    return LlamaCppEstimate(
        spec=spec,
        settings=s,
        rules=r,
        n_ctx=res.n_ctx,
        n_ctx_seq=res.n_ctx_seq,
        n_seq_max=res.n_seq,
        n_stream=res.n_stream,
        n_batch=res.n_batch,
        n_ubatch=res.n_ubatch,
        kv_size=res.kv_size,
        swa_size=res.swa_size,
        flash_attn=res.flash_attn,
        buffers=tuple(buffers),
        compute_method=method,
    )
