"""llama.cpp's allocation rules, stated one at a time (the accuracy suite checks them for real)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from membudget import InvalidArgumentError, load_model
from membudget.engines.llamacpp import (
    LlamaCppRules,
    LlamaCppSettings,
    estimate_llamacpp,
    repack_types_for,
)

NO_REPACK = LlamaCppRules(repack_types=frozenset())


def est(model: str, **kw: object) -> object:
    return estimate_llamacpp(load_model(model), LlamaCppSettings(**kw), NO_REPACK)  # type: ignore[arg-type]


def test_context_is_padded_to_256() -> None:
    e = estimate_llamacpp(load_model("llama-3.2-1b"), LlamaCppSettings(n_ctx=1000), NO_REPACK)
    assert e.n_ctx == 1024
    assert e.kv_cache_bytes == 1024 * 16 * 2 * 8 * 64 * 2


def test_each_sequence_gets_its_own_stream() -> None:
    e = estimate_llamacpp(
        load_model("llama-3.2-1b"), LlamaCppSettings(n_ctx=5000, n_parallel=3), NO_REPACK
    )
    assert (e.n_ctx_seq, e.n_stream, e.n_ctx) == (1792, 3, 5376)
    u = estimate_llamacpp(
        load_model("llama-3.2-1b"),
        LlamaCppSettings(n_ctx=5000, n_parallel=3, kv_unified=True),
        NO_REPACK,
    )
    assert (u.n_ctx_seq, u.n_stream, u.n_ctx) == (5120, 1, 5120)


@pytest.mark.parametrize(
    ("kw", "swa_cells"),
    [
        pytest.param({"n_ctx": 32768}, 1536, id="pad256(window + ubatch)"),
        pytest.param({"n_ctx": 32768, "n_ubatch": 128}, 1280, id="smaller ubatch"),
        pytest.param({"n_ctx": 1024}, 1024, id="capped at the context"),
        pytest.param({"n_ctx": 32768, "swa_full": True}, 32768, id="swa_full"),
        pytest.param(
            {"n_ctx": 32768, "n_parallel": 4, "kv_unified": True},
            4608,
            id="unified: window per sequence",
        ),
    ],
)
def test_swa_cache_cells(kw: dict[str, object], swa_cells: int) -> None:
    e = estimate_llamacpp(load_model("gemma-3-12b"), LlamaCppSettings(**kw), NO_REPACK)  # type: ignore[arg-type]
    assert e.swa_size == swa_cells


def test_quantised_v_needs_flash_attention() -> None:
    with pytest.raises(InvalidArgumentError, match="flash attention"):
        estimate_llamacpp(
            load_model("llama-3.2-1b"), LlamaCppSettings(cache_type_v="q8_0", flash_attn="off")
        )


def test_mla_caches_k_only() -> None:
    e = estimate_llamacpp(load_model("deepseek-v3"), LlamaCppSettings(n_ctx=4096), NO_REPACK)
    assert e.kv_cache_bytes == 61 * 4096 * 576 * 2


def test_recurrent_state_is_per_sequence_not_per_token() -> None:
    a = estimate_llamacpp(load_model("mamba-2.8b"), LlamaCppSettings(n_ctx=4096), NO_REPACK)
    b = estimate_llamacpp(load_model("mamba-2.8b"), LlamaCppSettings(n_ctx=65536), NO_REPACK)
    c = estimate_llamacpp(
        load_model("mamba-2.8b"), LlamaCppSettings(n_ctx=65536, n_parallel=2), NO_REPACK
    )
    assert a.recurrent_state_bytes == b.recurrent_state_bytes == 64 * (3 + 16) * 5120 * 4
    assert c.recurrent_state_bytes == 2 * a.recurrent_state_bytes
    assert a.kv_cache_bytes == 0


def test_output_buffer_is_logits_per_sequence() -> None:
    e = estimate_llamacpp(load_model("llama-3.1-8b"), LlamaCppSettings(n_parallel=4), NO_REPACK)
    assert e.output_bytes == 128256 * 4 * 4


def test_repack_types_follow_cpu_flags() -> None:
    assert repack_types_for(frozenset({"avx2"}), "x86_64") == {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    assert "Q2_K" in repack_types_for(frozenset({"avx2", "avx512f"}), "x86_64")
    assert repack_types_for(frozenset(), "x86_64") == frozenset()
    assert "Q8_0" in repack_types_for(frozenset({"asimddp"}), "aarch64")


def test_parts_sum_to_total() -> None:
    e = estimate_llamacpp(load_model("gemma-3-4b"), LlamaCppSettings(n_ctx=8192), NO_REPACK)
    assert e.total_bytes == (
        e.weights_bytes
        + e.kv_cache_bytes
        + e.recurrent_state_bytes
        + e.output_bytes
        + e.compute_bytes
    )


@given(ctx=st.integers(1, 200_000), extra=st.integers(0, 100_000))
def test_kv_grows_with_context(ctx: int, extra: int) -> None:
    """A longer context never needs less KV cache."""
    spec = load_model("qwen3-4b")
    small = estimate_llamacpp(spec, LlamaCppSettings(n_ctx=ctx), NO_REPACK)
    big = estimate_llamacpp(spec, LlamaCppSettings(n_ctx=ctx + extra), NO_REPACK)
    assert big.kv_cache_bytes >= small.kv_cache_bytes
    assert small.kv_cache_bytes % (36 * 2 * 8 * 128 * 2) == 0
