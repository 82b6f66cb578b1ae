"""Small GGUF models of many architectures that the real llama.cpp loads.

Tensor names and shapes follow llama.cpp's loaders (``src/models/<arch>.cpp``). Sizes are small
(256-wide, a few layers) but the vocabulary is realistic (8192) so logits and attention both
matter in the compute buffer, as they do for real models. ``SMALL_VOCAB`` holds the same models
with 512 tokens, where the layers' own working set dominates instead.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from pathlib import Path

from gguf.constants import GGMLQuantizationType as Q

from tests.ggufs import Shape, Tiny, llama_tensors, write_model

E, H, KV, D, F = 256, 4, 2, 64, 512
# The vocabulary: realistic (8192) by default, so the logits dominate the compute buffer where
# attention does not; the "-v512" variants shrink it so the layers' own working set dominates.
_VOCAB: ContextVar[int] = ContextVar("vocab", default=8192)
Tensors = list[tuple[str, Shape]]
# The Mamba2 geometry both SSM test models share: d_inner 512, d_state 64, 8 heads, 1 group.
_SSM_KEYS: dict[str, object] = {
    "{arch}.ssm.conv_kernel": 4,
    "{arch}.ssm.inner_size": 512,
    "{arch}.ssm.state_size": 64,
    "{arch}.ssm.time_step_rank": 8,
    "{arch}.ssm.group_count": 1,
}


def _base(n_layer: int, tied: bool = False) -> Tensors:
    return list(llama_tensors(Tiny(n_layer=n_layer, n_embd=E, n_vocab=_VOCAB.get(), tied=tied)))


def _attn(p: str, n_kv: int = KV, qk_norm: bool = False) -> Tensors:
    out: Tensors = [
        (p + "attn_norm.weight", (E,)),
        (p + "attn_q.weight", (E, H * D)),
        (p + "attn_k.weight", (E, n_kv * D)),
        (p + "attn_v.weight", (E, n_kv * D)),
        (p + "attn_output.weight", (H * D, E)),
    ]
    if qk_norm:
        out += [(p + "attn_q_norm.weight", (D,)), (p + "attn_k_norm.weight", (D,))]
    return out


def _ffn(p: str, n_ff: int = F, *, norm: bool = True) -> Tensors:
    return [
        *([(p + "ffn_norm.weight", (E,))] if norm else []),
        (p + "ffn_gate.weight", (E, n_ff)),
        (p + "ffn_up.weight", (E, n_ff)),
        (p + "ffn_down.weight", (n_ff, E)),
    ]


def _moe(p: str, n_exp: int, n_ff: int, shared: int = 0, *, norm: bool = True) -> Tensors:
    out: Tensors = [
        *([(p + "ffn_norm.weight", (E,))] if norm else []),
        (p + "ffn_gate_inp.weight", (E, n_exp)),
        (p + "ffn_gate_exps.weight", (E, n_ff, n_exp)),
        (p + "ffn_up_exps.weight", (E, n_ff, n_exp)),
        (p + "ffn_down_exps.weight", (n_ff, E, n_exp)),
    ]
    if shared:
        out += [
            (p + "ffn_gate_shexp.weight", (E, n_ff * shared)),
            (p + "ffn_up_shexp.weight", (E, n_ff * shared)),
            (p + "ffn_down_shexp.weight", (n_ff * shared, E)),
        ]
    return out


def _mamba2(p: str, d_inner: int, d_state: int, n_head: int) -> Tensors:
    conv = d_inner + 2 * d_state
    return [
        (p + "attn_norm.weight", (E,)),
        (p + "ssm_in.weight", (E, 2 * d_inner + 2 * d_state + n_head)),
        (p + "ssm_conv1d.weight", (4, conv)),
        (p + "ssm_conv1d.bias", (conv,)),
        (p + "ssm_dt.bias", (n_head,)),
        (p + "ssm_a", (1, n_head)),
        (p + "ssm_d", (1, n_head)),
        (p + "ssm_norm.weight", (d_inner, 1)),
        (p + "ssm_out.weight", (d_inner, E)),
    ]


# The Mamba 1 geometry both Mamba 1 test models share: d_inner 512 (2 x n_embd, as llama.cpp
# requires), d_state 16, dt_rank 16.
_M1_INNER, _M1_STATE, _M1_RANK = 2 * E, 16, 16
_MAMBA1_KEYS: dict[str, object] = {
    "{arch}.ssm.conv_kernel": 4,
    "{arch}.ssm.inner_size": _M1_INNER,
    "{arch}.ssm.state_size": _M1_STATE,
    "{arch}.ssm.time_step_rank": _M1_RANK,
}


def _mamba1(p: str, *, norms: bool = False) -> Tensors:
    """A Mamba 1 block; ``norms`` adds Jamba's dt/B/C RMS norms."""
    d_inner, d_state, rank = _M1_INNER, _M1_STATE, _M1_RANK
    norm_dt: Tensors = [(p + "ssm_dt_norm.weight", (rank,))] if norms else []
    norm_bc: Tensors = (
        [(p + "ssm_b_norm.weight", (d_state,)), (p + "ssm_c_norm.weight", (d_state,))]
        if norms
        else []
    )
    return [
        (p + "attn_norm.weight", (E,)),
        (p + "ssm_in.weight", (E, 2 * d_inner)),
        (p + "ssm_conv1d.weight", (4, d_inner)),
        (p + "ssm_conv1d.bias", (d_inner,)),
        (p + "ssm_x.weight", (d_inner, rank + 2 * d_state)),
        *norm_dt,
        (p + "ssm_dt.weight", (rank, d_inner)),
        (p + "ssm_dt.bias", (d_inner,)),
        *norm_bc,
        (p + "ssm_a", (d_state, d_inner)),
        (p + "ssm_d", (d_inner,)),
        (p + "ssm_out.weight", (d_inner, E)),
    ]


def _nextn(p: str) -> Tensors:
    """The extra tensors of a multi-token-prediction block (DeepSeek, GLM)."""
    return [
        (p + "nextn.eh_proj.weight", (2 * E, E)),
        (p + "nextn.enorm.weight", (E,)),
        (p + "nextn.hnorm.weight", (E,)),
        (p + "nextn.shared_head_norm.weight", (E,)),
    ]


def _tiny(arch: str, n_layer: int, **kw: object) -> Tiny:
    base: dict[str, object] = {
        "n_embd": E,
        "n_head": H,
        "head_dim": D,
        "n_ff": F,
        "n_vocab": _VOCAB.get(),
    }
    return Tiny(arch=arch, n_layer=n_layer, **{**base, **kw})  # type: ignore[arg-type]


def llama(path: Path, qtype: Q = Q.F16) -> Path:
    return write_model(path, _tiny("llama", 4, n_head_kv=KV, matrix_type=qtype))


def qwen2(path: Path, qtype: Q = Q.F16) -> Path:
    """Qwen2/2.5: llama with biases on Q, K and V."""
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += _attn(p) + _ffn(p)
        tensors += [(p + "attn_q.bias", (H * D,)), (p + "attn_k.bias", (KV * D,))]
        tensors += [(p + "attn_v.bias", (KV * D,))]
    return write_model(path, _tiny("qwen2", 4, n_head_kv=KV, matrix_type=qtype), tensors)


def qwen3(path: Path, qtype: Q = Q.F16) -> Path:
    tensors = _base(0)
    for il in range(4):
        tensors += _attn(f"blk.{il}.", qk_norm=True) + _ffn(f"blk.{il}.")
    return write_model(path, _tiny("qwen3", 4, n_head_kv=KV, matrix_type=qtype), tensors)


def qwen3moe(path: Path, qtype: Q = Q.F16) -> Path:
    tensors = _base(0)
    for il in range(4):
        tensors += _attn(f"blk.{il}.", qk_norm=True) + _moe(f"blk.{il}.", 8, 128)
    extra = {
        "{arch}.expert_count": 8,
        "{arch}.expert_used_count": 2,
        "{arch}.expert_feed_forward_length": 128,
    }
    return write_model(
        path, _tiny("qwen3moe", 4, n_head_kv=KV, matrix_type=qtype, extra=extra), tensors
    )


def _gemma(arch: str, path: Path, n_layer: int, qk_norm: bool, qtype: Q) -> Path:
    tensors = _base(0, tied=True)
    for il in range(n_layer):
        p = f"blk.{il}."
        tensors += _attn(p, qk_norm=qk_norm) + _ffn(p)
        tensors += [(p + "post_attention_norm.weight", (E,)), (p + "post_ffw_norm.weight", (E,))]
    extra: dict[str, object] = {}
    if arch == "gemma2":
        extra = {"{arch}.attn_logit_softcapping": 50.0, "{arch}.final_logit_softcapping": 30.0}
    m = _tiny(arch, n_layer, n_head_kv=KV, matrix_type=qtype, tied=True, n_swa=128, extra=extra)
    return write_model(path, m, tensors)


def gemma2(path: Path, qtype: Q = Q.F16) -> Path:
    return _gemma("gemma2", path, 4, False, qtype)


def gemma3(path: Path, qtype: Q = Q.F16) -> Path:
    return _gemma("gemma3", path, 8, True, qtype)


def deepseek2(path: Path, qtype: Q = Q.F16, *, mtp: bool = False) -> Path:
    """MLA with a compressed (K-only) cache, one dense layer then MoE with a shared expert.
    With ``mtp`` a fifth, multi-token-prediction block follows, which llama.cpp skips."""
    kv_lora, rope, nope, v_dim = 128, 32, 64, 64
    tensors = _base(0)
    n_block = 5 if mtp else 4
    for il in range(n_block):
        p = f"blk.{il}."
        tensors += [
            (p + "attn_norm.weight", (E,)),
            (p + "attn_q.weight", (E, H * (nope + rope))),
            (p + "attn_kv_a_mqa.weight", (E, kv_lora + rope)),
            (p + "attn_kv_a_norm.weight", (kv_lora,)),
            (p + "attn_k_b.weight", (nope, kv_lora, H)),
            (p + "attn_v_b.weight", (kv_lora, v_dim, H)),
            (p + "attn_output.weight", (H * v_dim, E)),
        ]
        tensors += _ffn(p) if il == 0 else _moe(p, 8, 128, shared=1)
        if il == 4:
            tensors += _nextn(p)
    extra = {
        "{arch}.nextn_predict_layers": 1 if mtp else 0,
        "{arch}.leading_dense_block_count": 1,
        "{arch}.attention.q_lora_rank": 0,
        "{arch}.attention.kv_lora_rank": kv_lora,
        "{arch}.attention.key_length_mla": nope + rope,
        "{arch}.attention.value_length_mla": v_dim,
        "{arch}.expert_count": 8,
        "{arch}.expert_used_count": 2,
        "{arch}.expert_shared_count": 1,
        "{arch}.expert_feed_forward_length": 128,
        "{arch}.expert_weights_scale": 1.0,
    }
    m = _tiny(
        "deepseek2",
        n_block,
        n_head_kv=1,
        head_dim=kv_lora + rope,
        head_dim_v=kv_lora,
        rope_dims=rope,
        matrix_type=qtype,
        extra=extra,
    )
    return write_model(path, m, tensors)


def glm4moe(path: Path, qtype: Q = Q.F16) -> Path:
    """GLM-4.5 style: biased Q/K/V with Q/K norms, one dense layer then MoE with sigmoid
    gating, a selection bias, renormalised weights and a shared expert; an MTP block last."""
    n_exp, n_ff = 8, 128
    tensors = _base(0)
    for il in range(5):
        p = f"blk.{il}."
        tensors += _attn(p, qk_norm=True)
        tensors += [(p + "attn_q.bias", (H * D,)), (p + "attn_k.bias", (KV * D,))]
        tensors += [(p + "attn_v.bias", (KV * D,))]
        tensors += [(p + "post_attention_norm.weight", (E,))]
        if il == 0:
            tensors += _ffn(p, norm=False)
        else:
            tensors += _moe(p, n_exp, n_ff, shared=1, norm=False)
            tensors += [(p + "exp_probs_b.bias", (n_exp,))]
        if il == 4:
            tensors += _nextn(p)
    extra: dict[str, object] = {
        "{arch}.leading_dense_block_count": 1,
        "{arch}.expert_count": n_exp,
        "{arch}.expert_used_count": 2,
        "{arch}.expert_shared_count": 1,
        "{arch}.expert_feed_forward_length": n_ff,
        "{arch}.expert_weights_norm": True,
        "{arch}.expert_weights_scale": 2.5,
        "{arch}.expert_gating_func": 2,
        "{arch}.nextn_predict_layers": 1,
    }
    m = _tiny("glm4moe", 5, n_head_kv=KV, matrix_type=qtype, extra=extra)
    return write_model(path, m, tensors)


def mamba(path: Path, qtype: Q = Q.F16) -> Path:
    """Mamba 1 (the geometry of ``_mamba1``)."""
    tensors = _base(0)
    for il in range(4):
        tensors += _mamba1(f"blk.{il}.")
    extra = dict(_MAMBA1_KEYS)
    return write_model(
        path, _tiny("mamba", 4, n_head=0, n_head_kv=0, matrix_type=qtype, extra=extra), tensors
    )


def jamba(path: Path, qtype: Q = Q.F16) -> Path:
    """Jamba: Mamba 1 layers with dt/B/C norms, one attention layer, MoE on odd layers."""
    n_exp = 8
    kv = (0, 0, KV, 0)
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += _attn(p) if kv[il] else _mamba1(p, norms=True)
        tensors += _moe(p, n_exp, F) if il % 2 else _ffn(p)
    extra = {**_MAMBA1_KEYS, "{arch}.expert_count": n_exp, "{arch}.expert_used_count": 2}
    return write_model(
        path, _tiny("jamba", 4, n_head_kv=kv, matrix_type=qtype, extra=extra), tensors
    )


def falcon_h1(path: Path, qtype: Q = Q.F16, *, ssm_norm: bool = True) -> Path:
    """Falcon-H1: attention and a Mamba2 mixer side by side in every layer, then the FFN;
    without ``ssm_norm`` the mixer has no gated norm (``mamba_rms_norm`` off, as in the
    released models)."""
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        mixer = _mamba2(p, 512, 64, 8)[1:]
        tensors += _attn(p) + [t for t in mixer if ssm_norm or "ssm_norm" not in t[0]]
        tensors += _ffn(p, norm=False)
        tensors += [(p + "ffn_norm", (E,))]  # llama.cpp names it without ".weight"
    extra = dict(_SSM_KEYS)
    return write_model(
        path, _tiny("falcon-h1", 4, n_head_kv=KV, matrix_type=qtype, extra=extra), tensors
    )


def rwkv6(path: Path, qtype: Q = Q.F16) -> Path:
    """RWKV-6: time mix (WKV6, head size 64) and channel mix; no attention, no KV cache."""
    mix, decay = 32, 64
    tensors: Tensors = [
        ("token_embd.weight", (E, _VOCAB.get())),
        ("token_embd_norm.weight", (E,)),
        ("token_embd_norm.bias", (E,)),
        ("output_norm.weight", (E,)),
        ("output_norm.bias", (E,)),
        ("output.weight", (E, _VOCAB.get())),
    ]
    for il in range(4):
        p = f"blk.{il}."
        tensors += [
            (p + n + s, (E,))
            for n in ("attn_norm", "attn_norm_2", "time_mix_ln")
            for s in (".weight", ".bias")
        ]
        tensors += [(p + f"time_mix_lerp_{x}.weight", (E, 1, 1)) for x in "xwkvrg"]
        tensors += [(p + f"channel_mix_lerp_{x}.weight", (E, 1, 1)) for x in "kr"]
        tensors += [
            (p + "time_mix_w1.weight", (E, mix * 5)),
            (p + "time_mix_w2.weight", (mix, E, 5)),
            (p + "time_mix_first.weight", (D, E // D)),
            (p + "time_mix_decay.weight", (E,)),
            (p + "time_mix_decay_w1.weight", (E, decay)),
            (p + "time_mix_decay_w2.weight", (decay, E)),
            (p + "time_mix_key.weight", (E, E)),
            (p + "time_mix_value.weight", (E, E)),
            (p + "time_mix_receptance.weight", (E, E)),
            (p + "time_mix_gate.weight", (E, E)),
            (p + "time_mix_output.weight", (E, E)),
            (p + "channel_mix_key.weight", (E, F)),
            (p + "channel_mix_value.weight", (F, E)),
            (p + "channel_mix_receptance.weight", (E, E)),
        ]
    extra = {
        "{arch}.wkv.head_size": D,
        "{arch}.time_mix_extra_dim": mix,
        "{arch}.time_decay_extra_dim": decay,
        "{arch}.token_shift_count": 2,
        "{arch}.attention.layer_norm_epsilon": 1e-5,
    }
    m = _tiny("rwkv6", 4, n_head=0, n_head_kv=0, matrix_type=qtype, extra=extra)
    return write_model(path, m, tensors)


def _gated_delta_net(
    path: Path, qtype: Q, arch: str, *, qkvz: str, moe: bool, mrope: bool = False
) -> Path:
    """Qwen3-Next and Qwen3.5: gated delta net (linear attention) layers and, every 4th layer,
    gated attention (Q doubled for the output gate, Q/K norms); a dense FFN or a MoE with a
    sigmoid-gated shared expert. ``qkvz`` picks the linear layers' projections: ``"ssm_in"``
    (one, Qwen3-Next's first layout), ``"split"`` (``attn_qkv`` + ``attn_gate``, beta and alpha
    in ``ssm_ba``) or ``"separate"`` (Qwen3.5: ``ssm_beta`` and ``ssm_alpha`` too)."""
    d_state, n_k, n_v, n_exp, n_ff = 64, 2, 4, 8, 128
    key, value = d_state * n_k, d_state * n_v
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += [(p + "attn_norm.weight", (E,)), (p + "post_attention_norm.weight", (E,))]
        if il == 3:
            tensors += [
                (p + "attn_q.weight", (E, 2 * H * D)),
                (p + "attn_k.weight", (E, KV * D)),
                (p + "attn_v.weight", (E, KV * D)),
                (p + "attn_output.weight", (H * D, E)),
                (p + "attn_q_norm.weight", (D,)),
                (p + "attn_k_norm.weight", (D,)),
            ]
        else:
            if qkvz == "ssm_in":
                tensors += [(p + "ssm_in.weight", (E, 2 * key + 2 * value))]
            else:
                tensors += [(p + "attn_qkv.weight", (E, 2 * key + value))]
                tensors += [(p + "attn_gate.weight", (E, value))]
            if qkvz == "separate":
                tensors += [(p + "ssm_beta.weight", (E, n_v)), (p + "ssm_alpha.weight", (E, n_v))]
            else:
                tensors += [(p + "ssm_ba.weight", (E, 2 * n_v))]
            tensors += [
                (p + "ssm_conv1d.weight", (4, 2 * key + value)),
                (p + "ssm_dt.bias", (n_v,)),
                (p + "ssm_a", (n_v,)),
                (p + "ssm_norm.weight", (d_state,)),
                (p + "ssm_out.weight", (value, E)),
            ]
        if moe:
            tensors += _moe(p, n_exp, n_ff, shared=1, norm=False)
            tensors += [(p + "ffn_gate_inp_shexp.weight", (E,))]
        else:
            tensors += _ffn(p, norm=False)
    extra: dict[str, object] = {
        "{arch}.ssm.conv_kernel": 4,
        "{arch}.ssm.inner_size": value,
        "{arch}.ssm.state_size": d_state,
        "{arch}.ssm.time_step_rank": n_v,
        "{arch}.ssm.group_count": n_k,
        "{arch}.full_attention_interval": 4,
    }
    if mrope:
        extra["{arch}.rope.dimension_sections"] = [11, 11, 10, 0]
    if moe:
        extra["{arch}.expert_count"] = n_exp
        extra["{arch}.expert_used_count"] = 2
        extra["{arch}.expert_feed_forward_length"] = n_ff
        extra["{arch}.expert_shared_feed_forward_length"] = n_ff
    m = _tiny(arch, 4, n_head_kv=KV, matrix_type=qtype, extra=extra)
    return write_model(path, m, tensors)


def qwen3next(path: Path, qtype: Q = Q.F16, *, split_qkvz: bool = False) -> Path:
    """Qwen3-Next, with its first (``ssm_in``) or its newer (``attn_qkv`` + ``attn_gate``)
    layout of the linear layers' projections."""
    layout = "split" if split_qkvz else "ssm_in"
    return _gated_delta_net(path, qtype, "qwen3next", qkvz=layout, moe=True)


def qwen35(path: Path, qtype: Q = Q.F16, *, moe: bool = False) -> Path:
    """Qwen3.5 (dense) and Qwen3.5-MoE: separate beta and alpha projections, multi-section
    RoPE."""
    arch = "qwen35moe" if moe else "qwen35"
    return _gated_delta_net(path, qtype, arch, qkvz="separate", moe=moe, mrope=True)


def lfm2(path: Path, qtype: Q = Q.F16) -> Path:
    """LFM2: short-convolution layers (L_cache 3) and attention layers with Q/K norms."""
    kv = (0, 0, KV, 0, KV, 0)
    tensors: Tensors = [
        ("token_embd.weight", (E, _VOCAB.get())),
        ("token_embd_norm.weight", (E,)),
        ("output.weight", (E, _VOCAB.get())),
    ]
    for il in range(6):
        p = f"blk.{il}."
        if kv[il]:
            tensors += _attn(p, qk_norm=True)
            tensors = [t for t in tensors if t[0] != p + "attn_output.weight"]
            tensors += [(p + "attn_output.weight", (E, E))]
        else:
            tensors += [
                (p + "attn_norm.weight", (E,)),
                (p + "shortconv.conv.weight", (3, E)),
                (p + "shortconv.in_proj.weight", (E, 3 * E)),
                (p + "shortconv.out_proj.weight", (E, E)),
            ]
        tensors += _ffn(p)
    extra = {"{arch}.shortconv.l_cache": 3}
    return write_model(
        path, _tiny("lfm2", 6, n_head_kv=kv, matrix_type=qtype, extra=extra), tensors
    )


def mamba2(path: Path, qtype: Q = Q.F16) -> Path:
    tensors = _base(0)
    for il in range(4):
        tensors += _mamba2(f"blk.{il}.", 512, 64, 8)
    extra = dict(_SSM_KEYS)
    return write_model(
        path, _tiny("mamba2", 4, n_head=0, n_head_kv=0, matrix_type=qtype, extra=extra), tensors
    )


def granitehybrid(path: Path, qtype: Q = Q.F16) -> Path:
    """Granite 4 hybrid: Mamba2 layers with one attention layer, dense FFN everywhere."""
    kv = (0, 0, KV, 0)
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        if kv[il]:
            tensors += _attn(p)
        else:
            tensors += _mamba2(p, 512, 64, 8)
        tensors += _ffn(p)
    extra = dict(_SSM_KEYS)
    return write_model(
        path, _tiny("granitehybrid", 4, n_head_kv=kv, matrix_type=qtype, extra=extra), tensors
    )


def phi3(path: Path, qtype: Q = Q.F16) -> Path:
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += [
            (p + "attn_norm.weight", (E,)),
            (p + "attn_qkv.weight", (E, H * D + 2 * KV * D)),
            (p + "attn_output.weight", (E, E)),
            (p + "ffn_norm.weight", (E,)),
            (p + "ffn_up.weight", (E, 2 * F)),
            (p + "ffn_down.weight", (F, E)),
        ]
    return write_model(path, _tiny("phi3", 4, n_head_kv=KV, matrix_type=qtype), tensors)


def gpt_oss(path: Path, qtype: Q = Q.F16) -> Path:
    """gpt-oss: biased attention with sinks, alternating SWA, MoE with biased experts."""
    n_exp, n_ff = 8, 128
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += [
            (p + "attn_norm.weight", (E,)),
            (p + "post_attention_norm.weight", (E,)),
            (p + "attn_q.weight", (E, H * D)),
            (p + "attn_q.bias", (H * D,)),
            (p + "attn_k.weight", (E, KV * D)),
            (p + "attn_k.bias", (KV * D,)),
            (p + "attn_v.weight", (E, KV * D)),
            (p + "attn_v.bias", (KV * D,)),
            (p + "attn_output.weight", (H * D, E)),
            (p + "attn_output.bias", (E,)),
            (p + "attn_sinks.weight", (H,)),
            (p + "ffn_gate_inp.weight", (E, n_exp)),
            (p + "ffn_gate_inp.bias", (n_exp,)),
            (p + "ffn_gate_exps.weight", (E, n_ff, n_exp)),
            (p + "ffn_gate_exps.bias", (n_ff, n_exp)),
            (p + "ffn_up_exps.weight", (E, n_ff, n_exp)),
            (p + "ffn_up_exps.bias", (n_ff, n_exp)),
            (p + "ffn_down_exps.weight", (n_ff, E, n_exp)),
            (p + "ffn_down_exps.bias", (E, n_exp)),
        ]
    extra = {
        "{arch}.expert_count": n_exp,
        "{arch}.expert_used_count": 2,
        "{arch}.expert_feed_forward_length": n_ff,
    }
    m = _tiny("gpt-oss", 4, n_head_kv=KV, matrix_type=qtype, n_swa=128, extra=extra)
    return write_model(path, m, tensors)


def llama4(path: Path, qtype: Q = Q.F16, *, chunked: bool = True) -> Path:
    """Llama 4: dense and MoE layers alternating (``interleave_moe_layer_step`` 2), each MoE
    layer one routed expert of four beside a shared one; chunked attention on three layers of
    four (llama.cpp's fixed 8192-token chunks) unless ``chunked`` is off (``sliding_window`` 0:
    full attention everywhere)."""
    n_exp, n_ff = 4, 128
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += _attn(p)
        tensors += _moe(p, n_exp, n_ff, shared=1) if il % 2 else _ffn(p)
    extra: dict[str, object] = {
        "{arch}.expert_count": n_exp,
        "{arch}.expert_used_count": 1,
        "{arch}.expert_feed_forward_length": n_ff,
        "{arch}.interleave_moe_layer_step": 2,
    }
    if not chunked:
        extra["{arch}.attention.sliding_window"] = 0
    m = _tiny("llama4", 4, n_head_kv=KV, matrix_type=qtype, extra=extra)
    return write_model(path, m, tensors)


def granite(path: Path, qtype: Q = Q.F16) -> Path:
    """Granite 3: llama's layers with the embedding, residual and logit scales (and the
    attention scale) every Granite file carries."""
    extra = {
        "{arch}.logit_scale": 8.0,
        "{arch}.residual_scale": 0.22,
        "{arch}.embedding_scale": 12.0,
        "{arch}.attention.scale": 0.0078125,
    }
    return write_model(path, _tiny("granite", 4, n_head_kv=KV, matrix_type=qtype, extra=extra))


def olmo2(path: Path, qtype: Q = Q.F16, *, window: int = 0) -> Path:
    """OLMo 2: norms after attention and after the FFN only, Q/K norms as wide as their
    projections; with ``window`` a sliding window on three layers of four (OLMo 3)."""
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += _attn(p)[1:] + _ffn(p, norm=False)
        tensors += [(p + "attn_q_norm.weight", (H * D,)), (p + "attn_k_norm.weight", (KV * D,))]
        tensors += [(p + "post_attention_norm.weight", (E,)), (p + "post_ffw_norm.weight", (E,))]
    extra: dict[str, object] = {"{arch}.attention.sliding_window": window} if window else {}
    m = _tiny("olmo2", 4, n_head_kv=KV, matrix_type=qtype, extra=extra)
    return write_model(path, m, tensors)


def minimax_m2(path: Path, qtype: Q = Q.F16) -> Path:
    """MiniMax-M2: Q/K norms as wide as the projections, every layer eight experts (two
    used) chosen by a sigmoid with a selection bias; RoPE on half of each head."""
    n_exp, n_ff = 8, 128
    tensors = _base(0)
    for il in range(4):
        p = f"blk.{il}."
        tensors += _attn(p) + _moe(p, n_exp, n_ff)
        tensors += [(p + "attn_q_norm.weight", (H * D,)), (p + "attn_k_norm.weight", (KV * D,))]
        tensors += [(p + "exp_probs_b.bias", (n_exp,))]
    extra: dict[str, object] = {
        "{arch}.expert_count": n_exp,
        "{arch}.expert_used_count": 2,
        "{arch}.expert_feed_forward_length": n_ff,
        "{arch}.expert_gating_func": 2,
    }
    # minimax-m2.cpp shapes the experts by feed_forward_length, which the converter sets to
    # the expert width (intermediate_size) as it does expert_feed_forward_length
    m = _tiny(
        "minimax-m2", 4, n_head_kv=KV, n_ff=n_ff, matrix_type=qtype, rope_dims=D // 2, extra=extra
    )
    return write_model(path, m, tensors)


ARCHS: dict[str, Callable[..., Path]] = {
    "llama": llama,
    "qwen2": qwen2,
    "qwen3": qwen3,
    "qwen3moe": qwen3moe,
    "gemma2": gemma2,
    "gemma3": gemma3,
    "deepseek2": deepseek2,
    "deepseek2-mtp": lambda path, qtype=Q.F16: deepseek2(path, qtype, mtp=True),
    "glm4moe": glm4moe,
    "mamba": mamba,
    "mamba2": mamba2,
    "jamba": jamba,
    "lfm2": lfm2,
    "falcon-h1": falcon_h1,
    "falcon-h1-nonorm": lambda path, qtype=Q.F16: falcon_h1(path, qtype, ssm_norm=False),
    "rwkv6": rwkv6,
    "qwen3next": qwen3next,
    "qwen3next-qkv": lambda path, qtype=Q.F16: qwen3next(path, qtype, split_qkvz=True),
    "qwen35": qwen35,
    "qwen35moe": lambda path, qtype=Q.F16: qwen35(path, qtype, moe=True),
    "granitehybrid": granitehybrid,
    "phi3": phi3,
    "gpt-oss": gpt_oss,
    "granite": granite,
    "llama4": llama4,
    "olmo2": olmo2,
    "olmo2-swa": lambda path, qtype=Q.F16: olmo2(path, qtype, window=128),
    "minimax-m2": minimax_m2,
    "llama4-full": lambda path, qtype=Q.F16: llama4(path, qtype, chunked=False),
}


def _with_vocab(make: Callable[..., Path], n_vocab: int) -> Callable[..., Path]:
    def small(path: Path, qtype: Q = Q.F16) -> Path:
        token = _VOCAB.set(n_vocab)
        try:
            return make(path, qtype)
        finally:
            _VOCAB.reset(token)

    return small


SMALL_VOCAB: dict[str, Callable[..., Path]] = {
    f"{name}-v512": _with_vocab(make, 512) for name, make in ARCHS.items()
}
