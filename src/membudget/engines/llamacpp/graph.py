"""llama.cpp's worst-case graph, rebuilt per architecture, and the compute buffer it needs.

``llama_context::sched_reserve`` builds the graph for ``n_tokens = min(n_ctx, n_ubatch)`` (rounded
up to a multiple of the sequence count), one output per token, over the whole cache, and lets
ggml-alloc place it; the compute buffer is what that placement needs. For the architectures
registered here, :func:`graph_compute_bytes` builds the same graph in the same order
(``src/models/<arch>.cpp`` of llama.cpp 0c1e570, with the pieces in :mod:`.ops` and
:mod:`.recurrent`) and replays ggml-alloc over it
(:func:`membudget.engines.llamacpp.ggml.allocate`). Measured against llama.cpp's CPU build
(``benchmarks/accuracy.py``: every registered architecture, with realistic and with tiny
vocabularies, eight settings each) the result equals llama.cpp's report. Other
architectures get ``None``, and the caller falls back to the phase model of
:mod:`.phases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from membudget.engines.llamacpp.ggml import Graph, Tensor, allocate
from membudget.engines.llamacpp.ops import Gating, GraphSettings, has_tensor, row_size, tensor_width
from membudget.engines.llamacpp.recurrent import RecurrentBuilder
from membudget.model import LayerSpec, ModelSpec

__all__ = [
    "GraphSettings",
    "build_graph",
    "graph_compute_bytes",
    "layer_phase",
    "simulated",
    "simulated_architectures",
]

Build = Callable[[RecurrentBuilder], None]


def _attention_inputs(b: RecurrentBuilder) -> tuple[Tensor, Tensor, Tensor]:
    """The embeddings, positions and output rows of an attention decoder, with its cache
    inputs (``build_attn_inp_kv``, ``_iswa`` beside it where some layers slide)."""
    inp = b.inp_embd()
    pos = b.inp_pos()
    b.attn_inputs()
    if b.iswa:
        b.attn_inputs("swa_")
    return inp, pos, b.out_ids()


@dataclass(frozen=True, slots=True)
class _Decoder:
    """The decoders that differ from ``llama.cpp``'s llama graph only in these switches."""

    qk_norm: bool = False
    """RMS norm on Q and K per head before RoPE (Qwen3, Gemma 3)."""
    post_norms: bool = False
    """Norms after attention and after the FFN (Gemma 2 and 3)."""
    embd_scale: bool = False
    """Token embeddings scaled by sqrt(n_embd) (Gemma)."""
    q_scale: bool = False
    """Q scaled after RoPE instead of inside the softmax (Gemma, Phi-3)."""
    attn_softcap: bool = False
    final_softcap: bool = False
    fused_up: bool = False
    """One up projection of ``2 x n_ff`` split by SwiGLU (Phi-3)."""
    residual_first: bool = False
    """The FFN residual is the first operand of its add (Phi-3), which decides which of the
    two ggml-alloc reuses in place."""
    qk_norm_if_stored: bool = False
    """Q/K norms where the file stores them (GLM-4.5)."""
    residual_scale: bool = False
    """The attention's and the FFN's outputs scaled before each residual add (Granite)."""
    logit_scale: bool = False
    """The logits scaled (Granite)."""
    routing_from_file: bool = False
    """MoE routing as the file says (gating function, renormalisation, selection bias; sigmoid
    by default) and shared experts added (GLM-4.5); otherwise softmax and renormalised."""

    def __call__(self, b: RecurrentBuilder) -> None:
        g, spec = b.g, b.spec
        qk_norm = self.qk_norm or (self.qk_norm_if_stored and b.stores(".attn_q_norm.weight"))
        gating, norm_w, bias = _routing(spec, "sigmoid")
        inp, pos, out_ids = _attention_inputs(b)
        if self.embd_scale:
            inp = g.same("SCALE", inp)
        for il, layer in b.layers():
            cur = b.norm(inp)
            q, k, v = b.qkv(layer, cur)
            if qk_norm:
                q = b.norm(q)
            q = g.same("ROPE", q, pos, None)
            if qk_norm:
                k = b.norm(k)
            k = g.same("ROPE", k, pos, None)
            if self.q_scale:
                q = g.same("SCALE", q)
            cur = b.attention(layer, q, k, v, softcap=self.attn_softcap)
            residual = inp
            if il == spec.n_layer - 1:  # only the output rows go on
                cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
            if self.post_norms:
                cur = b.norm(cur)
            if self.residual_scale:
                cur = g.same("SCALE", cur)
            ffn_inp = g.same("ADD", cur, residual)
            cur = b.norm(ffn_inp)
            if layer.moe and self.routing_from_file:
                moe = b.moe_ffn(cur, norm_w=norm_w, gating=gating, bias=bias)
                if spec.n_expert_shared:
                    moe = g.same("ADD", moe, b.ffn(cur, _shared_ff(spec, il), "_shexp"))
                cur = moe
            elif layer.moe:
                cur = b.moe_ffn(cur)
            elif self.fused_up:
                up = b.linear(cur, 2 * spec.n_ff, name="ffn_up")
                act = g.f32("GLU", (spec.n_ff, cur.ne[1]), up)
                cur = b.linear(act, spec.n_embd, spec.n_ff, "ffn_down")
            else:
                cur = b.ffn(cur, spec.n_ff)
            if self.post_norms:
                cur = b.norm(cur)
            if self.residual_scale:
                cur = g.same("SCALE", cur)
            inp = g.same("ADD", *((ffn_inp, cur) if self.residual_first else (cur, ffn_inp)))
        b.output(inp, final_softcap=self.final_softcap, logit_scale=self.logit_scale)


_GATING: dict[int, Gating] = {1: "softmax", 2: "sigmoid", 3: "softmax_weight"}


def _routing(spec: ModelSpec, default: Gating) -> tuple[Gating, bool, bool]:
    """(gating, renormalise, selection bias) of the file's MoE layers, as its keys and tensors
    say; ``default`` where ``expert_gating_func`` is unset."""
    return (
        _GATING.get(spec.expert_gating, default),
        spec.expert_weights_norm,
        has_tensor(spec, ".exp_probs_b.bias"),
    )


def _llama4(b: RecurrentBuilder) -> None:
    """Llama 4 (``src/models/llama4.cpp``): RoPE on three layers of four (the chunked ones)
    with an L2 norm (an RMS norm without weight) on Q and K after it, except where llama.cpp
    takes the model for Maverick (128 experts); on the others Q is scaled by the temperature
    input (``build_inp_attn_scale``, one value a token). MoE layers route by a sigmoid with
    the weights applied before the experts, beside one shared expert as wide as an expert.
    With ``sliding_window`` 0 in the file no layer is chunked and only the last skips RoPE."""
    g, spec = b.g, b.spec
    n_layer = spec.n_layer
    nope_step = 4 if b.iswa else n_layer  # llama4.cpp: n_no_rope_layer_step
    kq_norm = spec.n_expert != 128  # use_kq_norm = type != LLM_TYPE_17B_128E
    inp, pos, out_ids = _attention_inputs(b)
    attn_scale = g.input("F32", 1, 1, b.n_tokens, name="inp_attn_scale")
    for il, layer in b.layers():
        use_rope = (il + 1) % nope_step != 0
        cur = b.norm(inp)
        q, k, v = b.qkv(layer, cur)
        if use_rope:
            q = g.same("ROPE", q, pos, None)
            k = g.same("ROPE", k, pos, None)
            if kq_norm:
                q, k = g.same("RMS_NORM", q), g.same("RMS_NORM", k)
        else:
            q = g.same("MUL", q, attn_scale)
        cur = b.attention(layer, q, k, v)
        residual = inp
        if il == n_layer - 1:
            cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
        ffn_inp = g.same("ADD", cur, residual)
        normed = b.norm(ffn_inp)
        if layer.moe:
            moe = b.moe_ffn(normed, norm_w=False, gating="sigmoid", weight_before=True)
            cur = g.same("ADD", moe, b.ffn(normed, spec.n_ff_expert, "_shexp"))
        else:
            cur = b.ffn(normed, spec.n_ff)
        inp = g.same("ADD", cur, ffn_inp)
    b.output(inp)


def _full_width_qkv(
    b: RecurrentBuilder, layer: LayerSpec, x: Tensor, pos: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``build_qkv(..., reshape = false)`` with Q and K normed as whole projections, then
    split into heads and rotated (OLMo 2, MiniMax-M2)."""
    g, n_tok = b.g, b.n_tokens
    hk, hv, nh, nkv = layer.head_dim_k, layer.head_dim_v, layer.n_head, layer.n_head_kv
    q = b.norm(b.linear(x, nh * hk, name="attn_q"))
    k = b.norm(b.linear(x, nkv * hk, name="attn_k"))
    v = b.linear(x, nkv * hv, name="attn_v")
    q = g.same("ROPE", g.reshape(q, hk, nh, n_tok), pos, None)
    k = g.same("ROPE", g.reshape(k, hk, nkv, n_tok), pos, None)
    return q, k, g.reshape(v, hv, nkv, n_tok)


def _minimax_m2(b: RecurrentBuilder) -> None:
    """MiniMax-M2 (``src/models/minimax-m2.cpp``): whole-projection Q/K norms, every layer a
    routed MoE (the file's gating, sigmoid where unset, its selection bias, the chosen
    weights always renormalised), no shared expert."""
    g, spec = b.g, b.spec
    gating, _, bias = _routing(spec, "sigmoid")
    inp, pos, out_ids = _attention_inputs(b)
    for il, layer in b.layers():
        cur = b.attention(layer, *_full_width_qkv(b, layer, b.norm(inp), pos))
        residual = inp
        if il == spec.n_layer - 1:
            cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
        ffn_inp = g.same("ADD", cur, residual)
        cur = b.moe_ffn(b.norm(ffn_inp), norm_w=True, gating=gating, bias=bias)
        inp = g.same("ADD", cur, ffn_inp)
    b.output(inp)


def _olmo2(b: RecurrentBuilder) -> None:
    """OLMo 2 (``src/models/olmo2.cpp``): Q and K normed as whole projections before they
    are split into heads, no norm before attention or the FFN, one after each (the FFN's
    built with layer -1, so never pinned to its layer's device); a sliding window on three
    layers of four where the file has one (OLMo 3)."""
    g, spec = b.g, b.spec
    inp, pos, out_ids = _attention_inputs(b)
    for il, layer in b.layers():
        cur = b.attention(layer, *_full_width_qkv(b, layer, inp, pos))
        residual = inp
        if il == spec.n_layer - 1:
            cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
        ffn_inp = g.same("ADD", b.norm(cur), residual)
        cur = b.ffn(ffn_inp, spec.n_ff)
        # build_norm(..., il = -1): a norm graph_get_cb leaves to the scheduler
        cur = g.same("MUL", g.same("RMS_NORM", cur), g.external("F32", cur.ne[0]))
        inp = g.same("ADD", cur, ffn_inp)
    b.output(inp)


def _shared_ff(spec: ModelSpec, il: int) -> int:
    """The shared expert's FFN width: from its stored gate, else experts x shared count."""
    default = (spec.n_ff_expert or spec.n_ff) * max(spec.n_expert_shared, 1)
    return tensor_width(spec, f"blk.{il}.ffn_gate_shexp.weight", default)


def _deepseek2(b: RecurrentBuilder) -> None:
    """DeepSeek V2/V3 with the compressed MLA cache: Q's no-RoPE part absorbed into the
    latent, K cached as latent + RoPE dims, V read from the same cache (``build_attn_inp_k``)."""
    g, spec, s, n_tok = b.g, b.spec, b.s, b.n_tokens
    mla = spec.mla
    if mla is None:
        raise ValueError(f"{spec.name}: deepseek2 without MLA geometry")
    rank, rope, nope = mla.kv_lora_rank, mla.qk_rope_head_dim, mla.qk_nope_head_dim
    # DeepSeek V3 gates with a sigmoid plus a selection bias and renormalises. A GGUF says so
    # in its keys; unset, llama.cpp takes softmax (sigmoid for GLM 4.7 Lite, which it knows by
    # 47 or 48 layers and a 154,880-token vocabulary). A config.json is taken as V3 when the
    # selection bias is there, as V2 (softmax, no renormalisation) otherwise.
    if spec.source_kind == "gguf":
        lite = spec.n_layer in (47, 48) and spec.n_vocab == 154_880
        gating, norm_w, bias = _routing(spec, "sigmoid" if lite else "softmax")
    else:
        v3 = has_tensor(spec, ".exp_probs_b.bias")
        gating, norm_w, bias = ("sigmoid", True, True) if v3 else ("softmax", False, False)
    inp = b.inp_embd()
    pos = b.inp_pos()
    b.attn_inputs(k_only=True)
    out_ids = b.out_ids()
    ns, n_kv = s.n_stream, s.n_kv
    for il, layer in b.layers():
        h = layer.n_head
        cur = b.norm(inp)
        if mla.q_lora_rank:
            q_a = b.linear(cur, mla.q_lora_rank, name="attn_q_a")
            q = b.linear(b.norm(q_a), h * (nope + rope), name="attn_q_b")
        else:
            q = b.linear(cur, h * (nope + rope), name="attn_q")
        q = g.reshape(q, nope + rope, h, n_tok)
        kv_pe = b.linear(cur, rank + rope, name="attn_kv_a_mqa")
        row = kv_pe.nb[1]
        kv = b.norm(g.view(kv_pe, (rank, n_tok), (row,)))
        k_pe = g.same("ROPE", g.view(kv_pe, (rope, 1, n_tok), (row, row)), pos, None)
        q_nope = g.permute(g.view(q, (nope, h, n_tok), q.nb[1:3]), 0, 2, 1, 3)
        q_pe = g.same("ROPE", g.view(q, (rope, h, n_tok), q.nb[1:3]), pos, None)
        wk_b = g.external("F16", nope, rank, h, name="attn_k_b")
        absorbed = g.permute(g.mul_mat(wk_b, q_nope), 0, 2, 1, 3)
        q_cur = g.f32("CONCAT", (rank + rope, h, n_tok), absorbed, q_pe)
        v_cur = g.reshape(kv, rank, 1, n_tok)
        k_cur = g.f32("CONCAT", (rank + rope, 1, n_tok), v_cur, k_pe)
        for t in (q_cur, v_cur, k_cur):
            g.expand(t)
        cache = g.external(s.cache_type_k.upper(), rank + rope, n_kv, ns, kind="c")
        dst = g.reshape(cache, rank + rope, n_kv * ns) if ns > 1 else cache
        rows = g.view(k_cur, (rank + rope, n_tok), (k_cur.nb[2],))
        g.expand(g.set_rows(dst, rows, b.inputs["k_idxs"]))
        k = g.view(cache, (rank + rope, 1, n_kv, ns), (cache.nb[1], *cache.nb[1:3]))
        v = g.view(cache, (rank, 1, n_kv, ns), k.nb[1:4])
        v_mla = g.external("F16", rank, mla.v_head_dim, h, name="attn_v_b")
        cur = b.mha(q_cur, k, v, b.inputs["mask"], v_mla=v_mla)
        cur = b.linear(cur, spec.n_embd, name="attn_output")
        residual = inp
        if il == spec.n_layer - 1:
            cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
        ffn_inp = g.same("ADD", cur, residual)
        cur = b.norm(ffn_inp)
        if layer.moe:
            moe = b.moe_ffn(cur, norm_w=norm_w, gating=gating, bias=bias)
            if spec.n_expert_shared:
                moe = g.same("ADD", moe, b.ffn(cur, _shared_ff(spec, il), "_shexp"))
            cur = moe
        else:
            cur = b.ffn(cur, spec.n_ff)
        inp = g.same("ADD", cur, ffn_inp)
    b.output(inp)


def _gpt_oss(b: RecurrentBuilder) -> None:
    """gpt-oss (``src/models/openai-moe.cpp``): alternating sliding-window and full attention
    with sinks, a MoE whose softmax runs over the chosen experts only, and the output rows
    picked after the last layer rather than inside it."""
    g = b.g
    inp = b.inp_embd()
    pos = b.inp_pos()
    b.attn_inputs()
    b.attn_inputs("swa_")
    out_ids = b.out_ids()
    for _, layer in b.layers():
        cur = b.norm(inp)
        q, k, v = b.qkv(layer, cur)
        q = g.same("ROPE", q, pos, None)
        k = g.same("ROPE", k, pos, None)
        cur = b.attention(layer, q, k, v)
        ffn_inp = g.same("ADD", cur, inp)
        cur = b.moe_ffn(b.norm(ffn_inp), norm_w=False, gating="softmax_weight")
        inp = g.same("ADD", cur, ffn_inp)
    inp.mark("output")  # t_h_nextn: the hidden state for next-token prediction
    b.output(g.get_rows(inp, out_ids))


@dataclass(frozen=True, slots=True)
class _Hybrid:
    """Recurrent models and hybrids of recurrent and attention layers: Mamba, Mamba2
    (``mamba.cpp``), Granite 4 hybrid (``granite-hybrid.cpp``), Jamba (``jamba.cpp``) and
    LFM2 (``lfm2.cpp``). Each layer is recurrent or attention; in the hybrids an FFN follows."""

    rope: bool = True
    qk_norm: bool = False
    residual_first: bool = False
    """The residual is the first operand of both adds (Jamba, LFM2)."""
    moe_norm_w: bool = True

    def __call__(self, b: RecurrentBuilder) -> None:
        g, spec = b.g, b.spec
        kind = spec.recurrent.kind if spec.recurrent else ""
        hybrid = any(layer.has_kv for layer in spec.layers)
        inp = b.inp_embd()
        b.rs_input()
        if hybrid:
            b.attn_inputs()
            if b.iswa:  # LFM2 with a sliding window (llm_graph_input_mem_hybrid_iswa)
                b.attn_inputs("swa_")
        out_ids = b.out_ids()
        pos = b.inp_pos() if hybrid and self.rope else None

        def add(residual: Tensor, x: Tensor) -> Tensor:
            return g.same("ADD", *((residual, x) if self.residual_first else (x, residual)))

        for il, layer in b.layers():
            cur = b.norm(inp)
            if layer.recurrent:
                step = {"mamba2": b.mamba2, "shortconv": b.shortconv}.get(kind, b.mamba)
                cur = step(cur)
            else:
                q, k, v = b.qkv(layer, cur)
                if self.qk_norm:
                    q, k = b.norm(q), b.norm(k)
                if pos is not None:
                    q, k = g.same("ROPE", q, pos, None), g.same("ROPE", k, pos, None)
                cur = b.attention(layer, q, k, v)
            residual = inp
            if il == spec.n_layer - 1:
                cur, residual = g.get_rows(cur, out_ids), g.get_rows(residual, out_ids)
            if not hybrid:
                inp = g.same("ADD", cur, residual)
                continue
            ffn_inp = add(residual, cur)
            cur = b.norm(ffn_inp)
            cur = b.moe_ffn(cur, norm_w=self.moe_norm_w) if layer.moe else b.ffn(cur, spec.n_ff)
            inp = add(ffn_inp, cur)
        b.output(inp)


def _falcon_h1(b: RecurrentBuilder) -> None:
    """Falcon-H1 (``falcon-h1.cpp``): attention and a Mamba2 mixer over the same input, summed,
    in every layer; then the FFN."""
    g, spec = b.g, b.spec
    inp = b.inp_embd()
    pos = b.inp_pos()
    b.rs_input()
    b.attn_inputs()
    out_ids = b.out_ids()
    for il, layer in b.layers():
        q, k, v = b.qkv(layer, b.norm(inp))
        q, k = g.same("ROPE", q, pos, None), g.same("ROPE", k, pos, None)
        attn = b.attention(layer, q, k, v)
        mixed = g.same("ADD", attn, b.mamba2(b.norm(inp)))
        ffn_inp = g.same("ADD", mixed, inp)
        if il == spec.n_layer - 1:
            ffn_inp = g.get_rows(ffn_inp, out_ids)
        cur = b.ffn(b.norm(ffn_inp), spec.n_ff)
        inp = g.same("ADD", cur, ffn_inp)
    b.output(inp)


def _rwkv6(b: RecurrentBuilder) -> None:
    """RWKV-6 (``rwkv6.cpp``): per layer, a time mix and a channel mix, each fed the previous
    token through the two token-shift rows kept in the recurrent state."""
    g, spec, n_tok, n = b.g, b.spec, b.n_tokens, b.s.n_seqs
    e, per_seq = spec.n_embd, b.n_tokens // b.s.n_seqs
    inp = b.layer_norm(b.inp_embd())
    b.rs_input()
    out_ids = b.out_ids()
    for il, _ in b.layers():
        inp = g.reshape(inp, e, per_seq, n)
        shift = b.conv_window(e, 2)  # token_shift_count rows of n_embd
        stride = shift.nb[1:3]
        att_shift = g.view(shift, (e, 1, n), stride)
        ffn_shift = g.view(shift, (e, 1, n), stride)
        att_norm = b.layer_norm(inp)
        head = g.view(att_norm, (e, per_seq - 1, n), att_norm.nb[1:3])
        x_prev = g.f32("CONCAT", (e, per_seq, n), att_shift, head)
        cur = b.rwkv6_time_mix(att_norm, x_prev)
        ffn_inp = g.same("ADD", cur, inp)
        ffn_norm = b.layer_norm(ffn_inp)
        head = g.view(ffn_norm, (e, per_seq - 1, n), ffn_norm.nb[1:3])
        x_prev = g.f32("CONCAT", (e, per_seq, n), ffn_shift, head)
        last_att = g.view(att_norm, (e, 1, n), att_norm.nb[1:3])
        last_ffn = g.view(ffn_norm, (e, 1, n), ffn_norm.nb[1:3])
        shift = g.f32("CONCAT", (e, 2, n), last_att, last_ffn)
        store = g.external("F32", 2 * e * n, kind="c")
        g.expand(g.copy_into(g.view(shift, (2 * e * n,), ()), store))
        ffn_inp = g.reshape(ffn_inp, e, n_tok)
        ffn_norm = g.reshape(ffn_norm, e, n_tok)
        x_prev = g.reshape(x_prev, e, n_tok)
        if il == spec.n_layer - 1:
            ffn_inp = g.get_rows(ffn_inp, out_ids)
            ffn_norm = g.get_rows(ffn_norm, out_ids)
            x_prev = g.get_rows(x_prev, out_ids)
        inp = g.same("ADD", b.rwkv6_channel_mix(ffn_norm, x_prev), ffn_inp)
    b.output(inp, layer_norm=True)


@dataclass(frozen=True, slots=True)
class _GatedDeltaNet:
    """Qwen3-Next (``qwen3next.cpp``) and Qwen3.5 (``qwen35.cpp``, ``qwen35moe.cpp``): gated
    delta net layers and gated attention layers (Q doubled for a sigmoid gate on the heads, Q/K
    norms), each followed by a dense FFN or a MoE with a sigmoid-gated shared expert; the
    output rows are picked after the final norm."""

    mrope: bool = False
    """Multi-section RoPE: four positions per token (Qwen3.5)."""
    repeat_heads: bool = True
    """Q and K repeated to the value heads before the fused op (Qwen3-Next)."""

    def __call__(self, b: RecurrentBuilder) -> None:
        g, spec, n_tok = b.g, b.spec, b.n_tokens
        inp = b.inp_embd()
        b.rs_input()
        b.attn_inputs()
        pos = g.input("I32", n_tok * 4, name="inp_pos") if self.mrope else b.inp_pos()
        out_ids = b.out_ids()
        for il, layer in b.layers():
            cur = b.norm(inp)
            g.expand(cur)
            if layer.recurrent:
                cur = b.gated_delta_net(cur, repeat=self.repeat_heads)
            else:
                d, h, kv = layer.head_dim_k, layer.n_head, layer.n_head_kv
                q_full = b.linear(cur, 2 * d * h, name="attn_q")
                k = g.reshape(b.linear(cur, d * kv, name="attn_k"), d, kv, n_tok)
                v = g.reshape(b.linear(cur, d * kv, name="attn_v"), d, kv, n_tok)
                heads = (row_size(q_full, 2 * d), row_size(q_full, 2 * d * h))
                q = g.view(q_full, (d, h, n_tok), heads)
                gate = g.view(q_full, (d, h, n_tok), heads)
                q = g.same("ROPE", b.norm(q), pos, None)
                k = g.same("ROPE", b.norm(k), pos, None)
                cur = b.attention(layer, q, k, v, project=False)
                gate = g.same("UNARY", g.cont(gate, d * h, n_tok))  # sigmoid
                cur = b.linear(g.same("MUL", cur, gate), spec.n_embd, d * h, "attn_output")
            residual = g.same("ADD", cur, inp)
            post = b.norm(residual)
            if layer.moe:
                moe = b.moe_ffn(post)
                shared = b.ffn(post, _shared_ff(spec, il), "_shexp")
                router = b.linear(post, 1, name="ffn_gate_inp_shexp")
                shared = g.same("MUL", shared, g.same("UNARY", router))
                cur = g.same("ADD", moe, shared)
            else:
                cur = b.ffn(post, spec.n_ff)
            inp = g.same("ADD", cur, residual)
        cur = b.norm(inp)
        cur.mark("output")  # t_h_nextn
        rows = g.get_rows(cur, out_ids)
        rows.mark("output")  # t_embd
        logits = b.linear(rows, spec.n_vocab, name="output")
        logits.mark("output")
        g.expand(logits)


# Architectures whose graph is rebuilt here, keyed by GGUF general.architecture. Each one is
# checked against llama.cpp by tests/test_llamacpp_accuracy.py (tests/arch_models.py).
_BUILDERS: dict[str, Build] = {
    "llama": _Decoder(),
    "qwen2": _Decoder(),  # Q, K, V biases are added in place
    "qwen3": _Decoder(qk_norm=True),
    "qwen3moe": _Decoder(qk_norm=True),
    "phi3": _Decoder(q_scale=True, fused_up=True, residual_first=True),
    # granite.cpp: the embedding, residual and logit scales real Granite files all carry
    # (each an in-place ggml_scale); dense layers only (its MoE variant is granitemoe)
    "granite": _Decoder(embd_scale=True, residual_scale=True, logit_scale=True),
    "gemma2": _Decoder(
        post_norms=True, embd_scale=True, q_scale=True, attn_softcap=True, final_softcap=True
    ),
    "gemma3": _Decoder(qk_norm=True, post_norms=True, embd_scale=True, q_scale=True),
    "glm4moe": _Decoder(qk_norm_if_stored=True, routing_from_file=True),
    "llama4": _llama4,
    "olmo2": _olmo2,
    "minimax-m2": _minimax_m2,
    "deepseek2": _deepseek2,
    "gpt-oss": _gpt_oss,
    "mamba": _Hybrid(),
    "mamba2": _Hybrid(),
    "granitehybrid": _Hybrid(),
    "falcon-h1": _falcon_h1,
    "rwkv6": _rwkv6,
    "qwen3next": _GatedDeltaNet(),
    "qwen35": _GatedDeltaNet(mrope=True, repeat_heads=False),
    "qwen35moe": _GatedDeltaNet(mrope=True, repeat_heads=False),
    "jamba": _Hybrid(rope=False, residual_first=True, moe_norm_w=False),
    "lfm2": _Hybrid(qk_norm=True, residual_first=True),
}


def layer_phase(spec: ModelSpec, il: int) -> int:
    """What a builder reads from a layer's index beyond its :class:`LayerSpec` and its stored
    tensors (besides whether it is the last): Llama 4's place in its four-layer RoPE
    pattern. Layers of one phase, spec and tensors build the same subgraph."""
    return (il + 1) % 4 if spec.architecture == "llama4" else 0


def simulated_architectures() -> tuple[str, ...]:
    """Architectures whose compute buffer comes from the graph simulation."""
    return tuple(sorted(_BUILDERS))


def _supported(spec: ModelSpec) -> bool:
    if spec.n_layer == 0 or spec.embedding_only:  # embedding graphs keep no cache
        return False
    if spec.architecture == "deepseek2":  # older files cache full heads: another graph
        return spec.mla is not None and spec.mla.compressed_cache
    if spec.architecture == "granite" and spec.is_moe:  # granite.cpp's MoE branch: not rebuilt
        return False
    for layer in spec.layers:  # a geometry llama.cpp itself would refuse
        if layer.has_kv and min(layer.n_head, layer.head_dim_k, layer.head_dim_v) <= 0:
            return False
    if spec.is_moe and not 0 < spec.n_expert_used <= spec.n_expert:
        return False
    r = spec.recurrent
    if r is None:  # recurrent layers need their geometry
        return not any(layer.recurrent for layer in spec.layers)
    if r.d_conv < 2 and r.kind != "rwkv6":
        return False
    if r.kind == "gated_delta_net":
        return (
            spec.architecture in ("qwen3next", "qwen35", "qwen35moe")
            and min(r.n_head, r.n_group, r.d_state) > 0
            and r.n_head % r.n_group == 0
            and r.d_inner % r.n_head == 0
        )
    if r.kind == "rwkv6":  # the separate-lerp layout, not the fused one
        return (
            r.head_dim > 0
            and spec.n_embd % r.head_dim == 0
            and not has_tensor(spec, ".time_mix_lerp_fused.weight")
        )
    if r.kind in ("mamba", "mamba2"):
        return r.n_head > 0 and r.d_inner % r.n_head == 0 and (r.kind == "mamba" or r.n_group > 0)
    return r.kind == "shortconv"


def simulated(spec: ModelSpec) -> bool:
    """Whether :func:`build_graph` rebuilds ``spec``'s graph."""
    return spec.architecture in _BUILDERS and _supported(spec)


def build_graph(
    spec: ModelSpec, settings: GraphSettings, keep: frozenset[int] | None = None
) -> Graph | None:
    """llama.cpp's worst-case graph for ``spec``, or ``None`` for an architecture this module
    does not rebuild. ``keep``: build only these layers (:mod:`.reduce`)."""
    build = _BUILDERS.get(spec.architecture)
    if build is None or not _supported(spec):
        return None
    b = RecurrentBuilder(spec, settings, keep)
    build(b)
    return b.g


def graph_compute_bytes(spec: ModelSpec, settings: GraphSettings) -> int | None:
    """Bytes ggml-alloc reserves for llama.cpp's worst-case graph on one CPU backend, or
    ``None`` for an architecture this module does not rebuild."""
    g = build_graph(spec, settings)
    return None if g is None else allocate(g, settings.alignment)
