"""config.json geometry: the ecosystem's field names, nesting, hybrids and quantisation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from membudget import ConfigError, load_model

LLAMA: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 256,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_plain_llama(tmp_path: Path) -> None:
    spec = load_model(_write(tmp_path, LLAMA))
    assert spec.n_layer == 4
    assert {(layer.n_head, layer.n_head_kv, layer.head_dim_k) for layer in spec.layers} == {
        (8, 2, 32)
    }
    # embed + 4 x (2 norms + q,k,v,o + 3 FFN) + final norm + head
    per_layer = 2 * 256 + 256 * 256 * 2 + 2 * 256 * 64 + 3 * 256 * 512
    assert spec.n_params == 1000 * 256 * 2 + 4 * per_layer + 256
    assert spec.weights.total == spec.n_params * 2


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({"sliding_window": 128}, [128] * 4, id="every layer slides (Mistral v0.1)"),
        pytest.param(
            {"sliding_window": 128, "use_sliding_window": False}, [0] * 4, id="Qwen2 flag off"
        ),
        pytest.param(
            {"sliding_window": 128, "layer_types": ["sliding_attention", "full_attention"] * 2},
            [128, 0, 128, 0],
            id="layer_types",
        ),
        pytest.param(
            {"sliding_window": 128, "sliding_window_pattern": 2}, [128, 0, 128, 0], id="pattern"
        ),
        pytest.param({"sliding_window": None}, [0] * 4, id="null window"),
    ],
)
def test_sliding_windows(tmp_path: Path, extra: dict[str, Any], expected: list[int]) -> None:
    spec = load_model(_write(tmp_path, {**LLAMA, **extra}))
    assert [layer.sliding_window for layer in spec.layers] == expected


def test_text_config_nesting(tmp_path: Path) -> None:
    cfg = {"model_type": "gemma3", "text_config": {**LLAMA, "model_type": "gemma3_text"}}
    spec = load_model(_write(tmp_path, cfg))
    assert spec.architecture == "gemma3"
    assert spec.n_embd == 256


def test_deeply_nested_text_config_is_refused(tmp_path: Path) -> None:
    cfg: dict[str, Any] = dict(LLAMA)
    for _ in range(10):
        cfg = {"text_config": cfg}
    with pytest.raises(ConfigError, match="nested"):
        load_model(_write(tmp_path, cfg))


def test_mla_fields(tmp_path: Path) -> None:
    cfg = {
        **LLAMA,
        "model_type": "deepseek_v3",
        "kv_lora_rank": 64,
        "q_lora_rank": 96,
        "qk_rope_head_dim": 16,
        "qk_nope_head_dim": 32,
        "v_head_dim": 32,
        "n_routed_experts": 8,
        "num_experts_per_tok": 2,
        "n_shared_experts": 1,
        "moe_intermediate_size": 64,
        "first_k_dense_replace": 1,
    }
    spec = load_model(_write(tmp_path, cfg))
    assert spec.mla is not None
    assert (spec.mla.kv_lora_rank, spec.mla.q_lora_rank) == (64, 96)
    assert [layer.moe for layer in spec.layers] == [False, True, True, True]
    assert spec.n_expert == 8
    assert spec.n_expert_shared == 1


def test_hybrid_layer_types(tmp_path: Path) -> None:
    cfg = {
        **LLAMA,
        "model_type": "granitemoehybrid",
        "layer_types": ["mamba", "attention", "mamba", "mamba"],
        "mamba_d_state": 16,
        "mamba_n_heads": 8,
        "mamba_d_head": 64,
    }
    spec = load_model(_write(tmp_path, cfg))
    assert [layer.recurrent for layer in spec.layers] == [True, False, True, True]
    assert [layer.n_head_kv for layer in spec.layers] == [0, 2, 0, 0]


@pytest.mark.parametrize(
    ("model_type", "arch"), [("qwen3_5", "qwen35"), ("qwen3_5_moe", "qwen35moe")]
)
def test_qwen35_is_a_gated_delta_net_hybrid(tmp_path: Path, model_type: str, arch: str) -> None:
    """Qwen3.5 (text_config nested, per transformers' Qwen3_5Config): linear-attention layers
    keep recurrent state, full-attention layers a KV cache whose Q projects a gate too."""
    text = {
        **LLAMA,
        "model_type": f"{model_type}_text",
        "head_dim": 32,
        "layer_types": ["linear_attention"] * 3 + ["full_attention"],
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 32,
        "linear_value_head_dim": 32,
        "linear_conv_kernel_dim": 4,
    }
    spec = load_model(_write(tmp_path, {"model_type": model_type, "text_config": text}))
    assert spec.architecture == arch
    assert [layer.recurrent for layer in spec.layers] == [True, True, True, False]
    assert spec.recurrent is not None
    assert (spec.recurrent.kind, spec.recurrent.n_group, spec.recurrent.n_head) == (
        "gated_delta_net",
        2,
        4,
    )
    q = next(t for t in spec.tensors if t.name == "blk.3.attn_q.weight")
    assert q.shape == (256, 2 * 8 * 32)
    assert any(t.name == "blk.0.ssm_beta.weight" for t in spec.tensors)


@pytest.mark.parametrize(
    ("qcfg", "bits"),
    [
        pytest.param(
            {"quant_method": "gptq", "bits": 4, "group_size": 128}, 4 + 20 / 128, id="gptq"
        ),
        pytest.param({"quant_method": "awq", "bits": 4, "group_size": 128}, 4 + 20 / 128, id="awq"),
        pytest.param(
            {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4"},
            4.5,
            id="bnb nf4",
        ),
        pytest.param({"quant_method": "bitsandbytes", "load_in_8bit": True}, 8, id="bnb int8"),
        pytest.param({"quant_method": "fp8"}, 8, id="fp8"),
        pytest.param(
            {"quant_method": "compressed-tensors", "format": "nvfp4-pack-quantized"},
            4.5,
            id="nvfp4",
        ),
    ],
)
def test_quantization_config(tmp_path: Path, qcfg: dict[str, Any], bits: float) -> None:
    spec = load_model(_write(tmp_path, {**LLAMA, "quantization_config": qcfg}))
    q = next(t for t in spec.tensors if t.name == "blk.0.ffn_up.weight")
    assert q.n_bytes == pytest.approx(q.n_elements * bits / 8, abs=1)
    e = next(t for t in spec.tensors if t.name == "token_embd.weight")
    assert e.n_bytes == e.n_elements * 2, "embeddings stay in the base dtype"


def test_mxfp4_quantises_only_experts(tmp_path: Path) -> None:
    cfg = {
        **LLAMA,
        "model_type": "gpt_oss",
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "head_dim": 32,
        "quantization_config": {"quant_method": "mxfp4"},
    }
    spec = load_model(_write(tmp_path, cfg))
    exps = next(t for t in spec.tensors if t.name == "blk.0.ffn_up_exps.weight")
    q = next(t for t in spec.tensors if t.name == "blk.0.attn_q.weight")
    assert exps.n_bytes == exps.n_elements * 17 // 32
    assert q.n_bytes == q.n_elements * 2


def test_every_problem_is_reported_together(tmp_path: Path) -> None:
    cfg = {
        "model_type": "llama",
        "hidden_size": -1,
        "num_hidden_layers": "many",
        "num_attention_heads": 8,
    }
    with pytest.raises(ConfigError) as info:
        load_model(_write(tmp_path, cfg))
    text = str(info.value)
    assert "hidden_size is -1" in text
    assert "num_hidden_layers is 'many'" in text
    assert "vocab_size is missing" in text
    assert "config.json'" in text  # the path as given, whole


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        pytest.param("[1, 2]", "not an object", id="a list"),
        pytest.param("{nope", "not valid JSON", id="invalid JSON"),
        pytest.param(
            json.dumps({**LLAMA, "num_key_value_heads": 3}), "multiple", id="heads not divisible"
        ),
        pytest.param(json.dumps({**LLAMA, "hidden_size": 10**12}), "plausible", id="huge field"),
        pytest.param(json.dumps({**LLAMA, "num_hidden_layers": 0}), "at least 1", id="zero layers"),
    ],
)
def test_bad_configs(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=fragment):
        load_model(path)


def test_rope_scaling_is_read(tmp_path: Path) -> None:
    """YaRN as config.json states it: the type, the factor and the context before scaling,
    which llama.cpp compares with --rope-scale (membudget.request.yarn_ctx_train)."""
    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}
    spec = load_model(_write(tmp_path, {**LLAMA, "rope_scaling": rope}))
    assert (spec.rope_scaling, spec.rope_factor, spec.n_ctx_orig_yarn) == ("yarn", 4.0, 512)
    plain = load_model(_write(tmp_path, {**LLAMA, "rope_scaling": "nonsense"}))
    assert (plain.rope_scaling, plain.rope_factor, plain.n_ctx_orig_yarn) == ("", 0.0, 0)
