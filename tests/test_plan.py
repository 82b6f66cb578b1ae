"""Solvers: exact on llama.cpp's grid, monotone, and honest about what to change."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget import InvalidArgumentError, load_model
from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings, estimate_llamacpp
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.plan import Budget, budget_for, make_plan, max_context, max_parallel, suggestions
from membudget.presets import apply_preset
from membudget.units import GIB

R = LlamaCppRules(repack_types=frozenset())
MODELS = [
    "qwen3-8b",
    "gemma-3-12b",
    "deepseek-v3",
    "mamba-2.8b",
    "gpt-oss-20b",
    "granite-4.0-h-small",
]


def _spec(name: str) -> ModelSpec:
    return apply_preset(load_model(name), "Q4_K_M")


def budget(n: int) -> Budget:
    return Budget(n, n, 0, "test")


def total(spec: ModelSpec, **kw: object) -> int:
    return estimate_llamacpp(spec, LlamaCppSettings(**kw), R).total_bytes  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(MODELS),
    gib=st.integers(1, 600),
    np=st.integers(1, 4),
    fa=st.sampled_from(["on", "off"]),
)
def test_max_context_fits_and_one_more_step_does_not(name: str, gib: int, np: int, fa: str) -> None:
    """max_context fits, and max_context plus one 256-token step per sequence does not (unless
    it is already the trained context)."""
    spec = _spec(name)
    s = LlamaCppSettings(n_parallel=np, flash_attn=fa)  # type: ignore[arg-type]
    b = budget(gib * GIB)
    ctx = max_context(spec, s, b, R)
    if ctx:
        assert total(spec, n_ctx=ctx, n_parallel=np, flash_attn=fa) <= b.memory_bytes
        if ctx // np < spec.n_ctx_train:
            assert total(spec, n_ctx=ctx + 256 * np, n_parallel=np, flash_attn=fa) > b.memory_bytes
    else:
        assert total(spec, n_ctx=256 * np, n_parallel=np, flash_attn=fa) > b.memory_bytes


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(MODELS), gib=st.integers(1, 400), extra=st.integers(0, 200))
def test_more_memory_never_lowers_max_context(name: str, gib: int, extra: int) -> None:
    """More memory never lowers the largest context."""
    spec = _spec(name)
    s = LlamaCppSettings()
    assert max_context(spec, s, budget((gib + extra) * GIB), R) >= max_context(
        spec, s, budget(gib * GIB), R
    )


@settings(max_examples=20, deadline=None)
@given(name=st.sampled_from(MODELS), gib=st.integers(1, 400))
def test_a_smaller_cache_type_never_lowers_max_context(name: str, gib: int) -> None:
    """q8_0 never gives a shorter context than f16, nor q4_0 than q8_0."""
    spec = _spec(name)
    b = budget(gib * GIB)
    ctxs = [
        max_context(spec, LlamaCppSettings(cache_type_k=t, cache_type_v=t, flash_attn="on"), b, R)
        for t in ("f16", "q8_0", "q4_0")
    ]
    assert ctxs == sorted(ctxs)


def test_max_parallel() -> None:
    spec = _spec("qwen3-8b")
    s = LlamaCppSettings(n_ctx=8192)
    b = budget(16 * GIB)
    n = max_parallel(spec, s, b, R)
    assert n >= 1
    assert total(spec, n_ctx=8192 * n, n_parallel=n) <= b.memory_bytes
    assert total(spec, n_ctx=8192 * (n + 1), n_parallel=n + 1) > b.memory_bytes


def test_suggestions_each_fit() -> None:
    spec = _spec("qwen3-8b")
    s = LlamaCppSettings(n_ctx=65536, n_parallel=2)
    b = budget(10 * GIB)
    assert total(spec, n_ctx=65536, n_parallel=2) > b.memory_bytes
    found = suggestions(spec, s, b, R)
    assert found
    assert all(x.total_bytes <= b.memory_bytes for x in found)
    assert found[0].change.startswith("quantise the KV cache")


def test_plan_fits_and_command() -> None:
    p = make_plan(
        _spec("qwen3-8b"),
        LlamaCppSettings(n_ctx=8192, cache_type_k="q8_0", cache_type_v="q8_0"),
        budget(64 * GIB),
        R,
    )
    assert p.fits
    assert p.suggestions == ()
    assert "-ctk" in p.command
    assert "q8_0" in p.command
    assert p.max_context >= 8192


def test_budget_margin() -> None:
    from membudget.hardware import detect
    from tests.test_hardware import files

    hw: Hardware = detect(files({}))
    b = budget_for(None, hw)
    assert b.memory_bytes == hw.ram.available_bytes - GIB
    assert budget_for(8 * GIB, None).memory_bytes == 8 * GIB
    assert budget_for(8 * GIB, None, GIB).memory_bytes == 7 * GIB
    with pytest.raises(InvalidArgumentError):
        budget_for(None, None)


def test_too_many_sequences() -> None:
    with pytest.raises(ValueError, match="256"):
        make_plan(_spec("qwen3-0.6b"), replace(LlamaCppSettings(), n_parallel=300), budget(GIB), R)
