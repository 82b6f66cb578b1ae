"""The ollama engine: Ollama's defaults and settings (fb3076099) turned into the llama-server
command it starts. The command itself runs in tests/test_llama_server.py."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import replace
from typing import Any

import pytest

from membudget.cli import main
from membudget.engines.ollama import (
    OllamaSettings,
    default_num_ctx,
    generation_batch,
    ollama_launch,
)
from membudget.loader import load_model
from membudget.model import ModelSpec

GIB = 1 << 30


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
        (["--gpu", "24GiB"], "without GPUs"),
        (["-ngl", "10"], "--n-gpu-layers"),
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
