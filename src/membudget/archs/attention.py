"""Attention-only families: which layers slide, and what each block adds to a plain one.

Sliding-window periods are llama.cpp's (``llama-model.cpp`` ``load_hparams``:
``hparams.set_swa_pattern``); config defaults and extra tensors are transformers' (the family's
``configuration_*.py`` defaults and ``modeling_*.py`` modules).
"""

from __future__ import annotations

from membudget.archs.base import ArchRule, ConfigFields

__all__: list[str] = []


class Llama(ArchRule, arch="llama", model_types=("llama", "mistral", "mixtral", "mistral3")):
    """Llama and the Mistral family (Mixtral's experts, Mistral 3's text model)."""


class Llama4(ArchRule, arch="llama4", model_types=("llama4", "llama4_text")):
    """Llama 4: chunked local attention on three layers of four (the rope layers), global
    attention on the fourth; MoE layers every ``interleave_moe_layer_step``, each with one
    shared expert; dense layers ``intermediate_size_mlp`` wide. The Q/K norm is an L2 norm
    without weights (transformers ``Llama4TextL2Norm``).

    llama.cpp (``src/models/llama4.cpp`` ``load_arch_hparams``) sets ``n_swa = 8192`` and the
    period 4 whatever the file says, unless ``llama4.attention.sliding_window`` is 0."""

    swa_period = 4
    chunked_local = True
    ffn_fields = ("intermediate_size_mlp",)
    expert_ffn_fields = ("intermediate_size",)
    default_shared_experts = 1
    moe_last_in_step = True  # Llama4TextConfig.moe_layers; llama4.cpp (i + 1) % step == 0

    @classmethod
    def config_local_attention(
        cls, f: ConfigFields, n_layer: int
    ) -> tuple[int, tuple[bool, ...]] | None:
        chunk = f.int("attention_chunk_size", default=0)
        if not chunk:
            return None
        types = f.list("layer_types")
        if types is not None and len(types) >= n_layer:
            return chunk, tuple(str(t) == "chunked_attention" for t in types[:n_layer])
        # Llama4TextConfig: no_rope_layers, 1 for a rope (chunked) layer; every 4th is global
        nope = f.list("no_rope_layers")
        if nope is not None and len(nope) >= n_layer:
            return chunk, tuple(bool(x) for x in nope[:n_layer])
        interval = f.int("no_rope_layer_interval", default=4, minimum=1)
        return chunk, tuple((il + 1) % interval != 0 for il in range(n_layer))

    @classmethod
    def gguf_sliding_window(cls, found: int | None) -> int:
        return 0 if found == 0 else 8192


class Granite(ArchRule, arch="granite", model_types=("granite",)):
    pass


class Phi3(ArchRule, arch="phi3", model_types=("phi3",)):
    pass


class Qwen2(ArchRule, arch="qwen2", model_types=("qwen2",)):
    attention_bias_default = True  # Qwen2Attention: q/k/v projections with bias=True


class Qwen2Moe(Qwen2, arch="qwen2moe", model_types=("qwen2_moe",)):
    shared_expert_gate = True  # Qwen2MoeSparseMoeBlock.shared_expert_gate: one row


class Qwen3(ArchRule, arch="qwen3", model_types=("qwen3",)):
    qk_norm = True


class Qwen3Moe(Qwen3, arch="qwen3moe", model_types=("qwen3_moe",)):
    pass


class Gemma(ArchRule, arch="gemma", model_types=("gemma",)):
    tied_default = True


class Gemma2(Gemma, arch="gemma2", model_types=("gemma2",)):
    swa_period = 2
    sandwich_norm = True


class Gemma3(Gemma2, arch=("gemma3", "gemma-embedding"), model_types=("gemma3", "gemma3_text")):
    swa_period = 6
    qk_norm = True


class Olmo2(ArchRule, arch="olmo2", model_types=("olmo2",)):
    """OLMo 2: no norm before attention or the FFN, one after each; Q and K normed across all
    heads (``Olmo2Attention.q_norm`` is as wide as the Q projection). llama.cpp
    (``src/models/olmo2.cpp``) slides three layers of four when the file has a window."""

    swa_period = 4
    qk_norm = True
    qk_norm_full = True
    post_norms_only = True


class MinimaxM2(ArchRule, arch="minimax-m2", model_types=("minimax_m2",)):
    """MiniMax-M2: Q and K normed across all heads (``use_qk_norm``, per-layer weights as wide
    as the projections), every layer routed experts ``intermediate_size`` wide, chosen by a
    sigmoid with a selection bias (``use_routing_bias``: ``e_score_correction_bias``)."""

    qk_norm = True
    qk_norm_full = True
    expert_ffn_fields = ("intermediate_size",)

    @classmethod
    def config_score_bias(cls, f: ConfigFields) -> bool:
        return f.cfg.get("use_routing_bias", True) is not False


class Cohere2(ArchRule, arch="cohere2", model_types=("cohere2",)):
    swa_period = 4


class Exaone4(ArchRule, arch="exaone4"):
    swa_period = 4


class GptOss(ArchRule, arch="gpt-oss", model_types=("gpt_oss",)):
    swa_period = 2
    attention_bias_default = True
    attention_output_bias = True
    attention_sinks = True
    expert_bias = True


class Glm4Moe(ArchRule, arch="glm4moe", model_types=("glm4_moe",)):
    """GLM-4.5 and 4.6: biased Q/K/V, Q/K norms where ``use_qk_norm`` says, the first
    ``first_k_dense_replace`` layers dense, then experts routed by a sigmoid with a selection
    bias (transformers ``Glm4MoeTopkRouter.e_score_correction_bias``) beside shared experts.
    ``num_hidden_layers`` excludes the multi-token-prediction block, which llama.cpp does not
    load by default."""

    attention_bias_default = True

    @classmethod
    def config_qk_norm(cls, f: ConfigFields) -> bool:
        return f.cfg.get("use_qk_norm") is True

    @classmethod
    def config_score_bias(cls, f: ConfigFields) -> bool:
        return True


class Deepseek2(ArchRule, arch="deepseek2", model_types=("deepseek_v2", "deepseek_v3", "kimi_k2")):
    """DeepSeek V2/V3 and Kimi K2, which ships DeepSeek-V3's architecture under its own
    ``model_type`` (MLA; its fields are generic: ``kv_lora_rank``, ``qk_rope_head_dim``...)."""

    @classmethod
    def config_score_bias(cls, f: ConfigFields) -> bool:
        # V3 and its kin route with noaux_tc, which keeps a per-expert correction bias
        # (e_score_correction_bias); V2 routes greedily without one
        return f.cfg.get("model_type") == "deepseek_v3" or f.cfg.get("topk_method") == "noaux_tc"
