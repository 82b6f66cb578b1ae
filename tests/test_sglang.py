"""SGLang's arithmetic (0.5.10.post1), against figures worked out by hand from its source.

SGLang cannot be imported here (its server arguments pull in a CUDA torchvision), so each golden
figure below is computed from the release's ``server_args.py`` and
``model_executor/model_runner_kv_cache_mixin.py`` by hand, the steps in the case's comment.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from membudget import InvalidArgumentError, load_model
from membudget.cli import main
from membudget.engines.sglang import (
    SglangSettings,
    default_memory_settings,
    estimate_sglang,
    longest_context,
    sglang_command,
)
from membudget.units import GIB, MIB

SCHEMA = json.loads((Path(__file__).parents[1] / "src/membudget/schemas/plan.2.json").read_text())


@pytest.mark.parametrize(
    ("gpu_mib", "tp", "pp", "mla", "chunk", "max_bs", "reserved", "fraction"),
    [
        # T4 (15360 MiB): 2048 / 8; 512 + 1.5*2048 + 2*8 + 1/8*1024 + 42 piecewise sizes*8
        # = 4064; round(11296 / 15360, 3)
        (15360, 1, 1, False, 2048, 8, 4064, 0.735),
        # RTX 4090 (24564 MiB): 2048 / 24; 512 + 3072 + 48 + 128 + 336 = 4096
        (24564, 1, 1, False, 2048, 24, 4096, 0.833),
        # H100 80GB (81559 MiB): 8192 / 256; 512 + 12288 + 512 + 128 + 58*8 = 13904 (> 10 GiB)
        (81559, 1, 1, False, 8192, 256, 13904, 0.83),
        # H100, MLA: the piecewise graphs reserve 1.5 GiB instead: 14976
        (81559, 1, 1, True, 8192, 256, 14976, 0.816),
        # H100, TP 8: 512 graphs; tp/8 GiB = 1024: 512 + 12288 + 1024 + 1024 + 464 = 15312
        (81559, 8, 1, False, 8192, 512, 15312, 0.812),
        # H100, PP 2: no piecewise graphs; 512 + 12288 + 512 + 256 = 13568
        (81559, 1, 2, False, 8192, 256, 13568, 0.834),
        # H200 (143771 MiB): as the H100: 13904; round(129867 / 143771, 3)
        (143771, 1, 1, False, 8192, 256, 13904, 0.903),
        # B200 (183359 MiB): 16384 / 512; 512 + 24576 + 1024 + 128 + 74*8 = 26832
        (183359, 1, 1, False, 16384, 512, 26832, 0.854),
        # A100 40GB (40960 MiB): 4096 / 32; 512 + 6144 + 64 + 128 + 50*8 = 7248 (under 60 GiB:
        # no 10 GiB floor)
        (40960, 1, 1, False, 4096, 32, 7248, 0.823),
    ],
)
def test_default_memory_settings(
    gpu_mib: int,
    tp: int,
    pp: int,
    mla: bool,
    chunk: int,
    max_bs: int,
    reserved: float,
    fraction: float,
) -> None:
    d = default_memory_settings(gpu_mib * MIB, tp=tp, pp=pp, mla=mla)
    assert (d.chunked_prefill_size, d.cuda_graph_max_bs) == (chunk, max_bs)
    assert d.reserved_mib == reserved
    assert d.mem_fraction_static == fraction


def test_capture_lists() -> None:
    """_generate_cuda_graph_batch_sizes and _generate_piecewise_cuda_graph_tokens."""
    d = default_memory_settings(24564 * MIB)
    assert d.cuda_graph_bs == (1, 2, 4, 8, 12, 16, 24)
    assert len(default_memory_settings(81559 * MIB).piecewise_cuda_graph_tokens) == 58
    assert default_memory_settings(81559 * MIB).cuda_graph_bs[-1] == 256
    odd = default_memory_settings(81559 * MIB, cuda_graph_max_bs=100)
    assert odd.cuda_graph_bs[-2:] == (96, 100), "the maximum is appended when not in the list"
    capped = default_memory_settings(81559 * MIB, max_total_tokens=1000)
    assert max(capped.piecewise_cuda_graph_tokens) <= 1000


def test_cell_sizes() -> None:
    """get_cell_size_per_token: KV heads per rank x (head_dim + v_head_dim) x layers x bytes;
    MLA keeps kv_lora_rank + rope per layer."""
    s = SglangSettings(gpu_memory_bytes=80 * GIB)
    llama = load_model("llama-3.1-8b")
    assert estimate_sglang(llama, s).cell_bytes == 8 * 256 * 32 * 2
    fp8 = estimate_sglang(llama, replace(s, kv_cache_dtype="fp8_e4m3"))
    assert fp8.cell_bytes == 8 * 256 * 32
    big = load_model("llama-3.1-70b")
    tp16 = SglangSettings(gpu_memory_bytes=80 * GIB, tensor_parallel_size=16)
    assert estimate_sglang(big, tp16).cell_bytes == 1 * 256 * 80 * 2, "replicated past 8"
    ds = load_model("deepseek-v3")
    assert estimate_sglang(ds, replace(s, tensor_parallel_size=8)).cell_bytes == (
        (512 + 64) * 61 * 2
    )
    gemma = load_model("gemma-3-12b")  # SGLang switches hybrid SWA memory off for Gemma 3
    g = estimate_sglang(gemma, s)
    assert g.full_tokens is None
    assert g.cell_bytes == 8 * 512 * 48 * 2


def test_pool_is_sglangs_profile() -> None:
    """profile_max_num_token on an H100 for Llama 3.1 8B, step by step in SGLang's floats."""
    spec = load_model("llama-3.1-8b")
    e = estimate_sglang(spec, SglangSettings(gpu_memory_bytes=81559 * MIB))
    pre = 81559 * MIB - 512 * MIB
    post = pre - spec.weights.total
    rest = post / (1 << 30) - pre / (1 << 30) * (1 - 0.83)
    assert e.profiled_tokens == int(rest * (1 << 30)) // 131072
    assert e.max_total_num_tokens == e.profiled_tokens
    # _resolve_max_num_reqs: int(pool / 131072 * 512), clamped to [2048, 4096], and pool // 2
    assert e.max_running_requests == max(
        min(int(e.max_total_num_tokens / 131072 * 512), 4096), 2048
    )


def test_cap_and_page_alignment() -> None:
    spec = load_model("llama-3.1-8b")
    base = SglangSettings(gpu_memory_bytes=80 * GIB)
    paged = estimate_sglang(spec, replace(base, page_size=64))
    assert paged.max_total_num_tokens == paged.profiled_tokens // 64 * 64
    capped = estimate_sglang(spec, replace(base, max_total_tokens=10_000, page_size=64))
    assert capped.max_total_num_tokens == 9984
    asked = estimate_sglang(spec, replace(base, max_running_requests=100))
    assert asked.max_running_requests == 100


def test_hybrid_sliding_window_split() -> None:
    """_resolve_hybrid_swa_tokens for gpt-oss: full = total / (F + 0.8 S), swa = 0.8 full."""
    spec = load_model("gpt-oss-20b")
    e = estimate_sglang(spec, SglangSettings(gpu_memory_bytes=80 * GIB))
    per_layer = 8 * (64 + 64) * 2
    full_layers = sum(1 for x in spec.layers if x.has_kv and not x.sliding_window)
    swa_layers = sum(1 for x in spec.layers if x.has_kv and x.sliding_window)
    assert (full_layers, swa_layers) == (12, 12)
    f, s = full_layers * per_layer, swa_layers * per_layer
    capacity = e.profiled_tokens
    assert e.full_tokens == int(capacity * (f + s) / (f + 0.8 * s))
    assert e.swa_tokens == int(e.full_tokens * 0.8)
    assert e.max_total_num_tokens == e.full_tokens
    assert e.kv_cache_bytes <= capacity * (f + s)


def test_request_cap_and_fit() -> None:
    """tp_worker.py: requests are capped at min(context_len - 1, pool - 1) tokens."""
    spec = load_model("llama-3.1-8b")
    e = estimate_sglang(spec, SglangSettings(gpu_memory_bytes=24 * GIB, context_length=131072))
    assert not e.fits
    assert e.max_request_tokens == e.max_total_num_tokens - 1
    assert longest_context(spec, e.settings) == e.max_total_num_tokens
    ok = estimate_sglang(spec, replace(e.settings, context_length=e.max_total_num_tokens))
    assert ok.fits


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(["llama-3.1-8b", "qwen3-8b", "gpt-oss-20b", "mistral-7b", "phi-4"]),
    gpu_mib=st.integers(16 * 1024, 200 * 1024),
    ctx=st.integers(1024, 131072),
    page=st.sampled_from([1, 16, 64]),
    dtype=st.sampled_from(["auto", "fp8_e4m3"]),
)
def test_needed_bytes_is_the_fit_boundary(
    name: str, gpu_mib: int, ctx: int, page: int, dtype: str
) -> None:
    """At a pinned mem_fraction_static, a GPU of needed_bytes fits the context and one 64
    bytes smaller does not: needed_bytes is where the verdict turns (SGLang computes in floats,
    so the last few bytes are its floats' to decide)."""
    spec = load_model(name)
    s = SglangSettings(
        gpu_memory_bytes=gpu_mib * MIB,
        context_length=ctx,
        page_size=page,
        kv_cache_dtype=dtype,  # type: ignore[arg-type]
    )
    e = estimate_sglang(spec, s)
    pinned = replace(s, mem_fraction_static=e.mem_fraction_static)
    assume(e.needed_bytes > 2 * GIB)
    at = estimate_sglang(spec, replace(pinned, gpu_memory_bytes=e.needed_bytes + 8))
    assert at.fits
    below = estimate_sglang(spec, replace(pinned, gpu_memory_bytes=e.needed_bytes - 64))
    assert not below.fits
    assume(abs(e.needed_bytes - s.gpu_memory_bytes) > 64)  # SGLang's floats decide the edge
    assert e.fits == (e.needed_bytes <= s.gpu_memory_bytes)


def test_refusals() -> None:
    with pytest.raises(InvalidArgumentError, match="recurrent"):
        estimate_sglang(load_model("granite-4.0-h-small"), SglangSettings(80 * GIB))
    with pytest.raises(InvalidArgumentError, match="attention heads"):
        estimate_sglang(load_model("qwen3-8b"), SglangSettings(80 * GIB, tensor_parallel_size=3))
    with pytest.raises(InvalidArgumentError, match="mem-fraction-static"):
        SglangSettings(80 * GIB, mem_fraction_static=1.2)


def test_command_pins_what_was_planned() -> None:
    e = estimate_sglang(
        load_model("qwen3-8b"),
        SglangSettings(80 * GIB, context_length=32768, page_size=16, tensor_parallel_size=2),
    )
    assert sglang_command(e, "Qwen/Qwen3-8B") == [
        "python",
        "-m",
        "sglang.launch_server",
        "--model-path",
        "Qwen/Qwen3-8B",
        "--context-length",
        "32768",
        "--mem-fraction-static",
        f"{e.mem_fraction_static:g}",
        "--page-size",
        "16",
        "--tp-size",
        "2",
    ]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_plan_json_is_schema_valid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "gpt-oss-20b", "--engine", "sglang", "--gpu", "80GiB", "--json")
    assert code == 0, err
    doc = json.loads(out)
    jsonschema.validate(doc, SCHEMA)
    assert doc["engine"] == "sglang"
    assert doc["commands"]["sglang"][:3] == ["python", "-m", "sglang.launch_server"]
    assert doc["sglang"]["max_total_num_tokens"] == doc["sglang"]["full_tokens"]


def test_cli_does_not_fit_exits_1_and_explains(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "llama-3.1-8b",
        "--engine",
        "sglang",
        "--gpu",
        "24GiB",
        "--ctx",
        "131072",
        "--explain",
    )
    assert code == 1, err
    assert "does NOT fit" in out
    assert "get_cell_size_per_token" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--engine", "sglang", "--max-model-len", "4096"], "--max-model-len"),
        (["--engine", "sglang", "--kv-cache-dtype", "fp8"], "bf16, fp8_e4m3 or fp8_e5m2"),
        (["--engine", "vllm", "--mem-fraction-static", "0.8"], "--mem-fraction-static"),
        (["--engine", "llama-server", "--page-size", "16"], "--page-size"),
        (["--engine", "sglang", "-ngl", "10"], "--n-gpu-layers"),
        (["--engine", "sglang", "--mem-fraction-static", "1.5"], "between 0 and 1"),
    ],
)
def test_cli_refuses_foreign_flags(
    capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    code, _, err = run(capsys, "qwen3-8b", "--gpu", "80GiB", *args)
    assert code == 2, err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
