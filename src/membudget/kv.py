"""KV cache and recurrent-state arithmetic on a ModelSpec, layer by layer.

Engine-free: which layers cache what, and how many bytes a row of the cache holds. The engine
profiles decide how many rows (cells) each cache gets. Rules:

- K and V rows are ``n_head_kv * head_dim`` elements, with K and V head dims kept separate;
  a layer with ``n_head_kv == 0`` (recurrent, or reusing another layer's cache) has none.
- MLA with a compressed cache stores one latent row per token: ``kv_lora_rank + rope`` elements
  of K and no V (current llama.cpp and vLLM). Older MLA files cache full K and V heads.
- Cache rows are stored as a ggml type, so a q8_0 row of 128 values is 4 blocks of 34 bytes.
- Recurrent layers keep a constant state per sequence: a convolution window and an SSM (or
  WKV / delta-rule) state, in F32.
"""

from __future__ import annotations

from dataclasses import dataclass

from membudget.errors import InvalidArgumentError
from membudget.model import LayerSpec, ModelSpec
from membudget.quant import CACHE_TYPES, GGMLType, ggml_type_by_name

__all__ = [
    "CacheLayer",
    "cache_layers",
    "cache_type",
    "kv_bytes_per_token",
    "recurrent_state_dims",
    "row_bytes",
]


def cache_type(name: str) -> GGMLType:
    """The ggml type of a KV-cache type name (``f16``, ``q8_0``, ...), validated."""
    qtype = ggml_type_by_name(name)
    if qtype is None or name.lower() not in CACHE_TYPES:
        raise InvalidArgumentError("cache type", name, f"must be one of {', '.join(CACHE_TYPES)}")
    return qtype


def row_bytes(qtype: GGMLType, n: int) -> int:
    """Bytes of one cache row of ``n`` values; ``n`` must be a whole number of blocks."""
    if n % qtype.block_size:
        raise InvalidArgumentError(
            "cache row",
            n,
            f"is not a multiple of {qtype.name}'s block of {qtype.block_size} values",
        )
    return qtype.nbytes(n)


@dataclass(frozen=True, slots=True)
class CacheLayer:
    """What one layer caches per token: K and V row widths (elements) and its window."""

    index: int
    n_embd_k: int
    n_embd_v: int
    sliding_window: int


def _dims(spec: ModelSpec, layer: LayerSpec) -> tuple[int, int]:
    mla = spec.mla
    if mla is not None and mla.compressed_cache:
        return mla.kv_lora_rank + mla.qk_rope_head_dim, 0
    return layer.n_head_kv * layer.head_dim_k, layer.n_head_kv * layer.head_dim_v


def cache_layers(spec: ModelSpec) -> tuple[CacheLayer, ...]:
    """Every layer that keeps a KV cache, with its row widths."""
    out = []
    for il, layer in enumerate(spec.layers):
        if not layer.has_kv:
            continue
        k, v = _dims(spec, layer)
        out.append(CacheLayer(il, k, v, layer.sliding_window))
    return tuple(out)


def kv_bytes_per_token(spec: ModelSpec, type_k: str = "f16", type_v: str = "f16") -> int:
    """Bytes the KV cache grows by per token of context, counting every caching layer
    (sliding-window layers included, as they grow until their window is full)."""
    tk, tv = cache_type(type_k), cache_type(type_v)
    return sum(row_bytes(tk, c.n_embd_k) + row_bytes(tv, c.n_embd_v) for c in cache_layers(spec))


def recurrent_state_dims(spec: ModelSpec) -> tuple[int, int]:
    """Per recurrent layer and sequence: (conv-state values, SSM-state values), F32.

    Mamba/Mamba2: ``(d_conv - 1) * (d_inner + 2 * n_group * d_state)`` and ``d_state * d_inner``;
    gated delta net uses the same shapes with its key/value dims; RWKV keeps token-shift rows
    and a ``head_size``-square state per head; LFM2 keeps ``(L - 1) * n_embd`` of conv state.
    """
    r = spec.recurrent
    if r is None:
        return 0, 0
    if r.kind in ("rwkv6", "rwkv7"):
        token_shift = 2  # llama.cpp default token_shift_count
        return token_shift * spec.n_embd, spec.n_embd * r.head_dim
    if r.kind == "shortconv":
        return spec.n_embd * max(r.d_conv - 1, 0), 0
    conv = max(r.d_conv - 1, 0) * (r.d_inner + 2 * r.n_group * r.d_state)
    return conv, r.d_state * r.d_inner
