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
from membudget.placement import Pins
from membudget.plan import Budget, budget_for, make_plan, max_context, max_parallel
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
    return estimate_llamacpp(spec, LlamaCppSettings(**kw), R).resident_bytes  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(MODELS),
    gib=st.integers(1, 600),
    np=st.integers(1, 4),
    fa=st.sampled_from(["on", "off"]),
)
def test_max_context_fits_and_one_more_step_does_not(name: str, gib: int, np: int, fa: str) -> None:
    """With one memory pool, max_context fits, and max_context plus one 256-token step per
    sequence does not (unless it is already the trained context)."""
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


def test_plan_fits_and_command() -> None:
    p = make_plan(
        _spec("qwen3-8b"),
        LlamaCppSettings(n_ctx=8192, cache_type_k="q8_0", cache_type_v="q8_0"),
        budget(64 * GIB),
        R,
    )
    assert p.fits
    assert "-ctk" in p.command
    assert "q8_0" in p.command
    assert p.command[p.command.index("-np") + 1] == "1", "llama-server's -np default is not 1"
    assert p.max_context >= 8192
    assert p.max_context_limit == "n_ctx_train"


def test_context_limit_names_memory_when_memory_binds() -> None:
    p = make_plan(_spec("qwen3-8b"), LlamaCppSettings(n_ctx=4096), budget(6 * GIB), R)
    assert p.max_context_limit == "memory"
    assert 4096 < p.max_context < 40960


def test_warns_past_the_trained_context() -> None:
    spec = _spec("qwen3-8b")
    p = make_plan(spec, LlamaCppSettings(n_ctx=65536), budget(128 * GIB), R)
    assert any("trained on" in w for w in p.warnings)
    p = make_plan(
        spec, LlamaCppSettings(n_ctx=4096, n_ubatch=4096, n_batch=2048), budget(64 * GIB), R
    )
    assert any("-ub 4096" in w for w in p.warnings)


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


def test_rpc_servers_come_first() -> None:
    """llama.cpp lists RPC servers before local GPUs (src/llama.cpp)."""
    b = budget_for(32 * GIB, None, None, (24 * GIB,), (16 * GIB, 8 * GIB))
    assert [d for d, _ in b.gpus] == ["RPC0", "RPC1", "CUDA0"]


def test_too_many_sequences() -> None:
    with pytest.raises(ValueError, match="256"):
        make_plan(_spec("qwen3-0.6b"), replace(LlamaCppSettings(), n_parallel=300), budget(GIB), R)


@pytest.mark.parametrize(
    ("gpus", "pins", "message"),
    [
        pytest.param(
            (("CUDA0", GIB),), Pins(tensor_split=(3.0, 1.0)), "2 shares", id="-ts past the GPUs"
        ),
        pytest.param((), Pins(n_cpu_moe=5), "no GPU", id="--n-cpu-moe without a GPU"),
        pytest.param((), Pins(n_gpu_layers=10), "needs a GPU", id="-ngl without a GPU"),
        pytest.param((("CUDA0", GIB),), Pins(n_gpu_layers=-1), "0 or more", id="negative -ngl"),
    ],
)
def test_refuses_pins_llama_cpp_cannot_honour(
    gpus: tuple[tuple[str, int], ...], pins: Pins, message: str
) -> None:
    b = Budget(64 * GIB, 64 * GIB, 0, "t", gpus)
    with pytest.raises(InvalidArgumentError, match=message):
        make_plan(_spec("qwen3-30b-a3b"), LlamaCppSettings(), b, R, pins=pins)


def test_refuses_n_cpu_moe_on_a_dense_model() -> None:
    b = Budget(64 * GIB, 64 * GIB, 0, "t", (("CUDA0", 8 * GIB),))
    with pytest.raises(InvalidArgumentError, match="dense"):
        make_plan(_spec("qwen3-8b"), LlamaCppSettings(), b, R, pins=Pins(n_cpu_moe=2))


def test_more_vram_never_lowers_max_context_on_the_issue_example() -> None:
    """qwen3-14b: 6 GiB of VRAM gave 18,432 tokens and 8 GiB gave 18,176 before the placement
    became part of the search."""
    spec = _spec("qwen3-14b")
    ctxs = []
    for vram in (6, 8, 10):
        b = Budget(16 * GIB, 16 * GIB, 0, "t", (("CUDA0", vram * GIB),))
        ctxs.append(make_plan(spec, LlamaCppSettings(n_ctx=4096), b, R, extras=False).max_context)
    assert ctxs == sorted(ctxs)


def test_largest_context_is_over_every_placement() -> None:
    """qwen3-8b Q4_K_M on 8 GiB of VRAM and 32 GiB of RAM: the largest context is the trained
    one (at a lower -ngl), not the largest at the -ngl chosen for the asked context."""
    b = Budget(32 * GIB, 32 * GIB, 0, "t", (("CUDA0", 8 * GIB),))
    p = make_plan(_spec("qwen3-8b"), LlamaCppSettings(n_ctx=24320), b, R, extras=False)
    assert p.max_context == 40960


def test_yarn_changes_the_trained_context_only_at_a_new_factor() -> None:
    """llama_init_from_model: with YaRN at a factor other than the model's own, n_ctx_train
    becomes the original context times the factor; linear scaling leaves it."""
    from membudget.readers.catalog import catalog_spec
    from membudget.request import PlanRequest, yarn_ctx_train

    spec = replace(
        catalog_spec("qwen3-8b"),
        n_ctx_train=131072,
        rope_scaling="yarn",
        rope_factor=4.0,
        n_ctx_orig_yarn=32768,
    )
    assert yarn_ctx_train(spec, PlanRequest(rope_scale=4.0)) is None
    assert yarn_ctx_train(spec, PlanRequest()) is None
    scaled = yarn_ctx_train(spec, PlanRequest(rope_scale=8.0))
    assert scaled is not None
    assert scaled[0] == 262144
    assert yarn_ctx_train(spec, PlanRequest(rope_scale=8.0, rope_scaling="linear")) is None
    scaled = yarn_ctx_train(spec, PlanRequest(rope_scale=2.0, yarn_orig_ctx=40960))
    assert scaled is not None
    assert scaled[0] == 81920
