"""The ollama engine: Ollama's defaults and settings (fb3076099) turned into the llama-server
command it starts. The command itself runs in tests/test_llama_server.py."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from membudget.cli import main
from membudget.engines.ollama import (
    OllamaFile,
    OllamaMachine,
    OllamaSettings,
    automatic_generation_batch,
    default_num_ctx,
    generation_batch,
    host_pressure,
    ollama_launch,
)
from membudget.loader import load_model
from membudget.model import ModelSpec

GIB = 1 << 30
MIB = 1 << 20
GB = 10**9


def _cli(*args: str) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue()


def _spec(name: str = "qwen3-8b") -> ModelSpec:
    return load_model(name)


def test_num_ctx_defaults_by_the_gpus_total_memory() -> None:
    """server/routes.go: 262,144 from 47 GiB, 32,768 from 23 GiB, 4,096 below (none: CPU)."""
    assert default_num_ctx(0) == 4096
    assert default_num_ctx(23 * GIB - 1) == 4096
    assert default_num_ctx(23 * GIB) == 32768
    assert default_num_ctx(47 * GIB) == 262144


@pytest.mark.parametrize(
    ("ctx", "batch"), [(1, 512), (4096, 512), (4097, 1024), (32768, 1024), (32769, 2048)]
)
def test_the_generation_batch_follows_the_total_context(ctx: int, batch: int) -> None:
    assert generation_batch(ctx) == batch


def test_a_bare_ollama_on_a_cpu() -> None:
    """No settings, no GPU: 4096 tokens, one sequence, -b/-ub 512, FA auto, mmap off."""
    launch = ollama_launch(_spec(), OllamaSettings())
    assert launch.server_args() == [
        *("-c", "4096", "-np", "1", "--load-mode", "none", "--flash-attn", "auto"),
        *("-b", "512", "-ub", "512"),
    ]
    assert launch.env() == {"OLLAMA_NUM_PARALLEL": "1"}
    assert launch.options() == {"num_ctx": 4096}


def test_settings_map_to_llama_server_flags() -> None:
    s = OllamaSettings(
        num_ctx=8192,
        num_parallel=2,
        kv_cache_type="Q8_0",
        flash_attention=True,
        use_mmap=True,
    )
    launch = ollama_launch(_spec(), s)
    args = launch.server_args()
    assert args[:4] == ["-c", "16384", "-np", "2"]
    assert "--load-mode" not in args
    assert args[args.index("--cache-type-k") + 1] == "q8_0"
    assert args[args.index("--cache-type-v") + 1] == "q8_0"
    assert args[args.index("--flash-attn") + 1] == "on"
    assert args[args.index("-b") + 1] == "1024", "16,384 tokens in all: the medium batch"
    assert launch.env() == {
        "OLLAMA_NUM_PARALLEL": "2",
        "OLLAMA_KV_CACHE_TYPE": "q8_0",
        "OLLAMA_FLASH_ATTENTION": "1",
    }
    assert launch.options() == {"num_ctx": 8192, "use_mmap": True}


def test_num_ctx_is_lowered_to_the_trained_context() -> None:
    spec = replace(_spec(), n_ctx_train=2048)
    launch = ollama_launch(spec, OllamaSettings(num_ctx=8192, num_parallel=3))
    assert launch.n_ctx == 3 * 2048
    assert launch.num_batch == 1024, "6,144 tokens in all"
    assert any("trained context" in n for n in launch.notes)


def test_some_architectures_run_one_sequence() -> None:
    spec = replace(_spec(), architecture="qwen3next")
    launch = ollama_launch(spec, OllamaSettings(num_parallel=4))
    assert launch.num_parallel == 1
    assert launch.n_ctx == 4096
    assert launch.env()["OLLAMA_NUM_PARALLEL"] == "4", "what the user set, shown as set"


def _plan(*args: str) -> tuple[int, dict[str, Any] | str]:
    code, out = _cli("plan", *args, "--engine", "ollama", "--json")
    if code == 2:
        return code, out
    return code, json.loads(out[: out.rindex("}") + 1])


def test_the_plan_prints_ollamas_settings_and_its_command() -> None:
    code, data = _plan("qwen3-8b", "--memory", "64GiB", "--ctx", "8192", "-np", "2", "-b", "256")
    assert code == 0
    assert isinstance(data, dict)
    o = data["commands"]["ollama"]
    assert o["env"] == {"OLLAMA_NUM_PARALLEL": "2"}
    assert o["options"] == {"num_ctx": 8192, "num_batch": 256}
    assert o["llama_server"][3:] == [
        *("-c", "16384", "-np", "2", "--load-mode", "none", "--flash-attn", "auto"),
        *("-b", "256", "-ub", "256"),
    ]
    assert data["settings"]["n_ctx"] == 16384
    assert data["settings"]["n_parallel"] == 2
    assert data["settings"]["kv_unified"] is False
    code, text = _cli("plan", "qwen3-8b", "--memory", "64GiB", "--engine", "ollama")
    assert "OLLAMA_NUM_PARALLEL=1 ollama serve" in text
    assert "then starts: llama-server" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "24GiB", "--gpu", "24GiB"], "several devices"),
        (["--apple", "m3-16gb"], "--apple"),
        (["--gpu", "24GiB", "--rpc-node", "8GiB"], "--rpc-node"),
        (["--kv-unified"], "--kv-unified"),
        (["-ctk", "q8_0", "-ctv", "f16"], "OLLAMA_KV_CACHE_TYPE"),
        (["-b", "512", "-ub", "256"], "--ubatch"),
        (["-lm", "mlock"], "use_mmap"),
        (["--quant", "Q4_K_M"], "--quant"),
    ],
)
def test_what_ollama_cannot_set_is_refused(args: list[str], message: str) -> None:
    code, out = _plan("qwen3-8b", "--memory", "64GiB", *args)
    assert code == 2, out
    assert message in str(out)
    assert "Traceback" not in str(out)


def test_ollama_leaves_the_prompt_cache_at_llama_servers_default() -> None:
    """Ollama does not pass --cache-ram: 8192 MiB, with a warning where the budget leaves less."""
    code, data = _plan("qwen3-0.6b", "--memory", "4GiB")
    assert code == 0
    assert isinstance(data, dict)
    assert data["budget"]["prompt_cache_bytes"] == 8192 * 2**20
    assert "--cache-ram" not in data["commands"]["llama.cpp"]
    assert any("prompt cache" in w and "Ollama does not set it" in w for w in data["warnings"])


def test_a_plan_that_does_not_fit_says_no_ollama_suggestions_are_made() -> None:
    code, out = _cli("plan", "qwen3-8b", "--engine", "ollama", "--memory", "4GiB")
    assert code == 1
    assert "no suggestions in Ollama's settings yet" in out
    assert "no single change makes it fit" not in out


@pytest.mark.parametrize(
    ("ctx", "predicted", "available", "fa", "cuda", "batch"),
    [
        # server/sched_test.go, TestAutomaticGenerationBatch (fb3076099), case by case
        (4096, 0, 0, "auto", None, 512),
        (32768, 0, 0, "auto", None, 1024),
        (131072, 8 * GIB, 14 * GIB, "auto", None, 2048),
        (131072, 9 * GIB, 14 * GIB, "auto", None, 1024),
        (131072, 8 * GIB, 11 * GIB, "auto", None, 1024),
        (32768, 8500 * MIB, 11 * GIB, "auto", None, 512),
        (131072, 8 * GIB, 14 * GIB, "off", 14 * GIB, 512),
        (131072, 3 * GIB, 6 * GIB, "off", 6 * GIB, 256),
    ],
)
def test_the_batch_ollama_chooses_with_a_gpu(
    ctx: int, predicted: int, available: int, fa: str, cuda: int | None, batch: int
) -> None:
    assert automatic_generation_batch(ctx, predicted, available, fa, cuda) == batch


def test_mmap_is_turned_off_under_host_pressure_only_while_the_gpu_holds_the_model() -> None:
    """server/sched.go, disableMmapForHostPressure with nothing else loaded: the host's free
    memory against the file plus max(8 GB, a tenth of RAM), only while the prediction fits 80%
    of the GPU."""
    assert host_pressure(20 * GB, 30 * GB, 80 * GB, 27 * GB, 32 * GB)
    assert not host_pressure(20 * GB, 30 * GB, 80 * GB, 28 * GB, 32 * GB)
    assert host_pressure(20 * GB, 30 * GB, 80 * GB, 29 * GB, 100 * GB)  # headroom 10 GB
    assert not host_pressure(20 * GB, 70 * GB, 80 * GB, 1 * GB, 32 * GB)  # VRAM is tight
    assert not host_pressure(20 * GB, 30 * GB, 0, 1 * GB, 32 * GB)  # no GPU


def test_ollamas_vram_prediction_reads_the_header_as_its_getters_do() -> None:
    """llm/llama_server.go, PredictServerVRAM: the file plus 2 x blocks x the least KV heads
    (0 read as 1) x embedding/most heads x context x 2 bytes."""
    f = OllamaFile(
        size=1000, block_count=4, head_count_max=8, head_count_kv_min=2, embedding_length=512
    )
    assert f.predicted_vram(100) == 1000 + 2 * 4 * 2 * 64 * 100 * 2
    assert replace(f, head_count_kv_min=0).predicted_vram(100) == 1000 + 2 * 4 * 1 * 64 * 200


def test_with_a_gpu_the_context_defaults_by_its_memory_and_mmap_stays_on() -> None:
    spec = _spec()
    f = OllamaFile(5 * GIB, spec.n_layer, 32, 8, spec.n_embd)  # Q4: 5 GiB + 4.5 GiB of cache
    machine = OllamaMachine(total_vram=24 * GIB, gpu_free=24 * GIB, host_free=64 * GIB)
    launch = ollama_launch(spec, OllamaSettings(), machine, f)
    assert (launch.num_ctx, launch.num_batch, launch.use_mmap) == (32768, 1024, True)
    assert "-ngl" not in launch.server_args()
    pinned = ollama_launch(spec, OllamaSettings(num_gpu=0), machine, f)
    assert pinned.use_mmap is False  # num_gpu 0: disableMmapDefaultReason "cpu"
    assert pinned.server_args()[-2:] == ["-ngl", "0"]


def _buffers(data: dict[str, Any]) -> list[tuple[str, str, int]]:
    return sorted(
        (d["device"], b["kind"], b["bytes"]) for d in data["devices"] for b in d["buffers"]
    )


@pytest.mark.parametrize("gpu", ["4GiB", "1280MiB", "800MiB"])
def test_with_one_gpu_fit_places_the_layers_and_the_plan_is_that_command(
    gemma_gguf: Path, gpu: str
) -> None:
    """Ollama passes -c but no -ngl: llama-server's --fit places the layers at that context
    (its steps at a fixed context are checked against fit's own trace from the H200 in
    tests/test_cuda_logs.py). The plan is the llama-server plan of that placement, pinned."""
    code, data = _plan(str(gemma_gguf), "--memory", "16GiB", "--gpu", gpu)
    assert code == 0, data
    assert isinstance(data, dict)
    fit = data["fit"]
    o = data["commands"]["ollama"]
    assert "-ngl" not in o["llama_server"]
    assert o["options"] == {"num_ctx": 4096}
    ngl = fit["n_gpu_layers"]
    ngl = 19 if ngl is None else ngl
    pinned = ["-c", "4096", "-np", "1", "-b", "512", "-ub", "512", "-fa", "auto", "-ngl", str(ngl)]
    code, same = _cli(
        "plan", str(gemma_gguf), "--engine", "llama-server", "--memory", "16GiB", "--gpu", gpu,
        *pinned, "--json",
    )  # fmt: skip
    assert code == 0
    assert _buffers(json.loads(same[: same.rindex("}") + 1])) == _buffers(data)
    (cuda,) = (d for d in data["devices"] if d["device"] == "CUDA0")
    if ngl:  # fit keeps 1024 MiB free where it keeps any layer
        assert cuda["total_bytes"] <= cuda["budget_bytes"] - 1024 * MIB


def test_the_gguf_header_gives_ollamas_prediction_exactly(gemma_gguf: Path) -> None:
    from membudget.request import _ollama_file

    f = _ollama_file(str(gemma_gguf))
    assert (f.block_count, f.head_count_max, f.head_count_kv_min, f.embedding_length) == (
        18, 4, 1, 640,
    )  # fmt: skip
    assert f.size == gemma_gguf.stat().st_size


def test_low_host_memory_turns_mmap_off_in_the_command(gemma_gguf: Path) -> None:
    _code, data = _plan(str(gemma_gguf), "--memory", "6GiB", "--gpu", "4GiB")
    assert isinstance(data, dict)
    assert "--load-mode" in data["commands"]["ollama"]["llama_server"]
    assert any("disableMmapForHostPressure" in w for w in data["warnings"])
    _code, data = _plan(str(gemma_gguf), "--memory", "16GiB", "--gpu", "4GiB")
    assert isinstance(data, dict)
    assert "--load-mode" not in data["commands"]["ollama"]["llama_server"]


def test_num_gpu_is_passed_as_ngl() -> None:
    code, out = _cli(
        "plan", "qwen3-8b", "--engine", "ollama", "--memory", "64GiB", "--gpu", "8GiB",
        "-ngl", "10",
    )  # fmt: skip
    assert code == 0
    assert "num_gpu 10" in out
    assert out.rstrip().count("-ngl 10") >= 1
    assert "pinned by Ollama's num_gpu option" in out
