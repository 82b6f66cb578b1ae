"""vLLM's arithmetic: pages, TP splits and replication, MLA, sliding windows, Mamba, fp8."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget import InvalidArgumentError, load_model
from membudget.engines.vllm import VllmSettings, estimate_vllm, max_model_len, vllm_command
from membudget.engines.vllm.profile import pp_partitions, rank_weight_bytes, vllm_weight_bytes
from membudget.units import GIB

H100 = 80 * GIB


def s(**kw: object) -> VllmSettings:
    return VllmSettings(gpu_memory_bytes=H100, **kw)  # type: ignore[arg-type]


def test_full_attention_page() -> None:
    e = estimate_vllm(load_model("llama-3.1-8b"), s())
    assert e.page_bytes == 32 * 16 * 8 * (128 + 128) * 2
    assert e.request_bytes == 131072 // 16 * e.page_bytes
    assert e.kv_cache_tokens == e.num_blocks * 16
    assert (
        e.kv_cache_bytes
        == math.ceil(H100 * 0.92)  # vllm/v1/worker/utils.py request_memory
        - e.weights_bytes
        - e.activation_bytes
        - e.non_torch_bytes
        - e.cuda_graph_bytes
    )


def test_kv_heads_split_then_replicated_across_tp() -> None:
    spec = load_model("llama-3.1-70b")  # 8 KV heads
    assert estimate_vllm(spec, s(tensor_parallel_size=4)).page_bytes == 80 * 16 * 2 * 256 * 2
    assert estimate_vllm(spec, s(tensor_parallel_size=8)).page_bytes == 80 * 16 * 1 * 256 * 2
    assert estimate_vllm(spec, s(tensor_parallel_size=16)).page_bytes == 80 * 16 * 1 * 256 * 2, (
        "replicated"
    )


def test_mla_is_one_latent_head() -> None:
    e = estimate_vllm(
        load_model("deepseek-v3"), VllmSettings(gpu_memory_bytes=141 * GIB, tensor_parallel_size=8)
    )
    assert e.page_bytes == 61 * 16 * (512 + 64) * 2


def test_sliding_window_layers_are_capped() -> None:
    spec = load_model("gpt-oss-20b")
    e = estimate_vllm(spec, s())
    full = 12 * (131072 // 16) * (16 * 8 * 128 * 2)
    # window - 1 plus two batches of 8192 in flight (async scheduling on CUDA), plus a block
    swa = 12 * (-(-(128 - 1 + 2 * 8192) // 16) + 1) * (16 * 8 * 128 * 2)
    assert e.request_bytes == full + swa


def test_fp8_halves_the_cache() -> None:
    spec = load_model("qwen3-8b")
    assert (
        estimate_vllm(spec, s(kv_cache_dtype="fp8")).page_bytes * 2
        == estimate_vllm(spec, s()).page_bytes
    )


def test_mamba_state_is_constant_per_request() -> None:
    spec = load_model("mamba-2.8b")
    a = estimate_vllm(spec, s(max_model_len=4096))
    b = estimate_vllm(spec, s(max_model_len=65536))
    assert a.request_bytes == b.request_bytes > 0


def test_max_model_len_is_the_longest_single_request() -> None:
    spec = load_model("qwen3-32b")
    settings = VllmSettings(gpu_memory_bytes=80 * GIB, gpu_memory_utilization=0.95)
    longest = max_model_len(spec, settings)
    e = estimate_vllm(spec, replace(settings, max_model_len=longest))
    assert longest % 16 == 0
    assert e.fits
    assert e.request_bytes <= (e.num_blocks - 1) * e.page_bytes  # vLLM's null block held back
    if longest < spec.n_ctx_train:
        more = estimate_vllm(spec, replace(settings, max_model_len=longest + 1))
        assert not more.fits
        assert more.estimated_max_model_len == longest


def test_command() -> None:
    e = estimate_vllm(
        load_model("llama-3.1-70b"),
        s(tensor_parallel_size=4, kv_cache_dtype="fp8", max_model_len=32768),
    )
    assert vllm_command(e, "meta-llama/Llama-3.1-70B") == [
        "vllm", "serve", "meta-llama/Llama-3.1-70B", "--max-model-len", "32768",
        "--gpu-memory-utilization", "0.92", "--kv-cache-dtype", "fp8", "-tp", "4",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
        ({"tensor_parallel_size": 0}, "tensor_parallel_size"),
        ({"kv_cache_dtype": "int4"}, "kv_cache_dtype"),
    ],
)
def test_bad_settings(kw: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match=fragment):
        s(**kw)


HYBRIDS = ["qwen3-8b", "gemma-3-12b", "gpt-oss-20b", "granite-4.0-h-small", "deepseek-v3"]


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(HYBRIDS),
    platform=st.sampled_from(["cuda", "cpu"]),
    block=st.sampled_from([None, 16, 32, 64]),
    kv_mib=st.integers(1, 64 * 1024),
    caching=st.booleans(),
)
def test_auto_fit_is_the_longest_length_and_the_needed_bytes_are_the_least(
    name: str, platform: str, block: int | None, kv_mib: int, caching: bool
) -> None:
    """Auto-fit's length starts and one token more is refused with vLLM's estimate equal to
    it; at a length that starts, its needed bytes start and one byte fewer is refused."""
    spec = load_model(name)
    base = VllmSettings(
        gpu_memory_bytes=H100,
        platform=platform,  # type: ignore[arg-type]
        block_size=block,
        kv_cache_memory_bytes=kv_mib * 2**20,
        enable_prefix_caching=caching,
    )
    fit = estimate_vllm(spec, replace(base, max_model_len=-1))
    if fit.estimated_max_model_len is not None:
        return  # not one token fits
    longest = fit.max_model_len
    at = estimate_vllm(spec, replace(base, max_model_len=longest))
    assert at.fits
    assert at.num_blocks == fit.num_blocks
    if longest < spec.n_ctx_train:
        more = estimate_vllm(spec, replace(base, max_model_len=longest + 1))
        assert not more.fits
        assert more.estimated_max_model_len == longest
    needed = (at.request_blocks + 1) * at.page_bytes
    exact = estimate_vllm(spec, replace(base, max_model_len=longest, kv_cache_memory_bytes=needed))
    assert exact.fits
    short = estimate_vllm(
        spec, replace(base, max_model_len=longest, kv_cache_memory_bytes=needed - 1)
    )
    assert not short.fits


def test_dtype_float32_doubles_weights_and_the_auto_cache() -> None:
    """--dtype float32: floating checkpoint tensors load at four bytes (vLLM creates its
    parameters in the model's dtype) and --kv-cache-dtype auto follows the model's dtype."""
    spec = load_model("qwen3-8b")
    half, full = estimate_vllm(spec, s()), estimate_vllm(spec, s(dtype="float32"))
    assert full.weights_bytes == 2 * half.weights_bytes
    assert full.page_bytes == 2 * half.page_bytes
    fp8 = estimate_vllm(spec, s(dtype="float32", kv_cache_dtype="fp8"))
    assert fp8.page_bytes == half.page_bytes // 2, "an fp8 cache stays one byte"
    assert vllm_command(full, "Qwen/Qwen3-8B")[-2:] == ["--dtype", "float32"]


def test_dtype_float32_with_quantised_weights_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="quantised weights"):
        estimate_vllm(load_model("gpt-oss-20b"), s(dtype="float32"))


@pytest.mark.parametrize(
    ("n", "pp", "parts"),
    [
        (32, 2, [16, 16]),
        (10, 3, [3, 4, 3]),  # the remainder skips the last stage
        (32, 3, [11, 11, 10]),
        (61, 4, [15, 15, 16, 15]),
    ],
)
def test_pp_partitions_are_vllms(n: int, pp: int, parts: list[int]) -> None:
    """vllm/distributed/utils.py get_pp_indices."""
    assert pp_partitions(n, pp) == parts


def test_pipeline_stage_weights() -> None:
    """The fullest stage holds its layers and the embedding (first) or the head (last)."""
    spec = load_model("llama-3.1-70b")
    total = vllm_weight_bytes(spec, "auto")
    layer = spec.weights.layers[0]
    first = spec.weights.token_embd + 40 * layer
    last = 40 * layer + spec.weights.output + spec.weights.other
    assert rank_weight_bytes(spec, "auto", 1, 2) == max(first, last)
    assert rank_weight_bytes(spec, "auto", 4, 2) == -(-max(first, last) // 4)
    assert rank_weight_bytes(spec, "auto", 8, 1) == -(-total // 8)
