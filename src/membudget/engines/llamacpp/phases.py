"""llama.cpp's compute buffer by phase: the fallback for architectures without a graph builder.

The compute buffer is what ggml-alloc reserves for the worst-case graph (``n_tokens =
min(n_ctx, n_ubatch)`` tokens, one output per token, attention over the whole cache). For the
architectures :mod:`.graph` rebuilds, membudget replays the allocator over that graph
and gets llama.cpp's own figure. For the others this module takes the largest of three phases:

- attention: the KQ mask(s) (f32, or f16 with flash attention) plus, without flash attention,
  the ``n_kv x n_tokens x n_head`` f32 score matrix of one layer (softmax runs in place), plus
  the layer's activations (residual, norm, Q, K, V);
- feed-forward: gate, up and activation rows of ``n_ff`` (or ``n_ff_expert x n_expert_used``);
- output: ``n_vocab`` f32 logits per output, plus a few ``n_embd`` rows.

Measured against llama.cpp on the CPU with the graph simulation switched off
(``LlamaCppRules(simulate_graph=False)``; tests/test_llamacpp_accuracy.py): exact when the
attention phase dominates; 14.6% under at worst on the first nine architectures and 18.8% on
Jamba, where flash attention is on and the logits dominate, because ggml-alloc's placement of
the logits block depends on the inputs and freed blocks below it, which a phase model does not
see.
"""

from __future__ import annotations

from membudget.model import ModelSpec

__all__ = ["compute_bytes"]

_F32 = 4
_F16 = 2


def compute_bytes(
    spec: ModelSpec,
    *,
    n_tokens: int,
    n_kv: int,
    n_swa_kv: int,
    n_stream: int,
    flash_attn: bool,
    n_outputs: int | None = None,
) -> int:
    """Bytes of llama.cpp's CPU compute buffer for the worst-case graph (``n_outputs`` logits
    rows, ``n_tokens`` when not given)."""
    t = n_tokens
    row = t * _F32  # one f32 value per token
    e = spec.n_embd
    attn_layers = [layer for layer in spec.layers if layer.has_kv]
    has_swa = any(layer.is_swa for layer in attn_layers)
    has_full = any(not layer.is_swa for layer in attn_layers)

    # Output: logits for every output row, plus the final hidden rows.
    outputs = n_tokens if n_outputs is None else n_outputs
    output = spec.n_vocab * outputs * _F32 + 3 * e * row

    attention = 0
    if attn_layers:
        mask_elt = _F16 if flash_attn else _F32
        masks = (n_kv * t * mask_elt if has_full else 0) + (
            n_swa_kv * t * mask_elt if has_swa else 0
        )
        mla = spec.mla
        widest = 0
        for layer in attn_layers:
            cells = n_swa_kv if layer.is_swa else n_kv
            scores = 0 if flash_attn else cells * layer.n_head * row
            if mla is not None and mla.compressed_cache:
                q = layer.n_head * (mla.kv_lora_rank + mla.qk_rope_head_dim)
                kv = mla.kv_lora_rank + mla.qk_rope_head_dim
            else:
                q = layer.n_head * layer.head_dim_k
                kv = layer.n_head_kv * (layer.head_dim_k + layer.head_dim_v)
            widest = max(widest, scores + (3 * e + 2 * q + kv) * row)
        attention = masks + widest

    n_ff = spec.n_ff
    if spec.is_moe:
        n_ff = max(n_ff, spec.n_ff_expert * max(spec.n_expert_used, 1))
    ffn = (3 * n_ff + 2 * e) * row

    recurrent = 0
    r = spec.recurrent
    if r is not None and spec.n_recurrent_layers:
        # Mamba2-style input projection and convolution window over the batch.
        proj = 2 * r.d_inner + 2 * r.n_group * r.d_state + r.n_head
        recurrent = (proj + 2 * (r.d_inner + 2 * r.n_group * r.d_state) + 2 * e) * row
    return max(output, attention, ffn, recurrent)
