"""Recurrent and hybrid families: which layers keep state, its shape, and its tensors.

State shapes follow llama.cpp (``llama-model.cpp`` ``load_hparams`` and the ``{arch}.ssm.*``,
``{arch}.wkv.*``, ``{arch}.shortconv.*`` keys); config fields and defaults follow transformers'
configuration classes (``MambaConfig``, ``Mamba2Config``, ``JambaConfig``,
``GraniteMoeHybridConfig``, ``FalconH1Config``, ``Qwen3NextConfig``, ``Lfm2Config``) and the
tensors their modeling modules build.
"""

from __future__ import annotations

import math
from typing import ClassVar

from membudget._gguf import Keys
from membudget.archs.base import ArchRule, ConfigFields, GGUFFields, Tensors
from membudget.model import RecurrentKind, RecurrentSpec

__all__: list[str] = []


class _MambaFamily(ArchRule):
    """Selective state spaces: Mamba (one time-step projection) and Mamba2 (heads, groups)."""

    head_dim_fields: ClassVar[tuple[str, ...]] = ("mamba_d_head",)

    @classmethod
    def config_recurrent(cls, f: ConfigFields, n_embd: int) -> RecurrentSpec | None:
        d_state = f.int("state_size", "ssm_state_size", "mamba_d_state", default=16)
        d_conv = f.int("conv_kernel", "mamba_d_conv", "d_conv", default=4)
        expand = f.int("expand", "mamba_expand", default=2)
        d_inner = f.int("mamba_d_ssm", "d_inner", default=expand * n_embd)
        if cls.recurrent == "mamba":
            dt_rank = f.int("time_step_rank", "mamba_dt_rank", default=math.ceil(n_embd / 16))
            return RecurrentSpec(
                "mamba", d_conv=d_conv, d_inner=d_inner, d_state=d_state, n_head=dt_rank
            )
        n_head = f.int("mamba_n_heads", "num_heads", "mamba_num_heads", default=0)
        head_dim = f.int(*cls.head_dim_fields, default=d_inner // n_head if n_head else 0)
        return RecurrentSpec(
            "mamba2",
            d_conv=d_conv,
            d_inner=d_inner,
            d_state=d_state,
            n_group=f.int("n_groups", "mamba_n_groups", default=1),
            n_head=n_head,
            head_dim=head_dim,
        )

    @classmethod
    def recurrent_tensors(
        cls, r: RecurrentSpec, n_embd: int, prefix: str, conv_bias: bool
    ) -> Tensors:
        p, e = prefix, n_embd
        if r.kind == "mamba":
            dt = r.n_head  # the time-step rank
            return [
                (p + "ssm_in.weight", (e, 2 * r.d_inner)),
                (p + "ssm_conv1d.weight", (r.d_conv, r.d_inner)),
                (p + "ssm_conv1d.bias", (r.d_inner,)),
                (p + "ssm_x.weight", (r.d_inner, dt + 2 * r.d_state)),
                (p + "ssm_dt.weight", (dt, r.d_inner)),
                (p + "ssm_dt.bias", (r.d_inner,)),
                (p + "ssm_a", (r.d_state, r.d_inner)),
                (p + "ssm_d", (r.d_inner,)),
                (p + "ssm_out.weight", (r.d_inner, e)),
            ]
        groups = max(r.n_group, 1)
        conv_dim = r.d_inner + 2 * r.n_group * r.d_state
        out: Tensors = [
            (p + "ssm_in.weight", (e, 2 * r.d_inner + 2 * r.n_group * r.d_state + r.n_head)),
            (p + "ssm_conv1d.weight", (r.d_conv, conv_dim)),
            (p + "ssm_dt.bias", (r.n_head,)),
            (p + "ssm_a", (1, r.n_head)),
            (p + "ssm_d", (1, r.n_head)),
            (p + "ssm_norm.weight", (r.d_inner // groups, groups)),
            (p + "ssm_out.weight", (r.d_inner, e)),
        ]
        if conv_bias:
            out.insert(2, (p + "ssm_conv1d.bias", (conv_dim,)))
        return out


class Mamba(_MambaFamily, arch="mamba", model_types=("mamba",)):
    recurrent = "mamba"
    all_recurrent = True


class Mamba2(_MambaFamily, arch="mamba2", model_types=("mamba2",)):
    recurrent = "mamba2"
    all_recurrent = True
    head_dim_fields = ("mamba_d_head", "head_dim")  # Mamba2Config names it head_dim


class Jamba(_MambaFamily, arch="jamba", model_types=("jamba",)):
    recurrent = "mamba"
    kv_zero_means_recurrent = True

    @classmethod
    def config_recurrent_flags(cls, f: ConfigFields, n_layer: int) -> tuple[bool, ...] | None:
        # JambaConfig: attention at layer il iff il % attn_layer_period == attn_layer_offset
        period = f.int("attn_layer_period", default=8)
        offset = f.int("attn_layer_offset", default=4)
        return tuple(il % max(period, 1) != offset for il in range(n_layer))

    @classmethod
    def recurrent_tensors(
        cls, r: RecurrentSpec, n_embd: int, prefix: str, conv_bias: bool
    ) -> Tensors:
        # JambaMambaMixer's RMS norms on the time step and on B and C
        return [
            *super().recurrent_tensors(r, n_embd, prefix, conv_bias),
            (prefix + "ssm_dt_norm.weight", (r.n_head,)),
            (prefix + "ssm_b_norm.weight", (r.d_state,)),
            (prefix + "ssm_c_norm.weight", (r.d_state,)),
        ]


class GraniteHybrid(
    _MambaFamily, arch=("granitehybrid", "nemotron_h"), model_types=("granitemoehybrid",)
):
    recurrent = "mamba2"
    kv_zero_means_recurrent = True


class FalconH1(_MambaFamily, arch="falcon-h1", model_types=("falcon_h1",)):
    recurrent = "mamba2"
    parallel_hybrid = True

    @classmethod
    def config_recurrent_norm(cls, f: ConfigFields) -> bool:
        # FalconH1Config.mamba_rms_norm, False unless set (the released models leave it off);
        # llama.cpp's falcon-h1 loads ssm_norm only where the file has it
        return f.cfg.get("mamba_rms_norm", False) is True


class Rwkv6(ArchRule, arch=("rwkv6", "rwkv6qwen2")):
    recurrent: ClassVar[RecurrentKind | None] = "rwkv6"
    all_recurrent = True

    @classmethod
    def gguf_recurrent(cls, m: GGUFFields, n_embd: int) -> RecurrentSpec | None:
        head = m.get_int(Keys.WKV.HEAD_SIZE, 64)
        return RecurrentSpec(
            cls.recurrent or "rwkv6", n_head=n_embd // head if head else 0, head_dim=head
        )

    @classmethod
    def gguf_recurrent_keys(cls) -> str:
        return Keys.WKV.HEAD_SIZE


class Rwkv7(Rwkv6, arch=("rwkv7", "arwkv7")):
    recurrent = "rwkv7"


class Qwen3Next(ArchRule, arch="qwen3next", model_types=("qwen3_next",)):
    """Qwen3-Next: gated delta net layers, full attention every 4th layer unless
    ``full_attention_interval`` says otherwise (llama.cpp ``qwen3next.cpp``)."""

    recurrent = "gated_delta_net"
    default_full_attention_interval = 4
    qk_norm = True
    gated_query = True
    shared_expert_gate = True

    @classmethod
    def config_recurrent(cls, f: ConfigFields, n_embd: int) -> RecurrentSpec | None:
        n_k = f.int("linear_num_key_heads", default=16)
        n_v = f.int("linear_num_value_heads", default=32)
        dk = f.int("linear_key_head_dim", default=128)
        dv = f.int("linear_value_head_dim", default=128)
        return RecurrentSpec(
            "gated_delta_net",
            d_conv=f.int("linear_conv_kernel_dim", default=4),
            d_inner=n_v * dv,
            d_state=dk,
            n_group=n_k,
            n_head=n_v,
            head_dim=dv,
        )

    @classmethod
    def _beta_alpha(cls, r: RecurrentSpec, n_embd: int, prefix: str) -> Tensors:
        # Qwen3NextGatedDeltaNet: one in_proj_ba for both
        return [(prefix + "ssm_ba.weight", (n_embd, 2 * r.n_head))]

    @classmethod
    def recurrent_tensors(
        cls, r: RecurrentSpec, n_embd: int, prefix: str, conv_bias: bool
    ) -> Tensors:
        p, e = prefix, n_embd
        key_dim = r.n_group * r.d_state
        conv_dim = 2 * key_dim + r.d_inner
        return [
            (p + "attn_qkv.weight", (e, conv_dim)),
            (p + "attn_gate.weight", (e, r.d_inner)),
            *cls._beta_alpha(r, e, p),
            (p + "ssm_conv1d.weight", (r.d_conv, conv_dim)),
            (p + "ssm_dt.bias", (r.n_head,)),
            (p + "ssm_a", (r.n_head,)),
            (p + "ssm_norm.weight", (r.head_dim,)),
            (p + "ssm_out.weight", (r.d_inner, e)),
        ]


class Qwen35(Qwen3Next, arch="qwen35", model_types=("qwen3_5", "qwen3_5_text")):
    """Qwen3.5 (dense): Qwen3-Next's layers with separate beta and alpha projections
    (llama.cpp ``qwen35.cpp``). It nests its text model in ``text_config``."""

    shared_expert_gate = False

    @classmethod
    def _beta_alpha(cls, r: RecurrentSpec, n_embd: int, prefix: str) -> Tensors:
        return [
            (prefix + "ssm_beta.weight", (n_embd, r.n_head)),
            (prefix + "ssm_alpha.weight", (n_embd, r.n_head)),
        ]


class Qwen35Moe(Qwen35, arch="qwen35moe", model_types=("qwen3_5_moe", "qwen3_5_moe_text")):
    shared_expert_gate = True


class Lfm2(ArchRule, arch=("lfm2", "lfm2moe"), model_types=("lfm2",)):
    recurrent = "shortconv"
    kv_zero_means_recurrent = True
    qk_norm = True
    tied_default = True  # Lfm2Config ties the output to the embeddings unless told otherwise

    @classmethod
    def config_ffn(cls, f: ConfigFields) -> int:
        # transformers Lfm2MLP: with block_auto_adjust_ff_dim the width is 2/3 of
        # block_ff_dim (alias intermediate_size), times block_ffn_dim_multiplier, rounded up
        # to block_multiple_of
        width = f.int("block_ff_dim", "intermediate_size", default=0)
        if width and f.cfg.get("block_auto_adjust_ff_dim", False) is True:
            width = int(2 * width / 3)
            multiplier = f.cfg.get("block_ffn_dim_multiplier")
            if isinstance(multiplier, (int, float)) and not isinstance(multiplier, bool):
                width = int(multiplier * width)
            step = f.int("block_multiple_of", default=256, minimum=1)
            width = step * -(-width // step)
        return width

    @classmethod
    def config_recurrent_flags(cls, f: ConfigFields, n_layer: int) -> tuple[bool, ...] | None:
        idxs = f.list("full_attn_idxs")
        if idxs is None:
            return None
        attention = {int(i) for i in idxs if isinstance(i, int)}
        return tuple(il not in attention for il in range(n_layer))

    @classmethod
    def config_recurrent(cls, f: ConfigFields, n_embd: int) -> RecurrentSpec | None:
        return RecurrentSpec("shortconv", d_conv=f.int("conv_L_cache", default=3), d_inner=n_embd)

    @classmethod
    def gguf_recurrent(cls, m: GGUFFields, n_embd: int) -> RecurrentSpec | None:
        return RecurrentSpec(
            "shortconv", d_conv=m.get_int(Keys.ShortConv.L_CACHE, 3), d_inner=n_embd
        )

    @classmethod
    def gguf_recurrent_keys(cls) -> str:
        return Keys.ShortConv.L_CACHE

    @classmethod
    def recurrent_tensors(
        cls, r: RecurrentSpec, n_embd: int, prefix: str, conv_bias: bool
    ) -> Tensors:
        p, e = prefix, n_embd
        return [
            (p + "shortconv.in_proj.weight", (e, 3 * e)),
            (p + "shortconv.conv.weight", (r.d_conv, e)),
            (p + "shortconv.out_proj.weight", (e, e)),
        ]
