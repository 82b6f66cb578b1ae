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
  tokens, one output per token, attention over the full cache. :mod:`.llamacpp_graph` rebuilds
  that graph op by op and replays the allocator (exact for the architectures it knows);
  :mod:`.llamacpp_compute` is the phase model for the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from membudget.engines.llamacpp_compute import compute_bytes
from membudget.engines.llamacpp_devices import CPU, cuda_alloc_bytes, layer_devices, tensor_device
from membudget.engines.llamacpp_graph import GraphSettings, graph_compute_bytes
from membudget.errors import InvalidArgumentError
from membudget.kv import cache_layers, cache_type, recurrent_state_dims, row_bytes
from membudget.model import ModelSpec, TensorSpec, block_index

__all__ = [
    "Buffer",
    "BufferKind",
    "ComputeMethod",
    "FlashAttn",
    "LlamaCppEstimate",
    "LlamaCppRules",
    "LlamaCppSettings",
    "estimate_llamacpp",
    "repack_types_for",
]

FlashAttn = Literal["on", "off", "auto"]
BufferKind = Literal["model", "kv", "kv_swa", "recurrent", "output", "compute"]
ComputeMethod = Literal["simulated", "phase model"]
_F32 = 4


def _pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


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
    (:mod:`.llamacpp_graph`); ``False`` uses the phase model (:mod:`.llamacpp_compute`), which
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

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_batch", "n_ubatch", "n_parallel"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InvalidArgumentError(name, value, "must be a non-negative integer")
        if self.n_batch < 1 or self.n_ubatch < 1:
            raise InvalidArgumentError("n_ubatch", self.n_ubatch, "must be at least 1")
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


def _resolve_flash_attn(setting: FlashAttn, type_v: str) -> bool:
    # "auto" enables flash attention where the backend supports it, which the CPU and CUDA
    # backends do for every head size llama.cpp ships (llama-context.cpp, flash_attn_type).
    on = setting != "off"
    if not on and cache_type(type_v).name not in ("F16", "F32", "BF16"):
        raise InvalidArgumentError(
            "cache_type_v",
            type_v,
            "is quantised, which llama.cpp allows only with flash attention on",
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


def _repack_bytes(tensors: list[TensorSpec], types: frozenset[str], alignment: int) -> int:
    """Matrix weights multiplied by activations (never ``token_embd``, read by row lookup)
    whose type repacks and whose row count is a multiple of 8 are copied to CPU_REPACK."""
    total = 0
    for t in tensors:
        if (
            t.type_name in types
            and len(t.shape) in (2, 3)
            and t.shape[1] % 8 == 0
            and t.name != "token_embd.weight"
        ):
            total += _pad(t.n_bytes, alignment)
    return total


def _mtp_block(name: str, spec: ModelSpec) -> bool:
    """Whether tensor ``name`` belongs to a multi-token-prediction block after the trunk."""
    if not spec.n_layer_mtp:
        return False
    il = block_index(name)
    return il is not None and il >= spec.n_layer


def _model_buffers(
    spec: ModelSpec, s: LlamaCppSettings, r: LlamaCppRules, slots: list[str]
) -> list[Buffer]:
    if not spec.tensors:
        return [Buffer(CPU, "model", spec.weights.total, "weights")]
    per_device: dict[str, int] = {}
    on_cpu: list[TensorSpec] = []
    for t in spec.tensors:
        if _mtp_block(t.name, spec):
            continue  # llama.cpp skips the MTP blocks' tensors (TENSOR_SKIP) unless drafting
        dev = tensor_device(t.name, slots, s.n_cpu_moe)
        if dev == CPU:
            on_cpu.append(t)
            per_device[CPU] = per_device.get(CPU, 0) + _pad(t.n_bytes, r.alignment)
        else:
            per_device[dev] = per_device.get(dev, 0) + cuda_alloc_bytes(t)
    repacked = 0
    if s.repack and on_cpu:
        types = r.repack_types
        if types is None:
            from membudget.hardware import cpu_flags, machine_arch  # noqa: PLC0415

            types = repack_types_for(cpu_flags(), machine_arch())
        repacked = _repack_bytes(on_cpu, types, r.alignment)
    out = [
        Buffer(
            dev,
            "model",
            n,
            "weights, memory-mapped" if dev == CPU else "weights",
            reclaimable_bytes=repacked if dev == CPU else 0,
        )
        for dev, n in per_device.items()
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
    :mod:`.llamacpp_devices` describes. The CPU rules are checked against llama.cpp; the GPU
    placement follows llama.cpp's code, and CUDA buffer sizes are not yet checked against a
    CUDA build's report."""
    s = settings or LlamaCppSettings()
    r = rules or LlamaCppRules()
    fa = _resolve_flash_attn(s.flash_attn, s.cache_type_v)
    n_seq = max(1, s.n_parallel)
    n_ctx = _pad(s.n_ctx or spec.n_ctx_train or 4096, r.ctx_pad)
    if s.kv_unified:
        n_ctx_seq = n_ctx
    else:
        n_ctx_seq = _pad(n_ctx // n_seq, r.ctx_pad)
        n_ctx = n_ctx_seq * n_seq
    n_stream = 1 if s.kv_unified else n_seq
    n_batch = min(n_ctx, s.n_batch)
    n_ubatch = min(n_batch, s.n_ubatch)
    kv_size = n_ctx_seq
    n_swa = spec.sliding_window
    swa_size = 0
    if n_swa:
        swa_size = (
            kv_size
            if s.swa_full
            else _pad(min(kv_size, n_swa * (n_seq if s.kv_unified else 1) + n_ubatch), r.swa_pad)
        )
    slots = layer_devices(spec.n_layer, s.n_gpu_layers, s.gpus, s.tensor_split)
    buffers: list[Buffer] = _model_buffers(spec, s, r, slots)

    if not spec.embedding_only:
        tk, tv = cache_type(s.cache_type_k), cache_type(s.cache_type_v)
        layers = cache_layers(spec)
        mla_k_only = spec.mla is not None and spec.mla.compressed_cache and r.mla_k_only
        v_max = max((c.n_embd_v for c in layers), default=0)
        v_variable = len({c.n_embd_v for c in layers}) > 1
        kv: dict[str, int] = {}
        swa: dict[str, int] = {}
        for c in layers:
            cells = swa_size if c.sliding_window else kv_size
            k_bytes = _pad(row_bytes(tk, c.n_embd_k) * cells * n_stream, r.alignment)
            v_width = v_max if (not fa and v_variable) else c.n_embd_v
            v_bytes = (
                0 if mla_k_only else _pad(row_bytes(tv, v_width) * cells * n_stream, r.alignment)
            )
            target = swa if c.sliding_window else kv
            dev = slots[c.index]
            target[dev] = target.get(dev, 0) + k_bytes + v_bytes
        for dev, n in kv.items():
            buffers.append(Buffer(dev, "kv", n, f"{kv_size} cells x {n_stream} stream(s)"))
        for dev, n in swa.items():
            buffers.append(Buffer(dev, "kv_swa", n, f"{swa_size} cells x {n_stream} stream(s)"))
        if spec.n_recurrent_layers:
            conv, ssm = recurrent_state_dims(spec)
            rows = n_seq
            per_layer = _pad(conv * _F32 * rows, r.alignment) + _pad(ssm * _F32 * rows, r.alignment)
            rec: dict[str, int] = {}
            for il, layer in enumerate(spec.layers):
                if layer.recurrent:
                    rec[slots[il]] = rec.get(slots[il], 0) + per_layer
            for dev, n in rec.items():
                buffers.append(Buffer(dev, "recurrent", n, f"{rows} sequence state(s)"))

    out_floats = spec.n_vocab * n_seq + (
        spec.n_embd * n_seq if s.embeddings or spec.embedding_only else 0
    )
    # The output buffer is host memory (pinned when the output layer is on a GPU).
    buffers.append(Buffer(CPU, "output", out_floats * _F32, f"logits for {n_seq} output(s)"))
    n_tokens = min(n_ctx, n_ubatch)
    graph = None
    if r.simulate_graph:
        graph = graph_compute_bytes(
            spec,
            GraphSettings(
                # graph_reserve rounds the token count up to a multiple of the sequences
                n_tokens=_pad(n_tokens, n_seq),
                n_outputs=n_tokens,
                n_seqs=n_seq,
                n_kv=kv_size,
                n_swa_kv=swa_size,
                n_stream=n_stream,
                flash_attn=fa,
                cache_type_k=s.cache_type_k,
                cache_type_v=s.cache_type_v,
                alignment=r.alignment,
                attn_rotation=r.attn_rotation,
            ),
        )
    method: ComputeMethod = "simulated" if graph is not None else "phase model"
    if graph is None:
        graph = compute_bytes(
            spec,
            n_tokens=n_tokens,
            n_kv=kv_size,
            n_swa_kv=swa_size,
            n_stream=n_stream,
            flash_attn=fa,
        )
    detail = f"worst case: {n_tokens} tokens over {kv_size} cells ({method})"
    used = list(dict.fromkeys(slots))
    # Each backend holding layers reserves the graph's working set; a host that only feeds
    # the GPUs keeps the embedding rows (an estimate: not yet checked against CUDA logs).
    buffers.extend(Buffer(dev, "compute", graph, detail) for dev in used)
    if CPU not in used:
        host = 3 * spec.n_embd * n_tokens * _F32
        buffers.append(Buffer(CPU, "compute", host, "host side of the graph (estimate)"))
    return LlamaCppEstimate(
        spec=spec,
        settings=s,
        rules=r,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq_max=n_seq,
        n_stream=n_stream,
        n_batch=n_batch,
        n_ubatch=n_ubatch,
        kv_size=kv_size,
        swa_size=swa_size,
        flash_attn=fa,
        buffers=tuple(buffers),
        compute_method=method,
    )
