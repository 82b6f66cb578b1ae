"""What vLLM (V1 engine, 0.32.0) does with a device's memory.

Budget (``vllm/v1/worker/gpu_worker.py`` ``determine_available_memory``)::

    kv_cache = ceil(gpu_memory_utilization * total)          # utils.py request_memory
               - non_kv_cache_memory                         # mem_utils.py memory_profiling
               - cudagraph_memory_estimate                   # profile_cudagraph_memory

or ``--kv-cache-memory-bytes`` when given (on the CPU, ``VLLM_CPU_KVCACHE_SPACE`` GiB sets it;
``vllm/platforms/cpu.py``). Each term, and where membudget's figure comes from:

- ``non_kv_cache_memory`` is ``total_consumed + transient_peak_headroom``: the drop in free
  memory since the worker's first snapshot (the weights, what PyTorch keeps after the profile
  run, and memory outside PyTorch: cuBLAS workspaces, NCCL buffers) plus the profile run's
  transient peak. The weights are exact (the checkpoint's bytes over the ranks); the profile
  run (``gpu_model_runner.py`` ``profile_run``: a dummy batch of ``max_num_batched_tokens``,
  then a sampler run over ``max_num_seqs``) is estimated by :func:`activation_bytes`, and the
  memory outside PyTorch is a typical figure (``non_torch_bytes``). The CUDA context itself is
  not counted: the first snapshot is taken after it exists.
- ``cudagraph_memory_estimate``: vLLM captures its graphs once into a scratch pool to measure
  them and subtracts the figure (``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS``, on by default
  in ``vllm/envs.py``). That figure exists only on the device; membudget uses a typical one
  (``cuda_graph_bytes``), zero with ``--enforce-eager`` and on the CPU.

Both estimated figures can be given instead when a vLLM log shows them. What vLLM then does
with the memory (pages, groups, blocks, the logged capacity, the refusal, auto-fit) is
:mod:`.kvcache`, exact and checked against the real engine. KV heads are split across
tensor-parallel ranks and replicated once TP exceeds them (``max(1, kv_heads // tp)``);
pipeline parallelism splits the layers (``vllm/distributed/utils.py`` ``get_pp_indices``;
the first, fullest stage is planned). ``--kv-cache-dtype fp8`` stores one byte per value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from membudget.engines.vllm.kvcache import (
    CacheGroup,
    KvCacheOptions,
    KvCacheRefusedError,
    Platform,
    decide_kv_cache,
    layer_specs,
)
from membudget.errors import InvalidArgumentError
from membudget.model import ModelSpec, block_index
from membudget.units import GIB, MIB

__all__ = [
    "KvCacheDtype",
    "MambaSsmDtype",
    "ModelDtype",
    "VllmEstimate",
    "VllmSettings",
    "activation_bytes",
    "check_vllm_parallel",
    "estimate_vllm",
    "max_model_len",
    "vllm_command",
]

KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]
ModelDtype = Literal["auto", "half", "float16", "bfloat16", "float", "float32"]
_MODEL_DTYPES: tuple[ModelDtype, ...] = ("auto", "half", "float16", "bfloat16", "float", "float32")
# vllm/config/model.py _get_and_verify_dtype: "auto" keeps a 16-bit checkpoint's dtype and
# downcasts a float32 one to the platform's first supported dtype (_resolve_auto_dtype):
# two bytes either way for a text model
_MODEL_DTYPE_BYTES = {
    "auto": 2,
    "half": 2,
    "float16": 2,
    "bfloat16": 2,
    "float": 4,
    "float32": 4,
}
# Checkpoint tensors stored in a floating dtype, which vLLM loads in the model's dtype: the
# safetensors dtype names and the config's torch_dtype labels
_FLOAT_STORAGE = frozenset(
    {"F32", "F16", "BF16", "float32", "float16", "bfloat16", "half", "float", "bf16"}
)
MambaSsmDtype = Literal["auto", "float32", "float16", "bfloat16"]
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}

# Defaults, each vLLM 0.32.0's or a typical measured figure:
_DEFAULT_UTILIZATION = 0.92  # vllm/config/cache.py, CacheConfig.gpu_memory_utilization


def default_batching(platform: Platform, gpu_memory_bytes: int, world_size: int) -> tuple[int, int]:
    """``vllm serve``'s ``--max-num-batched-tokens`` and ``--max-num-seqs`` (vllm/engine/
    arg_utils.py, ``get_batch_defaults``, OPENAI_API_SERVER): 2048 and 256 on most GPUs, 8192
    and 1024 from 70 GiB (H100, H200; the device name is not read, so an A100 80GB is taken
    as an H100), 16384 and 1024 from 160 GiB; on the CPU 2048 and 128 per rank."""
    if platform == "cpu":
        return 2048 * world_size, 128 * world_size
    if gpu_memory_bytes >= 160 * GIB:
        return 16384, 1024
    if gpu_memory_bytes >= 70 * GIB:
        return 8192, 1024
    return 2048, 256


# CUDA context, cuBLAS workspaces and NCCL buffers outside PyTorch's allocator, and the memory
# CUDA graphs take when captured: both a few hundred MiB on one GPU in vLLM's own start-up logs.
_DEFAULT_NON_TORCH = 512 * MIB
_DEFAULT_CUDA_GRAPHS = 512 * MIB


def _requested(s: VllmSettings) -> int:
    """The engine's budget: ``math.ceil(total * gpu_memory_utilization)``
    (``vllm/v1/worker/utils.py`` ``request_memory``; vLLM refuses to start when less than this
    is free when the worker starts)."""
    return math.ceil(s.gpu_memory_bytes * s.gpu_memory_utilization)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class VllmSettings:
    gpu_memory_bytes: int
    """The device's memory (the host's on the CPU platform)."""
    max_model_len: int = 0
    """0: the model's own length, as vLLM derives it; -1: the longest that fits (auto-fit)."""
    gpu_memory_utilization: float = _DEFAULT_UTILIZATION
    kv_cache_dtype: KvCacheDtype = "auto"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    block_size: int | None = None
    """``--block-size``; None: the platform's (16 on CUDA, 128 on the CPU, 16 for MLA there)."""
    max_num_seqs: int | None = None
    """None: ``vllm serve``'s default (:func:`default_batching`)."""
    max_num_batched_tokens: int | None = None
    """None: ``vllm serve``'s default (:func:`default_batching`)."""
    enforce_eager: bool = False
    activation_bytes: int | None = None
    non_torch_bytes: int = _DEFAULT_NON_TORCH
    cuda_graph_bytes: int = _DEFAULT_CUDA_GRAPHS
    platform: Platform = "cuda"
    kv_cache_memory_bytes: int | None = None
    """``--kv-cache-memory-bytes``: the KV cache's memory, instead of what profiling leaves."""
    enable_prefix_caching: bool = True
    disable_hybrid_kv_cache_manager: bool = False
    mamba_ssm_cache_dtype: MambaSsmDtype = "auto"
    """The SSM state's dtype; auto: the model's (the CPU platform makes it float32 where the
    CPU has AVX512-BF16; the request layer resolves that)."""
    num_gpu_blocks_override: int | None = None
    dtype: ModelDtype = "auto"
    """``--dtype``: the weights' and activations' dtype, and the cache's under
    ``--kv-cache-dtype auto``."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidArgumentError(
                "gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]"
            )
        for name in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, value, "must be a positive integer")
        for name in (
            "block_size",
            "max_num_seqs",
            "max_num_batched_tokens",
            "num_gpu_blocks_override",
        ):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise InvalidArgumentError(name, value, "must be a positive integer")
        if self.kv_cache_memory_bytes is not None and self.kv_cache_memory_bytes < 0:
            raise InvalidArgumentError(
                "kv_cache_memory_bytes", self.kv_cache_memory_bytes, "must be 0 or more"
            )
        if self.max_model_len < -1:
            raise InvalidArgumentError(
                "max_model_len", self.max_model_len, "must be -1 (auto-fit), 0 or a length"
            )
        if self.kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2"):
            raise InvalidArgumentError(
                "kv_cache_dtype", self.kv_cache_dtype, "must be auto, fp8, fp8_e4m3 or fp8_e5m2"
            )
        if self.dtype not in _MODEL_DTYPES:
            raise InvalidArgumentError(
                "--dtype", self.dtype, f"must be one of {', '.join(_MODEL_DTYPES)}"
            )
        if self.mamba_ssm_cache_dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise InvalidArgumentError(
                "mamba_ssm_cache_dtype",
                self.mamba_ssm_cache_dtype,
                "must be auto, float32, float16 or bfloat16",
            )

    @property
    def batching(self) -> tuple[int, int]:
        """(max_num_batched_tokens, max_num_seqs), defaults resolved."""
        tokens, seqs = default_batching(
            self.platform,
            self.gpu_memory_bytes,
            self.tensor_parallel_size * self.pipeline_parallel_size,
        )
        return (self.max_num_batched_tokens or tokens, self.max_num_seqs or seqs)


@dataclass(frozen=True, slots=True)
class VllmEstimate:
    """One rank's budget and KV cache, and the figures vLLM prints at start-up."""

    spec: ModelSpec
    settings: VllmSettings
    max_model_len: int
    """The final length (auto-fit's, when -1 was asked)."""
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int
    """The memory given to the KV cache."""
    page_bytes: int
    """Bytes one block takes in the pool (the largest group's, over its layers)."""
    num_blocks: int
    """The pool's blocks, vLLM's null block included (as ``KVCacheConfig.num_blocks``)."""
    request_blocks: int
    """Blocks one request of ``max_model_len`` tokens takes, over every group."""
    block_size: int
    """The attention block size in use (the platform's or the one given, raised for Mamba
    hybrids)."""
    groups: tuple[CacheGroup, ...] = ()
    estimated_max_model_len: int | None = None
    """Where vLLM refuses to start: its estimate of the longest length that fits."""
    batched_tokens: int = 0
    max_num_seqs: int = 0

    @property
    def requested_bytes(self) -> int:
        if self.settings.platform == "cpu" and self.settings.kv_cache_memory_bytes is not None:
            return self.settings.gpu_memory_bytes
        return _requested(self.settings)

    @property
    def request_bytes(self) -> int:
        """KV memory one request of ``max_model_len`` tokens needs on this rank."""
        return self.request_blocks * self.page_bytes

    @property
    def needed_bytes(self) -> int:
        """What one rank needs for one request of ``max_model_len`` tokens: weights, activation
        peak, non-torch memory, CUDA graphs, that request's KV cache and the null block."""
        return (
            self.weights_bytes
            + self.activation_bytes
            + self.non_torch_bytes
            + self.cuda_graph_bytes
            + self.request_bytes
            + self.page_bytes
        )

    @property
    def kv_cache_tokens(self) -> int:
        """vLLM's "KV cache size: N tokens" (the block count over a request's blocks, times
        ``max_model_len``)."""
        return int(self.max_concurrency * self.max_model_len)

    @property
    def max_concurrency(self) -> float:
        """vLLM's "Maximum concurrency for max_model_len tokens per request"."""
        if self.estimated_max_model_len is not None or not self.request_blocks:
            return 0.0
        return self.num_blocks / self.request_blocks

    @property
    def fits(self) -> bool:
        return self.estimated_max_model_len is None and self.num_blocks > self.request_blocks


def check_vllm_parallel(spec: ModelSpec, tp: int, pp: int) -> None:
    """Refuse what vLLM refuses at start-up:

    - ``vllm/config/model.py`` ``ModelConfig.verify_with_parallel_config``: "Total number of
      attention heads (H) must be divisible by tensor parallel size (T)";
    - the attention layers (``vllm/model_executor/models/llama.py`` ``LlamaAttention`` and its
      kin): KV heads split evenly across ranks when there are at least as many as ranks, else
      the ranks are a multiple of them (each KV head replicated);
    - ``vllm/distributed/utils.py`` ``get_pp_indices``: every pipeline stage needs a layer.
    """
    heads = {layer.n_head for layer in spec.layers if layer.has_kv and layer.n_head}
    for h in sorted(heads):
        if h % tp:
            raise InvalidArgumentError(
                "--tensor-parallel-size",
                tp,
                f"does not divide {spec.name}'s {h} attention heads (vLLM refuses it); use one of "
                + ", ".join(str(t) for t in range(1, h + 1) if h % t == 0 and t <= 64),
            )
    mla = spec.mla is not None and spec.mla.compressed_cache
    kv_heads = {layer.n_head_kv for layer in spec.layers if layer.has_kv and layer.n_head_kv}
    for kv in sorted(kv_heads) if not mla else ():
        if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
            raise InvalidArgumentError(
                "--tensor-parallel-size",
                tp,
                f"does not split {spec.name}'s {kv} KV heads evenly (vLLM needs the KV heads to "
                "be a multiple of the ranks, or the ranks a multiple of the KV heads)",
            )
    if pp > max(1, spec.n_layer):
        raise InvalidArgumentError(
            "--pipeline-parallel-size",
            pp,
            f"is more than {spec.name}'s {spec.n_layer} layers (every stage needs one)",
        )


def activation_bytes(spec: ModelSpec, s: VllmSettings) -> int:
    """An estimate of vLLM's profiled activation peak on one rank: the dummy batch of
    ``max_num_batched_tokens`` through the widest MLP (gate and up projections, then the
    activation, in the model's dtype), the residual stream, and the sampler's fp32 logits for
    ``max_num_seqs`` sequences (logits, probabilities and their sort)."""
    t, seqs = s.batching
    tp = s.tensor_parallel_size
    n_ff = max(spec.n_ff, spec.n_ff_expert * max(spec.n_expert_used, 1))
    size = _MODEL_DTYPE_BYTES[s.dtype]
    mlp = t * (3 * n_ff // tp) * size
    resid = 4 * t * spec.n_embd * size
    sampler = 3 * seqs * spec.n_vocab * 4
    return mlp + resid + sampler


def _kv_dtype_bytes(dtype: KvCacheDtype, model_bytes: int) -> int:
    """``--kv-cache-dtype``: every fp8 is one byte; auto is the model's dtype."""
    return 1 if dtype != "auto" else model_bytes


def vllm_weight_bytes(spec: ModelSpec, dtype: ModelDtype) -> int:
    """The weights as vLLM holds them: tensors stored in a floating dtype at ``--dtype``'s
    size (``vllm/model_executor/model_loader``: parameters are created in the model's dtype),
    quantised tensors as stored. A quantised checkpoint at ``float32`` is refused, as vLLM's
    quantisation methods refuse it (``get_supported_act_dtypes``)."""
    size = _MODEL_DTYPE_BYTES[dtype]
    delta = 0
    quantised = False
    for t in spec.tensors:
        if t.type_name in _FLOAT_STORAGE:
            delta += t.n_elements * size - t.n_bytes
        else:
            quantised = True
    if quantised and size == 4:
        raise InvalidArgumentError(
            "--dtype",
            dtype,
            f"must be auto, half, float16 or bfloat16 for {spec.name}'s quantised weights "
            f"({spec.quant.file_type}): vLLM's quantisation methods refuse float32",
        )
    return spec.weights.total + delta


def pp_partitions(n_layer: int, pp: int) -> list[int]:
    """Layers a pipeline stage holds (``vllm/distributed/utils.py`` ``get_pp_indices``): an
    even split, the remainder spread over the stages before the last, from the second-to-last
    backwards."""
    parts = [n_layer // pp] * pp
    for i in range(2, n_layer % pp + 2):
        parts[-i] += 1
    return parts


def rank_weight_bytes(spec: ModelSpec, dtype: ModelDtype, tp: int, pp: int) -> int:
    """The weights one rank of the fullest pipeline stage holds: its layers, the embedding on
    the first stage, the output head and final norm on the last (and with tied embeddings
    a copy of the embedding there too, as ``ParallelLMHead`` is its own parameter when the
    stages differ), split over the tensor-parallel ranks (``ColumnParallelLinear``,
    ``RowParallelLinear``, ``VocabParallelEmbedding``; the small norms they replicate are
    counted as split)."""
    total = vllm_weight_bytes(spec, dtype)
    if pp == 1:
        return _cdiv(total, tp)
    size = _MODEL_DTYPE_BYTES[dtype]
    parts = pp_partitions(spec.n_layer, pp)
    starts = [sum(parts[:i]) for i in range(pp)]
    stages = [0] * pp
    for t in spec.tensors:
        n = t.n_elements * size if t.type_name in _FLOAT_STORAGE else t.n_bytes
        il = block_index(t.name)
        if il is not None and il < spec.n_layer:
            stage = max(i for i in range(pp) if starts[i] <= il)
        elif t.name == "token_embd.weight":
            stage = 0
            if spec.tied_embeddings:
                stages[-1] += n
        else:
            stage = pp - 1
        stages[stage] += n
    return _cdiv(max(stages), tp)


def estimate_vllm(spec: ModelSpec, settings: VllmSettings) -> VllmEstimate:
    """vLLM's budget on the first (fullest) rank of a TP x PP deployment, and its KV-cache
    decision there (:func:`.kvcache.decide_kv_cache`)."""
    s = settings
    derived = spec.n_ctx_train or 4096
    weights = rank_weight_bytes(spec, s.dtype, s.tensor_parallel_size, s.pipeline_parallel_size)
    model_bytes = _MODEL_DTYPE_BYTES[s.dtype]
    tokens, seqs = s.batching
    cpu = s.platform == "cpu"
    act = s.activation_bytes if s.activation_bytes is not None else activation_bytes(spec, s)
    graphs = 0 if s.enforce_eager or cpu else s.cuda_graph_bytes
    non_torch = 0 if cpu else s.non_torch_bytes
    if s.kv_cache_memory_bytes is not None:
        kv = s.kv_cache_memory_bytes
    else:
        requested = _requested(s)
        kv = max(0, requested - weights - act - non_torch - graphs)
    stage = _cdiv(spec.n_layer, s.pipeline_parallel_size)
    specs = layer_specs(
        spec,
        platform=s.platform,
        block_size=s.block_size,
        kv_dtype_bytes=_kv_dtype_bytes(s.kv_cache_dtype, model_bytes),
        model_dtype_bytes=model_bytes,
        ssm_dtype_bytes=_DTYPE_BYTES.get(s.mamba_ssm_cache_dtype),
        tensor_parallel_size=s.tensor_parallel_size,
    )[:stage]
    options = KvCacheOptions(
        kv_cache_memory_bytes=kv,
        max_model_len=s.max_model_len or derived,
        derived_max_model_len=derived,
        max_num_batched_tokens=tokens,
        # vllm/config/vllm.py, max_concurrent_batches: async scheduling (on by default on
        # CUDA, off on the CPU platform) keeps one batch more in flight than pipeline stages
        # (Model Runner V2, the default where Triton runs)
        max_concurrent_batches=s.pipeline_parallel_size + (0 if cpu else 1),
        enable_prefix_caching=s.enable_prefix_caching,
        disable_hybrid_kv_cache_manager=s.disable_hybrid_kv_cache_manager,
        num_gpu_blocks_override=s.num_gpu_blocks_override,
    )
    base = {
        "spec": spec,
        "settings": s,
        "weights_bytes": weights,
        "activation_bytes": act,
        "non_torch_bytes": non_torch,
        "cuda_graph_bytes": graphs,
        "kv_cache_bytes": kv,
        "batched_tokens": tokens,
        "max_num_seqs": seqs,
    }
    try:
        d = decide_kv_cache(specs, options)
    except KvCacheRefusedError as refused:
        # vLLM refuses to start; the figures are those of the pool it would have had
        block_bytes = refused.block_bytes
        return VllmEstimate(
            **base,  # type: ignore[arg-type]
            max_model_len=refused.max_model_len,
            page_bytes=block_bytes,
            num_blocks=kv // block_bytes if block_bytes else 0,
            request_blocks=refused.needed_bytes // block_bytes if block_bytes else 0,
            block_size=refused.block_size,
            groups=refused.groups,
            estimated_max_model_len=refused.estimated_max_model_len,
        )
    return VllmEstimate(
        **base,  # type: ignore[arg-type]
        max_model_len=d.max_model_len,
        page_bytes=d.block_bytes,
        num_blocks=d.num_blocks,
        request_blocks=d.request_blocks,
        block_size=d.block_size,
        groups=d.groups,
    )


def max_model_len(spec: ModelSpec, settings: VllmSettings) -> int:
    """The longest ``--max-model-len`` one request can use, at most the model's own: vLLM's
    auto-fit (``--max-model-len -1``), 0 where not one token fits."""
    e = estimate_vllm(spec, replace(settings, max_model_len=-1))
    return 0 if e.estimated_max_model_len is not None else e.max_model_len


def vllm_command(estimate: VllmEstimate, model: str) -> list[str]:
    """``vllm serve`` arguments that reproduce ``estimate``'s settings."""
    s = estimate.settings
    cmd = ["vllm", "serve", model, "--max-model-len", str(estimate.max_model_len)]
    cmd += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.kv_cache_dtype != "auto":
        cmd += ["--kv-cache-dtype", s.kv_cache_dtype]
    if s.dtype != "auto":
        cmd += ["--dtype", s.dtype]
    if s.tensor_parallel_size > 1:
        cmd += ["-tp", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        # Pipeline stages span nodes; vLLM runs them on a Ray cluster.
        cmd += ["-pp", str(s.pipeline_parallel_size), "--distributed-executor-backend", "ray"]
    if s.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(s.max_num_seqs)]
    if s.max_num_batched_tokens is not None:
        cmd += ["--max-num-batched-tokens", str(s.max_num_batched_tokens)]
    if s.block_size is not None:
        cmd += ["--block-size", str(s.block_size)]
    if s.kv_cache_memory_bytes is not None:
        cmd += ["--kv-cache-memory-bytes", str(s.kv_cache_memory_bytes)]
    if not s.enable_prefix_caching:
        cmd += ["--no-enable-prefix-caching"]
    if s.disable_hybrid_kv_cache_manager:
        cmd += ["--disable-hybrid-kv-cache-manager"]
    if s.mamba_ssm_cache_dtype != "auto":
        cmd += ["--mamba-ssm-cache-dtype", s.mamba_ssm_cache_dtype]
    if s.num_gpu_blocks_override is not None:
        cmd += ["--num-gpu-blocks-override", str(s.num_gpu_blocks_override)]
    return cmd
