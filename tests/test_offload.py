"""GPU placement and offload: llama.cpp's -ngl, -ts and --n-cpu-moe rules, and the solver."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget import load_model
from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp.devices import (
    CPU,
    cuda_alloc_bytes,
    layer_devices,
    split_counts,
    tensor_device,
)
from membudget.model import TensorSpec
from membudget.placement import Pins
from membudget.plan import Budget, fits, make_plan, min_gpus, offload
from membudget.presets import apply_preset
from membudget.units import GIB

R = LlamaCppRules(repack_types=frozenset())


@pytest.mark.parametrize(
    ("n_layer", "ngl", "devices", "split", "expected"),
    [
        pytest.param(4, 0, ("CUDA0",), (), [CPU] * 5, id="no offload"),
        pytest.param(4, 5, ("CUDA0",), (), ["CUDA0"] * 5, id="all slots, output included"),
        pytest.param(4, 4, ("CUDA0",), (), [CPU] + ["CUDA0"] * 4, id="-ngl n_layer leaves layer 0"),
        pytest.param(4, 2, ("CUDA0",), (), [CPU] * 3 + ["CUDA0"] * 2, id="the last slots go first"),
        pytest.param(
            3, 99, ("CUDA0", "CUDA1"), (), ["CUDA0", "CUDA0", "CUDA1", "CUDA1"], id="even split"
        ),
        pytest.param(
            3,
            99,
            ("CUDA0", "CUDA1"),
            (3.0, 1.0),
            ["CUDA0", "CUDA0", "CUDA0", "CUDA1"],
            id="-ts 3,1",
        ),
    ],
)
def test_layer_devices(
    n_layer: int, ngl: int, devices: tuple[str, ...], split: tuple[float, ...], expected: list[str]
) -> None:
    assert layer_devices(n_layer, ngl, devices, split) == expected


def test_tensor_devices() -> None:
    slots = ["CUDA0"] * 5
    assert tensor_device("token_embd.weight", slots) == CPU, "the input layer stays on the CPU"
    assert tensor_device("output.weight", slots) == "CUDA0"
    assert tensor_device("blk.1.ffn_up_exps.weight", slots, n_cpu_moe=2) == CPU
    assert tensor_device("blk.2.ffn_up_exps.weight", slots, n_cpu_moe=2) == "CUDA0"
    assert tensor_device("blk.1.attn_q.weight", slots, n_cpu_moe=2) == "CUDA0"


def test_cuda_pads_quantised_rows() -> None:
    whole = TensorSpec("blk.0.attn_q.weight", "Q4_K", (2560, 4096), 2560 * 4096 // 256 * 144)
    assert cuda_alloc_bytes(whole) == whole.n_bytes, "2560 is a whole number of 512-value rows"
    t = TensorSpec("blk.0.attn_q.weight", "Q4_K", (2816, 4096), 2816 * 4096 // 256 * 144)
    padded = t.n_bytes + 144  # 256 values short of 512: one more Q4_K block
    assert cuda_alloc_bytes(t) == -(-padded // 128) * 128, "then aligned to 128 bytes"
    f = TensorSpec("x", "F16", (4096, 4096), 4096 * 4096 * 2)
    assert cuda_alloc_bytes(f) == f.n_bytes


@settings(max_examples=30, deadline=None)
@given(
    name=st.sampled_from(["llama-3.1-8b", "qwen3-30b-a3b", "gemma-3-12b", "granite-4.0-h-small"]),
    a=st.integers(0, 60),
    b=st.integers(0, 60),
)
def test_offloading_more_layers_never_lowers_gpu_use(name: str, a: int, b: int) -> None:
    """More layers on the GPU never means less GPU memory, nor more CPU memory for weights."""
    spec = apply_preset(load_model(name), "Q4_K_M")
    lo, hi = sorted((a, b))
    base = LlamaCppSettings(n_ctx=4096, gpus=("CUDA0",))
    e_lo = estimate_llamacpp(spec, replace(base, n_gpu_layers=lo), R).by_device()
    e_hi = estimate_llamacpp(spec, replace(base, n_gpu_layers=hi), R).by_device()
    assert e_hi.get("CUDA0", 0) >= e_lo.get("CUDA0", 0)


def test_full_offload_when_it_fits() -> None:
    spec = apply_preset(load_model("llama-3.1-8b"), "Q4_K_M")
    b = Budget(16 * GIB, 16 * GIB, 0, "t", (("CUDA0", 24 * GIB),))
    s = offload(spec, LlamaCppSettings(n_ctx=8192), b, R)
    assert s.n_gpu_layers == 33
    assert fits(estimate_llamacpp(spec, s, R), b)


def test_moe_experts_go_to_cpu_before_layers() -> None:
    spec = apply_preset(load_model("qwen3-30b-a3b"), "Q4_K_M")
    b = Budget(32 * GIB, 32 * GIB, 0, "t", (("CUDA0", 12 * GIB),))
    s = offload(spec, LlamaCppSettings(n_ctx=4096), b, R)
    assert s.n_gpu_layers == 49
    assert 0 < s.n_cpu_moe < 48
    assert fits(estimate_llamacpp(spec, s, R), b)
    assert not fits(estimate_llamacpp(spec, replace(s, n_cpu_moe=s.n_cpu_moe - 1), R), b)


def test_partial_offload_for_a_dense_model() -> None:
    spec = apply_preset(load_model("llama-3.1-70b"), "Q4_K_M")
    b = Budget(64 * GIB, 64 * GIB, 0, "t", (("CUDA0", 24 * GIB),))
    plan = make_plan(spec, LlamaCppSettings(n_ctx=8192), b, R)
    n = plan.estimate.settings.n_gpu_layers
    assert 0 < n < 81
    assert plan.fits
    worse = estimate_llamacpp(spec, replace(plan.estimate.settings, n_gpu_layers=n + 1), R)
    assert worse.by_device()["CUDA0"] > 24 * GIB


def test_two_gpus_get_whole_layer_counts_that_llama_cpp_reproduces() -> None:
    spec = apply_preset(load_model("llama-3.1-70b"), "Q4_K_M")
    b = Budget(64 * GIB, 64 * GIB, 0, "t", (("CUDA0", 24 * GIB), ("CUDA1", 16 * GIB)))
    plan = make_plan(spec, LlamaCppSettings(n_ctx=8192), b, R, extras=False)
    s = plan.estimate.settings
    assert all(float(x).is_integer() for x in s.tensor_split)
    counts = [int(x) for x in s.tensor_split]
    slots = layer_devices(spec.n_layer, s.n_gpu_layers, s.gpus, s.tensor_split)
    assert [slots.count(d) for d in s.gpus] == counts
    assert plan.fits
    ts = plan.command[plan.command.index("-ts") + 1]
    assert ts == ",".join(str(c) for c in counts)


@pytest.mark.parametrize(
    ("n_slots", "ngl", "shares", "expected"),
    [
        pytest.param(81, 81, (40.0, 41.0), (40, 41), id="whole counts are exact"),
        pytest.param(81, 99, (0.0, 81.0), (0, 81), id="a zero share gets nothing"),
        pytest.param(33, 33, (3.0, 1.0), (25, 8), id="-ts 3,1 as llama.cpp rounds it"),
        pytest.param(33, 10, (1.0, 1.0), (5, 5), id="partial offload"),
    ],
)
def test_split_counts(
    n_slots: int, ngl: int, shares: tuple[float, ...], expected: tuple[int, ...]
) -> None:
    assert split_counts(n_slots, ngl, shares) == expected


def test_min_gpus() -> None:
    spec = apply_preset(load_model("llama-3.1-70b"), "Q4_K_M")
    assert min_gpus(spec, LlamaCppSettings(n_ctx=8192), 24 * GIB, 32 * GIB, R) == 2
    assert min_gpus(spec, LlamaCppSettings(n_ctx=8192), 80 * GIB, 32 * GIB, R) == 1


def test_best_preset_is_the_largest_that_fits() -> None:
    from membudget.plan import PRESET_LADDER, best_preset

    spec = load_model("qwen3-8b")
    b = Budget(8 * GIB, 8 * GIB, 0, "t")
    chosen = best_preset(spec, LlamaCppSettings(n_ctx=8192), b, R).with_offload
    assert chosen is not None
    i = PRESET_LADDER.index(chosen)
    assert fits(estimate_llamacpp(apply_preset(spec, chosen), LlamaCppSettings(n_ctx=8192), R), b)
    if i > 0:
        bigger = apply_preset(spec, PRESET_LADDER[i - 1])
        assert not fits(estimate_llamacpp(bigger, LlamaCppSettings(n_ctx=8192), R), b)


def test_best_preset_on_the_gpus_alone_and_with_offload() -> None:
    from membudget.plan import best_preset

    spec = load_model("qwen3-8b")
    b = Budget(64 * GIB, 64 * GIB, 0, "t", (("CUDA0", 6 * GIB),))
    best = best_preset(spec, LlamaCppSettings(n_ctx=8192), b, R)
    assert best.with_offload == "F16", "64 GiB of RAM holds F16 with layers on the CPU"
    assert best.gpu_only in ("Q4_K_M", "Q3_K_M"), best


def test_rpc_workers_are_devices() -> None:
    from membudget.plan import budget_for, rpc_commands

    b = budget_for(32 * GIB, None, None, (24 * GIB,), (24 * GIB,))
    assert [d for d, _ in b.gpus] == ["RPC0", "CUDA0"]
    spec = apply_preset(load_model("llama-3.1-70b"), "Q4_K_M")
    plan = make_plan(spec, LlamaCppSettings(n_ctx=8192), b, R)
    assert plan.fits
    assert set(plan.estimate.by_device()) == {"CPU", "CUDA0", "RPC0"}
    cmds = rpc_commands(plan.estimate)
    assert cmds[0][0] == "rpc-server"
    assert "--rpc" in cmds[-1]
    assert any("0.0.0.0" in w for w in plan.warnings)


def test_a_single_rpc_node_is_rpc0() -> None:
    from membudget.plan import budget_for, rpc_commands

    b = budget_for(16 * GIB, None, None, None, (24 * GIB,))
    spec = apply_preset(load_model("qwen3-8b"), "Q4_K_M")
    plan = make_plan(spec, LlamaCppSettings(n_ctx=8192), b, R)
    assert plan.estimate.settings.gpus == ("RPC0",)
    assert len(rpc_commands(plan.estimate)) == 2


def test_repacked_weights_are_reclaimable() -> None:
    spec = apply_preset(load_model("qwen3-8b"), "Q4_K_M")
    avx2 = LlamaCppRules(repack_types=frozenset({"Q4_K"}))
    e = estimate_llamacpp(spec, LlamaCppSettings(n_ctx=4096), avx2)
    plain = estimate_llamacpp(spec, LlamaCppSettings(n_ctx=4096), R)
    repack = next(b for b in e.buffers if "REPACK" in b.detail)
    assert e.total_bytes == plain.total_bytes + repack.n_bytes, (
        "reported: both buffers, as llama.cpp prints"
    )
    assert e.resident_bytes == plain.total_bytes, "resident: the mapped copies can be dropped"


def test_pinned_placement_is_honoured() -> None:
    spec = apply_preset(load_model("llama-3.1-70b"), "Q4_K_M")
    b = Budget(64 * GIB, 64 * GIB, 0, "t", (("CUDA0", 24 * GIB),))
    plan = make_plan(spec, LlamaCppSettings(n_ctx=8192), b, R, pins=Pins(n_gpu_layers=81))
    assert plan.estimate.settings.n_gpu_layers == 81
    assert not plan.fits
