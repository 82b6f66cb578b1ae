"""What vLLM (V1 engine) does with a GPU's memory, following its own arithmetic.

Budget (``vllm/v1/worker/gpu_worker.py``, ``determine_available_memory``)::

    kv_cache = gpu_memory_utilization * total - (weights + activation peak + non-torch memory)
               - CUDA graphs

KV cache (``vllm/v1/kv_cache_interface.py``), per layer and per rank, in pages of ``block_size``
(16) tokens:

- full attention: ``block_size * kv_heads * (head_size + head_size_v) * dtype_bytes`` a page and
  ``cdiv(max_model_len, block_size)`` pages a request;
- sliding window: ``cdiv(min(window - 1 + max_num_batched_tokens, max_model_len), block_size) + 1``
  pages a request;
- MLA: one latent head of ``kv_lora_rank + qk_rope_head_dim``, K only;
- Mamba: one constant state a request (convolution window plus SSM state).

KV heads are split across tensor-parallel ranks and replicated once TP exceeds them
(``max(1, kv_heads // tp)``); pipeline parallelism splits the layers. ``--kv-cache-dtype fp8``
stores one byte per value.

The KV arithmetic is exact. The activation peak is measured by vLLM at start-up with a dummy
batch; membudget estimates it from the model's widest activations (see
:func:`activation_bytes`), and both it and the non-torch and CUDA-graph figures can be given
instead (``VllmSettings.activation_bytes`` and friends) when they are known from a vLLM log.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from membudget.errors import InvalidArgumentError
from membudget.kv import recurrent_state_dims
from membudget.model import ModelSpec
from membudget.units import MIB

__all__ = [
    "KvCacheDtype",
    "VllmEstimate",
    "VllmSettings",
    "activation_bytes",
    "check_vllm_parallel",
    "estimate_vllm",
    "max_model_len",
    "vllm_command",
]

KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]

# Defaults, each a vLLM default or a typical measured figure:
_DEFAULT_UTILIZATION = 0.9  # vLLM --gpu-memory-utilization
_DEFAULT_BLOCK = 16  # vLLM --block-size on CUDA
_DEFAULT_MAX_SEQS = 256  # vLLM --max-num-seqs
_DEFAULT_BATCHED_TOKENS = 8192  # vLLM V1 --max-num-batched-tokens for `vllm serve` on large GPUs
# CUDA context, cuBLAS workspaces and NCCL buffers outside PyTorch's allocator, and the memory
# CUDA graphs take when captured: both a few hundred MiB on one GPU in vLLM's own start-up logs.
_DEFAULT_NON_TORCH = 512 * MIB
_DEFAULT_CUDA_GRAPHS = 512 * MIB


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class VllmSettings:
    gpu_memory_bytes: int
    max_model_len: int = 0
    """0: the model's trained context, as vLLM defaults."""
    gpu_memory_utilization: float = _DEFAULT_UTILIZATION
    kv_cache_dtype: KvCacheDtype = "auto"
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    block_size: int = _DEFAULT_BLOCK
    max_num_seqs: int = _DEFAULT_MAX_SEQS
    max_num_batched_tokens: int = _DEFAULT_BATCHED_TOKENS
    enforce_eager: bool = False
    activation_bytes: int | None = None
    non_torch_bytes: int = _DEFAULT_NON_TORCH
    cuda_graph_bytes: int = _DEFAULT_CUDA_GRAPHS

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise InvalidArgumentError(
                "gpu_memory_utilization", self.gpu_memory_utilization, "must be in (0, 1]"
            )
        for name in (
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "block_size",
            "max_num_seqs",
            "max_num_batched_tokens",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(name, value, "must be a positive integer")
        if self.kv_cache_dtype not in ("auto", "fp8", "fp8_e4m3", "fp8_e5m2"):
            raise InvalidArgumentError(
                "kv_cache_dtype", self.kv_cache_dtype, "must be auto, fp8, fp8_e4m3 or fp8_e5m2"
            )


@dataclass(frozen=True, slots=True)
class VllmEstimate:
    """One rank's budget and KV cache, and the figures vLLM prints at start-up."""

    spec: ModelSpec
    settings: VllmSettings
    max_model_len: int
    weights_bytes: int
    activation_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_cache_bytes: int
    page_bytes: int
    """Bytes of one block across every layer of this rank."""
    num_blocks: int
    request_bytes: int
    """KV memory one request of ``max_model_len`` tokens needs on this rank."""

    @property
    def requested_bytes(self) -> int:
        return int(self.settings.gpu_memory_bytes * self.settings.gpu_memory_utilization)

    @property
    def needed_bytes(self) -> int:
        """What one GPU needs for one request of ``max_model_len`` tokens: weights, activation
        peak, non-torch memory, CUDA graphs and that request's KV cache."""
        return (
            self.weights_bytes
            + self.activation_bytes
            + self.non_torch_bytes
            + self.cuda_graph_bytes
            + self.request_bytes
        )

    @property
    def kv_cache_tokens(self) -> int:
        """vLLM's "GPU KV cache size: N tokens"."""
        return self.num_blocks * self.settings.block_size

    @property
    def max_concurrency(self) -> float:
        """vLLM's "Maximum concurrency for max_model_len tokens per request"."""
        return self.num_blocks * self.page_bytes / self.request_bytes if self.request_bytes else 0.0

    @property
    def fits(self) -> bool:
        return self.kv_cache_bytes > 0 and self.max_concurrency >= 1.0


def _bytes_per_value(spec: ModelSpec, dtype: KvCacheDtype) -> int:
    return 1 if dtype != "auto" else 2  # bf16/fp16 models; fp8 is one byte


def _rank_layers(spec: ModelSpec, pp: int) -> range:
    per_stage = _cdiv(spec.n_layer, pp)
    return range(min(per_stage, spec.n_layer))  # the first (largest) stage


def _layer_cost(
    spec: ModelSpec, il: int, s: VllmSettings, max_len: int, dtype_bytes: int
) -> tuple[int, int]:
    """(page bytes, bytes one request of ``max_len`` tokens needs) for layer ``il`` on a rank."""
    layer = spec.layers[il]
    bs = s.block_size
    if layer.recurrent and not layer.has_kv:
        conv, ssm = recurrent_state_dims(spec)
        state = (conv + ssm) * 2 // s.tensor_parallel_size  # model dtype, split across TP
        return state, state
    if not layer.has_kv:
        return 0, 0
    mla = spec.mla
    if mla is not None and mla.compressed_cache:
        page = bs * (mla.kv_lora_rank + mla.qk_rope_head_dim) * dtype_bytes
    else:
        heads = max(1, layer.n_head_kv // s.tensor_parallel_size)
        page = bs * heads * (layer.head_dim_k + layer.head_dim_v) * dtype_bytes
    if layer.is_swa:
        tokens = min(layer.sliding_window - 1 + s.max_num_batched_tokens, max_len)
        return page, (_cdiv(tokens, bs) + 1) * page
    return page, _cdiv(max_len, bs) * page


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
    activation, in bf16), the residual stream, and the sampler's fp32 logits for
    ``max_num_seqs`` sequences (logits, probabilities and their sort)."""
    t = s.max_num_batched_tokens
    tp = s.tensor_parallel_size
    n_ff = max(spec.n_ff, spec.n_ff_expert * max(spec.n_expert_used, 1))
    mlp = t * (3 * n_ff // tp) * 2
    resid = 4 * t * spec.n_embd * 2
    sampler = 3 * s.max_num_seqs * spec.n_vocab * 4
    return mlp + resid + sampler


def estimate_vllm(spec: ModelSpec, settings: VllmSettings) -> VllmEstimate:
    """vLLM's budget on the first (fullest) rank of a TP x PP deployment."""
    s = settings
    ranks = s.tensor_parallel_size * s.pipeline_parallel_size
    max_len = s.max_model_len or spec.n_ctx_train or 4096
    dtype_bytes = _bytes_per_value(spec, s.kv_cache_dtype)
    weights = _cdiv(spec.weights.total, ranks)
    act = s.activation_bytes if s.activation_bytes is not None else activation_bytes(spec, s)
    graphs = 0 if s.enforce_eager else s.cuda_graph_bytes
    requested = int(s.gpu_memory_bytes * s.gpu_memory_utilization)
    kv = max(0, requested - weights - act - s.non_torch_bytes - graphs)
    page = request = 0
    for il in _rank_layers(spec, s.pipeline_parallel_size):
        p, r = _layer_cost(spec, il, s, max_len, dtype_bytes)
        page += p
        request += r
    blocks = kv // page if page else 0
    return VllmEstimate(
        spec=spec,
        settings=s,
        max_model_len=max_len,
        weights_bytes=weights,
        activation_bytes=act,
        non_torch_bytes=s.non_torch_bytes,
        cuda_graph_bytes=graphs,
        kv_cache_bytes=kv,
        page_bytes=page,
        num_blocks=blocks,
        request_bytes=request,
    )


def max_model_len(spec: ModelSpec, settings: VllmSettings) -> int:
    """The longest ``--max-model-len`` one request can use (vLLM's own suggestion when the
    trained context does not fit), a whole number of blocks, at most the trained context."""
    cap = spec.n_ctx_train or (1 << 21)
    base = estimate_vllm(spec, settings)
    capacity = base.num_blocks * base.page_bytes
    lo, hi = 0, cap // settings.block_size
    while lo < hi:
        mid = (lo + hi + 1) // 2
        need = estimate_vllm(
            spec, replace(settings, max_model_len=mid * settings.block_size)
        ).request_bytes
        if need <= capacity:
            lo = mid
        else:
            hi = mid - 1
    return lo * settings.block_size


def vllm_command(estimate: VllmEstimate, model: str) -> list[str]:
    """``vllm serve`` arguments that reproduce ``estimate``'s settings."""
    s = estimate.settings
    cmd = ["vllm", "serve", model, "--max-model-len", str(estimate.max_model_len)]
    cmd += ["--gpu-memory-utilization", f"{s.gpu_memory_utilization:g}"]
    if s.kv_cache_dtype != "auto":
        cmd += ["--kv-cache-dtype", s.kv_cache_dtype]
    if s.tensor_parallel_size > 1:
        cmd += ["-tp", str(s.tensor_parallel_size)]
    if s.pipeline_parallel_size > 1:
        # Pipeline stages span nodes; vLLM runs them on a Ray cluster.
        cmd += ["-pp", str(s.pipeline_parallel_size), "--distributed-executor-backend", "ray"]
    if s.max_num_seqs != _DEFAULT_MAX_SEQS:
        cmd += ["--max-num-seqs", str(s.max_num_seqs)]
    return cmd
