"""KV-cache and recurrent-state arithmetic: the mistakes calculators make, one by one."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from membudget import InvalidArgumentError, load_model
from membudget.kv import (
    cache_layers,
    cache_type,
    kv_bytes_per_token,
    recurrent_state_dims,
    row_bytes,
)


@pytest.mark.parametrize(
    ("model", "per_token"),
    [
        pytest.param(
            "llama-3.1-8b", 32 * 2 * 8 * 128 * 2, id="GQA: 8 KV heads, not 32 query heads"
        ),
        pytest.param("qwen3-8b", 36 * 2 * 8 * 128 * 2, id="Qwen3 8B"),
        pytest.param("deepseek-v3", 61 * (512 + 64) * 2, id="MLA caches the latent, not 128 heads"),
        pytest.param("mamba-2.8b", 0, id="Mamba keeps no KV cache"),
        pytest.param(
            "granite-4.0-h-small", 4 * 2 * 8 * 128 * 2, id="hybrid: only 4 attention layers"
        ),
    ],
)
def test_kv_bytes_per_token(model: str, per_token: int) -> None:
    assert kv_bytes_per_token(load_model(model)) == per_token


def test_q8_0_is_34_bytes_per_32_values() -> None:
    assert row_bytes(cache_type("q8_0"), 128) == 4 * 34
    assert row_bytes(cache_type("q4_0"), 128) == 4 * 18
    assert row_bytes(cache_type("iq4_nl"), 128) == 4 * 18
    assert row_bytes(cache_type("f32"), 128) == 512


@pytest.mark.parametrize("name", ["q2_k", "f64", "nonsense"])
def test_unsupported_cache_types(name: str) -> None:
    with pytest.raises(InvalidArgumentError, match="cache type"):
        cache_type(name)


def test_row_must_be_whole_blocks() -> None:
    with pytest.raises(InvalidArgumentError, match="block"):
        row_bytes(cache_type("q8_0"), 100)


def test_sliding_window_layers_are_marked() -> None:
    layers = cache_layers(load_model("gemma-3-27b"))
    assert sum(1 for c in layers if c.sliding_window == 1024) == 52
    assert sum(1 for c in layers if c.sliding_window == 0) == 10


def test_mamba_state_dims() -> None:
    conv, ssm = recurrent_state_dims(load_model("mamba-2.8b"))
    assert conv == 3 * 5120  # (d_conv - 1) * d_inner
    assert ssm == 16 * 5120  # d_state * d_inner


@given(st.sampled_from(["f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0", "iq4_nl"]))
def test_smaller_cache_types_never_cost_more(name: str) -> None:
    """Every cache type costs at most what f16 costs... except f32, which costs twice."""
    spec = load_model("llama-3.2-1b")
    f16 = kv_bytes_per_token(spec)
    got = kv_bytes_per_token(spec, name, name)
    assert got == 2 * f16 if name == "f32" else got <= f16
