"""Tiny models for the vLLM tests: a transformers ``model_type`` and the config overrides that
make it small, one per KV-cache kind vLLM knows (issue 14). Shared by the live runs
(``tests/vllm_harness.py`` builds each with ``from_config``) and the recorded fixtures."""

from __future__ import annotations

from typing import Any

_DENSE: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
}

_MLA: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "kv_lora_rank": 32,
    "qk_rope_head_dim": 16,
    "qk_nope_head_dim": 16,
    "v_head_dim": 16,
    "n_routed_experts": 4,
    "num_experts_per_tok": 2,
    "n_shared_experts": 1,
    "first_k_dense_replace": 1,
    "max_position_embeddings": 8192,
}

ZOO: dict[str, tuple[str, dict[str, Any]]] = {
    # full attention, grouped-query
    "llama": ("llama", {**_DENSE, "num_hidden_layers": 2}),
    "qwen3": ("qwen3", {**_DENSE, "num_hidden_layers": 3, "head_dim": 32}),
    # a sliding window on every layer
    "mistral": ("mistral", {**_DENSE, "num_hidden_layers": 2, "sliding_window": 256}),
    # local and global layers mixed
    "gemma2": (
        "gemma2",
        {**_DENSE, "num_hidden_layers": 4, "head_dim": 16, "sliding_window": 512},
    ),
    "gemma3": (
        "gemma3_text",
        {
            **_DENSE,
            "num_hidden_layers": 7,
            "head_dim": 16,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
        },
    ),
    # chunked local attention on three layers of four, MoE every second layer (Llama 4)
    "llama4": (
        "llama4_text",
        {
            **_DENSE,
            "intermediate_size": 32,
            "intermediate_size_mlp": 128,
            "num_hidden_layers": 4,
            "head_dim": 16,
            "attention_chunk_size": 256,
            "num_local_experts": 4,
            "num_experts_per_tok": 1,
            "interleave_moe_layer_step": 2,
        },
    ),
    # mixture of experts
    "qwen3moe": (
        "qwen3_moe",
        {
            **_DENSE,
            "num_hidden_layers": 2,
            "head_dim": 16,
            "moe_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
    # multi-head latent attention, with and without a compressed query
    "deepseek2": ("deepseek_v2", {**_MLA, "q_lora_rank": 48}),
    "deepseek2-lite": ("deepseek_v2", {**_MLA, "q_lora_rank": None}),
    # recurrent state beside attention
    "granitehybrid": (
        "granitemoehybrid",
        {
            **_DENSE,
            "num_hidden_layers": 4,
            "layer_types": ["mamba", "attention", "mamba", "mamba"],
            "mamba_n_heads": 8,
            "mamba_d_head": 16,
            "mamba_d_state": 16,
            "mamba_n_groups": 1,
            "mamba_d_conv": 4,
            "mamba_expand": 2,
            "num_local_experts": 0,
            "shared_intermediate_size": 128,
            "position_embedding_type": "rope",
        },
    ),
    "lfm2": (
        "lfm2",
        {
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "num_hidden_layers": 4,
            "layer_types": ["conv", "full_attention", "conv", "conv"],
            "conv_L_cache": 3,
            "conv_dim": 64,
            "block_dim": 64,
            "block_multiple_of": 32,
            "block_ffn_dim_multiplier": 1.0,
            "block_auto_adjust_ff_dim": False,
        },
    ),
    "qwen3next": (
        "qwen3_next",
        {
            **_DENSE,
            "num_hidden_layers": 4,
            "head_dim": 16,
            "linear_num_key_heads": 2,
            "linear_num_value_heads": 4,
            "linear_key_head_dim": 16,
            "linear_value_head_dim": 16,
            "linear_conv_kernel_dim": 4,
            "full_attention_interval": 4,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 32,
            "num_experts": 4,
            "num_experts_per_tok": 2,
        },
    ),
    "jamba": (
        "jamba",
        {
            **_DENSE,
            "num_hidden_layers": 4,
            "attn_layer_period": 4,
            "attn_layer_offset": 1,
            "expert_layer_period": 2,
            "expert_layer_offset": 1,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "mamba_d_state": 16,
            "mamba_d_conv": 4,
            "mamba_expand": 2,
            "mamba_dt_rank": 8,
            "use_mamba_kernels": False,
        },
    ),
}
