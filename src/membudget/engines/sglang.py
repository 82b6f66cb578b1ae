"""What SGLang (0.5.10.post1, the current release on the package index) does with a GPU's memory.

Read from the release's sdist, ``sglang/srt``:

- ``server_args.py`` ``ServerArgs._handle_gpu_memory_settings``: ``chunked_prefill_size``,
  ``cuda_graph_max_bs`` and the batch sizes captured, by the GPU's memory (``nvidia-smi``'s
  ``memory.total`` in MiB, the smallest GPU's; ``utils/common.py`` ``get_nvgpu_memory_capacity``),
  then ``mem_fraction_static = round((gpu_mem - reserved) / gpu_mem, 3)`` where ``reserved``
  (MiB) is 512 of attention-backend metadata, 1.5 per token of the chunked prefill (at least
  2048 tokens), 2 per CUDA-graph batch size, ``tp * pp / 8`` GiB, and the piecewise CUDA graphs
  (8 per captured token count, or 1.5 GiB with MLA), at least 10 GiB above 60 GiB of memory.
- ``model_executor/model_runner_kv_cache_mixin.py``: ``profile_max_num_token`` gives the pool
  ``rest = post_load_free - pre_load_free * (1 - mem_fraction_static)`` GiB, and
  ``int(rest * 2**30) // cell_size`` tokens, where ``cell_size`` is
  ``kv_heads_per_rank * (head_dim + v_head_dim) * layers * dtype_bytes``, or
  ``(kv_lora_rank + qk_rope_head_dim) * layers * dtype_bytes`` with MLA
  (``get_cell_size_per_token``); ``_resolve_token_capacity`` caps it by ``--max-total-tokens``
  and aligns it to the page; ``_resolve_hybrid_swa_tokens`` splits it for hybrid sliding-window
  models; ``_resolve_max_num_reqs`` sets ``max_running_requests``.
- ``managers/tp_worker.py``: the longest request is ``min(context_len - 1, pool - 1)`` tokens.
  SGLang does not refuse a context longer than its pool; it caps requests. membudget reports the
  pool and says that the context does not fit where the pool is smaller than it.

The free memory before loading is the GPU's memory less the CUDA context and NCCL's buffers,
which exist before SGLang measures (``model_runner.py`` ``init_torch_distributed``); that figure
is typical (``context_bytes``). The weights are the checkpoint's bytes over the ranks. Everything
else is SGLang's own arithmetic, reproduced in floats where SGLang uses floats.

Not modelled, and refused rather than guessed: Mamba, gated-delta-net and short-conv hybrids
(``handle_max_mamba_cache``), DeepSeek's sparse attention (NSA), speculative decoding, data-
parallel attention, multimodal towers. Only gpt-oss runs with a hybrid sliding-window pool in
SGLang (``configs/model_config.py`` ``is_hybrid_swa_model``); every other model keeps every
layer's cache at full length (Gemma 2 and 3 have it switched off by
``_handle_model_specific_adjustments``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from membudget.errors import InvalidArgumentError
from membudget.model import ModelSpec
from membudget.units import MIB

__all__ = [
    "SGLANG_VERSION",
    "SglangEstimate",
    "SglangKvDtype",
    "SglangMemoryDefaults",
    "SglangSettings",
    "check_sglang",
    "default_memory_settings",
    "estimate_sglang",
    "longest_context",
    "sglang_command",
]

SGLANG_VERSION = "0.5.10.post1"

SglangKvDtype = Literal["auto", "bf16", "fp8_e4m3", "fp8_e5m2"]
_KV_BYTES: dict[str, int] = {"auto": 2, "bf16": 2, "fp8_e4m3": 1, "fp8_e5m2": 1}

# server_args.py ServerArgs: max_prefill_tokens = 16384, swa_full_tokens_ratio = 0.8
_MAX_PREFILL_TOKENS = 16384
_SWA_FULL_TOKENS_RATIO = 0.8
# CUDA context and NCCL buffers, taken before init_torch_distributed measures the free memory:
# a typical figure for one process on one GPU (the same order as vLLM's start-up logs show).
_DEFAULT_CONTEXT = 512 * MIB
_HYBRID_SWA_ARCHS = ("gpt-oss",)  # configs/model_config.py is_hybrid_swa_model (of ours)


@dataclass(frozen=True, slots=True)
class SglangMemoryDefaults:
    """What ``_handle_gpu_memory_settings`` sets when the flags are not given."""

    chunked_prefill_size: int
    cuda_graph_max_bs: int
    cuda_graph_bs: tuple[int, ...]
    piecewise_cuda_graph_tokens: tuple[int, ...]
    reserved_mib: float
    """The memory kept out of the static pool: activations, CUDA graphs, metadata (MiB)."""
    mem_fraction_static: float


def _cuda_graph_batch_sizes(max_bs: int) -> tuple[int, ...]:
    """``ServerArgs._generate_cuda_graph_batch_sizes`` without speculative decoding."""
    sizes = [1, 2, 4, 8, 12, *range(16, 257, 8), *range(272, 512, 16), *range(512, max_bs + 1, 32)]
    out = [b for b in sizes if b <= max_bs]
    if max_bs not in out:
        out.append(max_bs)
    return tuple(out)


def _piecewise_tokens(max_tokens: int) -> tuple[int, ...]:
    """``ServerArgs._generate_piecewise_cuda_graph_tokens``."""
    sizes = [
        *range(4, 33, 4),
        *range(48, 257, 16),
        *range(288, 513, 32),
        *range(576, 1025, 64),
        *range(1280, 4097, 256),
        *range(4608, max_tokens + 1, 512),
    ]
    return tuple(s for s in sizes if s <= max_tokens)


def _by_gpu_memory(gpu_mem_mib: int, tp: int) -> tuple[int, int]:
    """(chunked_prefill_size, cuda_graph_max_bs) by the GPU's memory, as the comments in
    ``_handle_gpu_memory_settings`` name them: T4/4080, A10/4090, A100 40GB/L40, H100, H200,
    B200."""
    if gpu_mem_mib < 20 * 1024:
        return 2048, 8
    if gpu_mem_mib < 35 * 1024:
        return 2048, 24 if tp < 4 else 80
    if gpu_mem_mib < 60 * 1024:
        return 4096, 32 if tp < 4 else 160
    if gpu_mem_mib < 160 * 1024:
        return 8192, 256 if tp < 4 else 512
    return 16384, 512


def default_memory_settings(
    gpu_memory_bytes: int,
    *,
    tp: int = 1,
    pp: int = 1,
    mla: bool = False,
    chunked_prefill_size: int | None = None,
    cuda_graph_max_bs: int | None = None,
    max_total_tokens: int | None = None,
    disable_piecewise_cuda_graph: bool = False,
) -> SglangMemoryDefaults:
    """``_handle_gpu_memory_settings`` for one CUDA GPU of ``gpu_memory_bytes`` (plain
    deployment: no speculative decoding, no DP attention, not multimodal)."""
    gpu_mem = gpu_memory_bytes // MIB  # nvidia-smi memory.total, MiB
    chunk_default, bs_default = _by_gpu_memory(gpu_mem, tp)
    chunk = chunk_default if chunked_prefill_size is None else chunked_prefill_size
    max_bs = bs_default if cuda_graph_max_bs is None else cuda_graph_max_bs
    # _handle_piecewise_cuda_graph: pipeline parallelism switches the piecewise graphs off
    piecewise = not disable_piecewise_cuda_graph and pp == 1
    pcg_max = 2048 if mla else chunk
    if max_total_tokens is not None:
        pcg_max = min(pcg_max, max_total_tokens)
    pcg_tokens = _piecewise_tokens(pcg_max)
    reserved = 512.0
    reserved += max(chunk, 2048) * 1.5 if chunk > 0 else max(_MAX_PREFILL_TOKENS, 2048) * 1.5
    reserved += max_bs * 2
    reserved += tp * pp / 8 * 1024
    if piecewise:
        reserved += 1.5 * 1024 if mla else len(pcg_tokens) * 8
    if gpu_mem > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return SglangMemoryDefaults(
        chunked_prefill_size=chunk,
        cuda_graph_max_bs=max_bs,
        cuda_graph_bs=_cuda_graph_batch_sizes(max_bs),
        piecewise_cuda_graph_tokens=pcg_tokens if piecewise else (),
        reserved_mib=reserved,
        mem_fraction_static=round((gpu_mem - reserved) / gpu_mem, 3),
    )


@dataclass(frozen=True, slots=True)
class SglangSettings:
    gpu_memory_bytes: int
    """One GPU's memory (every rank's GPU is taken to be the same)."""
    context_length: int = 0
    """``--context-length``; 0: the model's own."""
    mem_fraction_static: float | None = None
    """None: SGLang's default for this GPU (:func:`default_memory_settings`)."""
    kv_cache_dtype: SglangKvDtype = "auto"
    page_size: int = 1
    """``--page-size``: SGLang's default is 1 where the attention backend does not force
    another (FA3 on Hopper, FlashInfer, Triton; Blackwell's TRT-LLM backends use 64)."""
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    chunked_prefill_size: int | None = None
    cuda_graph_max_bs: int | None = None
    max_running_requests: int | None = None
    max_total_tokens: int | None = None
    disable_piecewise_cuda_graph: bool = False
    context_bytes: int = _DEFAULT_CONTEXT
    """What the CUDA context and NCCL take before SGLang measures the free memory."""

    def __post_init__(self) -> None:
        if self.mem_fraction_static is not None and not 0 < self.mem_fraction_static < 1:
            raise InvalidArgumentError(
                "--mem-fraction-static", self.mem_fraction_static, "must be between 0 and 1"
            )
        if self.kv_cache_dtype not in _KV_BYTES:
            raise InvalidArgumentError(
                "--kv-cache-dtype",
                self.kv_cache_dtype,
                "must be auto, bf16, fp8_e4m3 or fp8_e5m2 with SGLang",
            )
        for flag, value in (
            ("--page-size", self.page_size),
            ("--tensor-parallel-size", self.tensor_parallel_size),
            ("--pipeline-parallel-size", self.pipeline_parallel_size),
            ("--cuda-graph-max-bs", self.cuda_graph_max_bs),
            ("--max-running-requests", self.max_running_requests),
            ("--max-total-tokens", self.max_total_tokens),
        ):
            if value is not None and value < 1:
                raise InvalidArgumentError(flag, value, "must be 1 or more")
        if self.context_length < 0:
            raise InvalidArgumentError("--context-length", self.context_length, "must be 0 or more")


@dataclass(frozen=True, slots=True)
class SglangEstimate:
    """One rank's static pool and the token pool SGLang builds in it."""

    spec: ModelSpec
    settings: SglangSettings
    memory: SglangMemoryDefaults
    context_length: int
    weights_bytes: int
    pre_load_free_bytes: int
    cell_bytes: int
    """KV bytes one token takes on this rank, over its layers (``get_cell_size_per_token``)."""
    profiled_tokens: int
    """``profile_max_num_token``: what the memory holds, before the cap and page alignment."""
    max_total_num_tokens: int
    """The pool: SGLang's logged ``max_total_num_tokens``."""
    max_running_requests: int
    full_tokens: int | None = None
    swa_tokens: int | None = None

    @property
    def mem_fraction_static(self) -> float:
        return self.memory.mem_fraction_static

    @property
    def static_bytes(self) -> int:
        """The static pool's share of the free memory (weights and KV cache)."""
        return int(self.pre_load_free_bytes * self.mem_fraction_static)

    @property
    def kv_cache_bytes(self) -> int:
        """Bytes of the token pool (the full-length layers' and the sliding layers')."""
        if self.full_tokens is None or self.swa_tokens is None:
            return self.max_total_num_tokens * self.cell_bytes
        full, swa = _swa_split_cells(self.spec, self.settings)
        return self.full_tokens * full + self.swa_tokens * swa

    @property
    def reserved_bytes(self) -> int:
        """What SGLang keeps out of the static pool for activations and CUDA graphs."""
        return self.pre_load_free_bytes - self.static_bytes

    @property
    def max_request_tokens(self) -> int:
        """``tp_worker.py``: ``min(context_len - 1, pool - 1)``."""
        return max(0, min(self.context_length - 1, self.max_total_num_tokens - 1))

    @property
    def fits(self) -> bool:
        """SGLang starts and one request of the whole context fits in the pool."""
        return self.max_total_num_tokens > 0 and self.max_total_num_tokens >= self.context_length

    @property
    def starts(self) -> bool:
        # model_runner_kv_cache_mixin.py MemoryPoolConfig: "Not enough memory"; tp_worker.py
        # asserts max_req_input_len = max_req_len - 5 > 0 ("Memory pool size is too small")
        return self.max_total_num_tokens > 0 and self.max_request_tokens - 5 > 0

    @property
    def required_capacity(self) -> int:
        """The least page-aligned pool (tokens of ``cell_bytes``) under which one request of
        the whole context fits: the context itself, or with a hybrid sliding-window pool the
        least pool whose full-layer share (``_resolve_hybrid_swa_tokens``) reaches it."""
        page = self.settings.page_size
        tokens = -(-self.context_length // page) * page
        if self.full_tokens is None:
            return tokens
        full, swa = _swa_split_cells(self.spec, self.settings)
        if full == 0:
            return tokens
        # start a page below the real-valued answer, then walk up: SGLang's int() and page
        # floors decide the exact boundary
        guess = math.floor(tokens * (full + _SWA_FULL_TOKENS_RATIO * swa) / (full + swa))
        capacity = max(0, guess // page * page - page)
        while _split(capacity, full, swa, page)[0] < self.context_length:
            capacity += page
        return capacity

    @property
    def request_kv_bytes(self) -> int:
        """KV bytes the pool needs for one request of the whole context."""
        return self.required_capacity * self.cell_bytes

    @property
    def needed_bytes(self) -> int:
        """The GPU memory one request of the whole context needs on this rank at this
        ``mem_fraction_static``: the CUDA context, then free memory whose static share holds
        the weights and that request's KV cache."""
        static = self.weights_bytes + self.request_kv_bytes
        return self.settings.context_bytes + math.ceil(static / self.mem_fraction_static)


def _layers(spec: ModelSpec, pp: int) -> int:
    """Attention layers on the first (fullest) pipeline stage."""
    stage = -(-spec.n_layer // pp)
    return sum(1 for layer in spec.layers[:stage] if layer.has_kv)


def _per_token_full(spec: ModelSpec, s: SglangSettings) -> int:
    kv_bytes = _KV_BYTES[s.kv_cache_dtype]
    heads = max((layer.n_head_kv for layer in spec.layers if layer.has_kv), default=0)
    layer = next(x for x in spec.layers if x.has_kv)
    # configs/model_config.py get_num_kv_heads: max(1, heads // tp)
    return (
        max(1, heads // s.tensor_parallel_size) * (layer.head_dim_k + layer.head_dim_v) * kv_bytes
    )


def _swa_split_cells(spec: ModelSpec, s: SglangSettings) -> tuple[int, int]:
    """(full layers' bytes a token, sliding layers' bytes a token) on the first stage."""
    stage = -(-spec.n_layer // s.pipeline_parallel_size)
    layers = [x for x in spec.layers[:stage] if x.has_kv]
    per = _per_token_full(spec, s)
    full = sum(1 for x in layers if not x.sliding_window)
    return full * per, (len(layers) - full) * per


def _cell_bytes(spec: ModelSpec, s: SglangSettings) -> int:
    kv_bytes = _KV_BYTES[s.kv_cache_dtype]
    layers = _layers(spec, s.pipeline_parallel_size)
    if spec.mla is not None and spec.mla.compressed_cache:
        return (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * layers * kv_bytes
    return _per_token_full(spec, s) * layers


def check_sglang(spec: ModelSpec, s: SglangSettings) -> None:
    """Refuse what SGLang refuses, and what membudget does not model for it."""
    if spec.recurrent is not None or any(layer.recurrent for layer in spec.layers):
        raise InvalidArgumentError(
            "--engine",
            "sglang",
            f"is not modelled for {spec.name}'s recurrent layers (SGLang sizes a Mamba state "
            "pool beside the KV pool, handle_max_mamba_cache); plan it with --engine vllm or "
            "llama.cpp",
        )
    if not any(layer.has_kv for layer in spec.layers):
        raise InvalidArgumentError("--engine", "sglang", f"{spec.name} has no attention layers")
    heads = {layer.n_head for layer in spec.layers if layer.has_kv and layer.n_head}
    for h in sorted(heads):
        if h % s.tensor_parallel_size:
            raise InvalidArgumentError(
                "--tensor-parallel-size",
                s.tensor_parallel_size,
                f"does not divide {spec.name}'s {h} attention heads (SGLang shards heads evenly)",
            )
    if s.pipeline_parallel_size > max(1, spec.n_layer):
        raise InvalidArgumentError(
            "--pipeline-parallel-size",
            s.pipeline_parallel_size,
            f"is more than {spec.name}'s {spec.n_layer} layers",
        )


def estimate_sglang(spec: ModelSpec, settings: SglangSettings) -> SglangEstimate:
    """SGLang's static pool and token pool on the first rank of a TP x PP deployment."""
    s = settings
    check_sglang(spec, s)
    tp, pp = s.tensor_parallel_size, s.pipeline_parallel_size
    mla = spec.mla is not None and spec.mla.compressed_cache
    memory = default_memory_settings(
        s.gpu_memory_bytes,
        tp=tp,
        pp=pp,
        mla=mla,
        chunked_prefill_size=s.chunked_prefill_size,
        cuda_graph_max_bs=s.cuda_graph_max_bs,
        max_total_tokens=s.max_total_tokens,
        disable_piecewise_cuda_graph=s.disable_piecewise_cuda_graph,
    )
    if s.mem_fraction_static is not None:
        memory = SglangMemoryDefaults(
            memory.chunked_prefill_size,
            memory.cuda_graph_max_bs,
            memory.cuda_graph_bs,
            memory.piecewise_cuda_graph_tokens,
            memory.reserved_mib,
            s.mem_fraction_static,
        )
    weights = -(-spec.weights.total // (tp * pp))
    pre = max(0, s.gpu_memory_bytes - s.context_bytes)
    post = pre - weights
    cell = _cell_bytes(spec, s)
    # profile_max_num_token, in SGLang's floats (GiB from get_available_gpu_memory)
    rest = post / (1 << 30) - pre / (1 << 30) * (1 - memory.mem_fraction_static)
    profiled = int(rest * (1 << 30)) // cell
    # _resolve_token_capacity
    capacity = profiled if s.max_total_tokens is None else min(profiled, s.max_total_tokens)
    capacity = capacity // s.page_size * s.page_size
    context = s.context_length or spec.n_ctx_train or 4096
    full_tokens = swa_tokens = None
    if spec.architecture in _HYBRID_SWA_ARCHS and any(x.sliding_window for x in spec.layers):
        full_cell, swa_cell = _swa_split_cells(spec, s)
        full_tokens, swa_tokens = _split(capacity, full_cell, swa_cell, s.page_size)
        capacity = full_tokens if full_cell else swa_tokens
    return SglangEstimate(
        spec=spec,
        settings=s,
        memory=memory,
        context_length=context,
        weights_bytes=weights,
        pre_load_free_bytes=pre,
        cell_bytes=cell,
        profiled_tokens=profiled,
        max_total_num_tokens=capacity,
        max_running_requests=_max_running_requests(capacity, context, s.max_running_requests),
        full_tokens=full_tokens,
        swa_tokens=swa_tokens,
    )


def _split(capacity: int, full: int, swa: int, page: int) -> tuple[int, int]:
    """``_resolve_hybrid_swa_tokens``: (full layers' tokens, sliding layers' tokens), each a
    whole number of pages; with no full layer every token is a sliding one."""
    if full == 0:
        return 0, capacity // page * page
    total = capacity * (full + swa)
    full_tokens = int(total / (full + _SWA_FULL_TOKENS_RATIO * swa)) // page * page
    return full_tokens, int(full_tokens * _SWA_FULL_TOKENS_RATIO) // page * page


def _max_running_requests(capacity: int, context: int, given: int | None) -> int:
    """``_resolve_max_num_reqs`` (one data-parallel worker)."""
    estimated = int(capacity / context * 512)
    estimated = max(min(estimated, 4096), 2048)
    if given is not None:
        return min(given, estimated)
    return min(estimated, capacity // 2)


def sglang_command(e: SglangEstimate, model: str) -> list[str]:
    """``python -m sglang.launch_server`` arguments that reproduce ``e``'s settings.

    ``--mem-fraction-static`` is always written out: SGLang derives its default from the memory
    ``nvidia-smi`` reports, and a pinned fraction makes the command give what was planned."""
    s = e.settings
    cmd = ["python", "-m", "sglang.launch_server", "--model-path", model]
    cmd += ["--context-length", str(e.context_length)]
    cmd += ["--mem-fraction-static", f"{e.mem_fraction_static:g}"]
    if s.kv_cache_dtype != "auto":
        cmd += ["--kv-cache-dtype", s.kv_cache_dtype]
    if s.page_size != 1:
        cmd += ["--page-size", str(s.page_size)]
    if s.tensor_parallel_size > 1:
        cmd += ["--tp-size", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        cmd += ["--pp-size", str(s.pipeline_parallel_size)]
    if s.chunked_prefill_size is not None:
        cmd += ["--chunked-prefill-size", str(s.chunked_prefill_size)]
    if s.cuda_graph_max_bs is not None:
        cmd += ["--cuda-graph-max-bs", str(s.cuda_graph_max_bs)]
    if s.max_running_requests is not None:
        cmd += ["--max-running-requests", str(s.max_running_requests)]
    if s.max_total_tokens is not None:
        cmd += ["--max-total-tokens", str(s.max_total_tokens)]
    if s.disable_piecewise_cuda_graph:
        cmd += ["--disable-piecewise-cuda-graph"]
    return cmd


def longest_context(spec: ModelSpec, settings: SglangSettings) -> int:
    """The longest ``--context-length`` whose one request fits in the pool, at most the
    model's own (the pool does not depend on the context length, only the request count)."""
    e = estimate_sglang(spec, settings)
    train = spec.n_ctx_train or e.context_length
    return max(0, min(train, e.max_total_num_tokens))
