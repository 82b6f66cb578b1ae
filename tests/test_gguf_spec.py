"""GGUF headers to ModelSpec: per-layer geometry under each architecture's rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from membudget import GGUFError, load_model
from membudget.archs import swa_pattern_flags
from tests.ggufs import Tiny, write_model


def test_real_gemma_file(gemma_gguf: Path) -> None:
    spec = load_model(gemma_gguf)
    assert spec.architecture == "gemma3"
    assert spec.n_params == 268_098_176
    assert spec.weights.total == 246_587_904
    assert spec.n_vocab == 262_144
    assert spec.tied_embeddings
    assert spec.quant.file_type == "Q4_K_M"
    # Gemma 3: five sliding layers, then one full (llama.cpp set_swa_pattern(6)).
    assert [layer.sliding_window for layer in spec.layers] == [512] * 5 + [0] + [512] * 5 + [0] + [
        512
    ] * 5 + [0]
    assert {(layer.n_head, layer.n_head_kv, layer.head_dim_k) for layer in spec.layers} == {
        (4, 1, 256)
    }


@pytest.mark.parametrize(
    ("n", "period", "dense_first", "expected"),
    [
        pytest.param(6, 2, False, [True, False] * 3, id="gemma2: even layers slide"),
        pytest.param(7, 6, False, [True] * 5 + [False, True], id="gemma3: five then one"),
        pytest.param(4, 0, False, [True] * 4, id="period 0: every layer"),
        pytest.param(5, 4, True, [False, True, True, True, False], id="dense first"),
    ],
)
def test_swa_pattern(n: int, period: int, dense_first: bool, expected: list[bool]) -> None:
    assert list(swa_pattern_flags(n, period, dense_first)) == expected


@pytest.mark.parametrize(
    ("arch", "extra", "expected_swa"),
    [
        pytest.param("gemma2", {}, [64, 0, 64, 0], id="gemma2 pattern 2"),
        pytest.param("gpt-oss", {}, [64, 0, 64, 0], id="gpt-oss pattern 2"),
        pytest.param("llama", {}, [0, 0, 0, 0], id="llama ignores the window"),
        pytest.param(
            "gemma3",
            {"{arch}.attention.sliding_window_pattern": 2},
            [64, 0, 64, 0],
            id="pattern key wins",
        ),
        pytest.param(
            "gemma3",
            {"{arch}.attention.sliding_window_pattern": [False, True, True, False]},
            [0, 64, 64, 0],
            id="per-layer pattern array",
        ),
    ],
)
def test_sliding_window_rules(
    tmp_path: Path, arch: str, extra: dict[str, object], expected_swa: list[int]
) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(arch=arch, n_layer=4, n_swa=64, extra=extra))
    assert [layer.sliding_window for layer in load_model(path).layers] == expected_swa


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param({}, [8192, 8192, 8192, 0], id="no key: chunks of 8192, 3 chunked 1 full"),
        pytest.param(
            {"{arch}.attention.sliding_window": 1024}, [8192] * 3 + [0], id="llama.cpp sets 8192"
        ),
        pytest.param({"{arch}.attention.sliding_window": 0}, [0] * 4, id="0: no chunking"),
    ],
)
def test_llama4_chunked_attention(
    tmp_path: Path, extra: dict[str, object], expected: list[int]
) -> None:
    """src/models/llama4.cpp load_arch_hparams: n_swa = 8192 and load_swa_pattern(ml, 4) unless
    the file's sliding window is 0; the local layers are chunked (LLAMA_SWA_TYPE_CHUNKED)."""
    path = write_model(tmp_path / "m.gguf", Tiny(arch="llama4", n_layer=4, extra=extra))
    layers = load_model(path).layers
    assert [layer.sliding_window for layer in layers] == expected
    assert [layer.chunked for layer in layers] == [bool(w) for w in expected]


def test_per_layer_kv_heads_mark_recurrent_layers_of_a_hybrid(tmp_path: Path) -> None:
    extra = {
        "{arch}.ssm.conv_kernel": 4,
        "{arch}.ssm.inner_size": 512,
        "{arch}.ssm.state_size": 16,
        "{arch}.ssm.group_count": 1,
        "{arch}.ssm.time_step_rank": 8,
    }
    path = write_model(
        tmp_path / "m.gguf", Tiny(arch="granitehybrid", n_layer=3, n_head_kv=(0, 2, 0), extra=extra)
    )
    spec = load_model(path)
    assert [layer.recurrent for layer in spec.layers] == [True, False, True]
    assert [layer.n_head_kv for layer in spec.layers] == [0, 2, 0]
    assert spec.recurrent is not None
    assert (
        spec.recurrent.kind,
        spec.recurrent.d_inner,
        spec.recurrent.n_head,
        spec.recurrent.head_dim,
    ) == ("mamba2", 512, 8, 64)


def test_mla_keys(tmp_path: Path) -> None:
    extra = {
        "{arch}.attention.kv_lora_rank": 64,
        "{arch}.attention.key_length_mla": 48,
        "{arch}.attention.value_length_mla": 32,
        "{arch}.rope.dimension_count": 16,
    }
    spec = load_model(write_model(tmp_path / "m.gguf", Tiny(arch="deepseek2", extra=extra)))
    assert spec.mla is not None
    assert spec.mla.compressed_cache
    assert (spec.mla.kv_lora_rank, spec.mla.qk_rope_head_dim, spec.mla.qk_nope_head_dim) == (
        64,
        16,
        32,
    )


def test_old_mla_file_caches_full_heads(tmp_path: Path) -> None:
    extra = {"{arch}.attention.kv_lora_rank": 64, "{arch}.rope.dimension_count": 16}
    spec = load_model(write_model(tmp_path / "m.gguf", Tiny(arch="deepseek2", extra=extra)))
    assert spec.mla is not None
    assert not spec.mla.compressed_cache


def test_weight_groups_sum_to_the_file(tmp_path: Path) -> None:
    spec = load_model(write_model(tmp_path / "m.gguf", Tiny(n_layer=3)))
    w = spec.weights
    assert w.total == sum(t.n_bytes for t in spec.tensors)
    assert len(w.layers) == 3
    assert w.token_embd == 256 * 512 * 2
    assert w.output == 256 * 512 * 2
    assert not spec.tied_embeddings


def test_missing_required_key(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(arch="llama"))
    data = path.read_bytes().replace(b"llama.block_count", b"llama.block_xount")
    path.write_bytes(data)
    with pytest.raises(GGUFError, match=r"'llama.block_count' is missing"):
        load_model(path)


def test_wrongly_typed_key(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(extra={"{arch}.expert_count": "eight"}))
    with pytest.raises(GGUFError, match="expert_count is 'eight'"):
        load_model(path)


def test_mtp_blocks_stay_out_of_the_trunk(tmp_path: Path) -> None:
    """nextn_predict_layers blocks follow the trunk: the file's weights count them, the layers
    (KV cache, graph) do not, as llama.cpp does unless it drafts with them."""
    m = Tiny(n_layer=3, extra={"{arch}.nextn_predict_layers": 1})
    spec = load_model(write_model(tmp_path / "m.gguf", m))
    assert (spec.n_layer, spec.n_layer_mtp) == (2, 1)
    assert len(spec.weights.layers) == 3  # the file holds three blocks
    assert "nextn_predict_layers" in spec.source_of("n_layer")


def test_mtp_blocks_must_leave_a_trunk(tmp_path: Path) -> None:
    m = Tiny(n_layer=2, extra={"{arch}.nextn_predict_layers": 2})
    with pytest.raises(GGUFError, match="nextn_predict_layers is 2, but the file has only 2"):
        load_model(write_model(tmp_path / "m.gguf", m))
