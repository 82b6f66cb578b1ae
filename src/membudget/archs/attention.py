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


class Deepseek2(ArchRule, arch="deepseek2", model_types=("deepseek_v2", "deepseek_v3")):
    """DeepSeek V2/V3 (MLA; its fields are generic: ``kv_lora_rank``, ``qk_rope_head_dim``...)."""

    @classmethod
    def config_score_bias(cls, f: ConfigFields) -> bool:
        # V3 and its kin route with noaux_tc, which keeps a per-expert correction bias
        # (e_score_correction_bias); V2 routes greedily without one
        return f.cfg.get("model_type") == "deepseek_v3" or f.cfg.get("topk_method") == "noaux_tc"
