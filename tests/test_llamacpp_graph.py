"""llama.cpp's compute buffer from the rebuilt graph (membudget.engines.llamacpp.graph).

The golden figures are llama.cpp's own ("CPU compute buffer size is X MiB", four decimals, from
llama-cpp-python 0.3.36 = llama.cpp 0c1e570) for the small models of tests/arch_models.py; they
let these tests pin the simulation without llama.cpp installed. tests/test_llamacpp_accuracy.py
checks every architecture and setting against a live llama.cpp.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from membudget import load_model
from membudget.cli import app
from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp.graph import (
    GraphSettings,
    graph_compute_bytes,
    simulated_architectures,
)
from membudget.model import ModelSpec
from membudget.readers.catalog import catalog, catalog_spec
from tests.accuracy import GRID
from tests.arch_models import ARCHS, SMALL_VOCAB
from tests.ggufs import Tiny, write_model

MIB = 1 << 20

# (architecture, GRID index, llama.cpp's compute buffer in MiB to four decimals)
GOLDEN = [
    ("llama", 0, 19.5137),  # flash attention, the logits block above the freed inputs
    ("qwen3", 3, 17.5020),  # q8_0 cache: Hadamard rotations of Q, K, V
    ("gemma2", 1, 35.0137),  # no flash attention: scores with soft-capping
    ("gemma3", 4, 18.7653),  # SWA and full caches, 3 streams, 513 tokens
    ("qwen3moe", 4, 17.0030),  # experts on the 512 output rows of the last layer
    ("deepseek2", 2, 12.3237),  # MLA without flash attention
    ("mamba2", 2, 4.3760),
    ("granitehybrid", 5, 53.6144),
    ("phi3", 7, 9.9621),  # fused QKV and up projections
    ("gpt-oss", 0, 17.5020),  # the hidden state before the output rows is a graph output
    ("gpt-oss", 5, 55.6222),
    ("mamba", 4, 17.5059),
    ("qwen2", 2, 10.7524),
    # 512-token vocabularies: the layers' own working set dominates
    ("rwkv6-v512", 0, 7.6289),
    ("jamba-v512", 4, 9.3152),
    ("deepseek2-v512", 0, 6.2949),
    ("qwen3moe-v512", 7, 1.9619),
    ("gpt-oss-v512", 3, 5.3652),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    root = tmp_path_factory.mktemp("archs")
    makers = {**ARCHS, **SMALL_VOCAB}
    return {name: load_model(make(root / f"{name}.gguf")) for name, make in makers.items()}


@pytest.mark.parametrize(("arch", "grid", "mib"), GOLDEN, ids=[f"{a}-{i}" for a, i, _ in GOLDEN])
def test_equals_llama_cpp_report(
    arch: str, grid: int, mib: float, models: dict[str, ModelSpec]
) -> None:
    est = estimate_llamacpp(models[arch], GRID[grid])
    assert est.compute_method == "simulated"
    assert est.compute_bytes / MIB == pytest.approx(mib, abs=0.00005)


def test_every_test_architecture_is_simulated(models: dict[str, ModelSpec]) -> None:
    assert {spec.architecture for spec in models.values()} <= set(simulated_architectures())


@pytest.mark.parametrize("name", list(catalog()))
def test_catalogue_models_are_simulated(name: str) -> None:
    """Every catalogue model's compute buffer comes from its rebuilt graph."""
    assert estimate_llamacpp(catalog_spec(name)).compute_method == "simulated"


def test_unknown_architecture_falls_back_to_the_phase_model() -> None:
    spec = replace(catalog_spec("llama-3.2-1b"), architecture="no-such-arch")
    assert graph_compute_bytes(spec, _settings()) is None
    est = estimate_llamacpp(spec, LlamaCppSettings(n_ctx=8192))
    assert est.compute_method == "phase model"
    assert est.compute_bytes > 0


def test_recurrent_layers_without_geometry_fall_back(models: dict[str, ModelSpec]) -> None:
    """A file whose recurrent layers the reader found but could not size gets the phase model,
    never an exception."""
    spec = replace(models["qwen35"], recurrent=None)
    assert graph_compute_bytes(spec, _settings()) is None


@settings(max_examples=60, deadline=None)
@given(
    arch=st.sampled_from(["mamba", "mamba2", "jamba", "lfm2", "rwkv6", "qwen3next", "qwen35moe"]),
    geometry=st.tuples(*[st.integers(0, 5)] * 6),
    tokens=st.integers(1, 64),
    seqs=st.integers(1, 4),
)
def test_odd_geometry_never_raises(
    arch: str,
    geometry: tuple[int, int, int, int, int, int],
    tokens: int,
    seqs: int,
    models: dict[str, ModelSpec],
) -> None:
    """Whatever recurrent geometry a file claims, the simulation gives a size or declines
    (the phase model then answers); it never raises."""
    spec = models[arch]
    assert spec.recurrent is not None
    d_conv, d_inner, d_state, n_group, n_head, head_dim = geometry
    odd = replace(
        spec.recurrent,
        d_conv=d_conv,
        d_inner=d_inner * 16,
        d_state=d_state * 8,
        n_group=n_group,
        n_head=n_head,
        head_dim=head_dim * 16,
    )
    n = tokens * seqs
    got = graph_compute_bytes(
        replace(spec, recurrent=odd), _settings(n_tokens=n, n_outputs=n, n_seqs=seqs)
    )
    assert got is None or got > 0


def test_the_rules_switch_the_simulation_off(models: dict[str, ModelSpec]) -> None:
    spec = models["llama"]
    on = estimate_llamacpp(spec, GRID[0])
    off = estimate_llamacpp(spec, GRID[0], LlamaCppRules(simulate_graph=False))
    assert (on.compute_method, off.compute_method) == ("simulated", "phase model")
    assert off.compute_bytes < on.compute_bytes  # the phase model misses the placement


def test_attention_rotation_is_switchable(models: dict[str, ModelSpec]) -> None:
    """LLAMA_ATTN_ROT_DISABLE=1 (or a build before the rotation) drops the Hadamard tensors."""
    spec, s = models["qwen3"], GRID[3]
    with_rot = estimate_llamacpp(spec, s).compute_bytes
    without = estimate_llamacpp(spec, s, LlamaCppRules(attn_rotation=False)).compute_bytes
    assert without < with_rot


def _settings(**kw: object) -> GraphSettings:
    base: dict[str, object] = {
        "n_tokens": 512,
        "n_outputs": 512,
        "n_seqs": 1,
        "n_kv": 4096,
        "n_swa_kv": 1024,
        "n_stream": 1,
        "flash_attn": True,
    }
    return GraphSettings(**{**base, **kw})  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(
        ["llama-3.2-1b", "qwen3-0.6b", "gemma-3-270m", "qwen3-30b-a3b", "gpt-oss-20b"]
    ),
    tokens=st.integers(1, 1024),
    cells=st.integers(1, 64).map(lambda n: n * 256),
    flash=st.booleans(),
)
def test_buffer_holds_the_logits_and_the_scores(
    name: str, tokens: int, cells: int, flash: bool
) -> None:
    """The buffer is at least the logits block (an output, never freed), and without flash
    attention at least one layer's f32 score matrix as well."""
    spec = catalog_spec(name)
    got = graph_compute_bytes(
        spec,
        _settings(n_tokens=tokens, n_outputs=tokens, n_kv=cells, n_swa_kv=cells, flash_attn=flash),
    )
    assert got is not None
    logits = spec.n_vocab * tokens * 4
    assert got >= logits
    if not flash:
        n_head = max(layer.n_head for layer in spec.layers)
        assert got >= cells * tokens * n_head * 4


def test_plan_json_and_explain_name_the_method(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["plan", "bonsai-8b", "--memory", "16GiB", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["engine_rules"]["compute_method"] == "simulated"
    other = write_model(tmp_path / "cohere2.gguf", Tiny(arch="cohere2", n_layer=2))
    result = runner.invoke(app, ["plan", str(other), "--memory", "8GiB", "--json"])
    assert json.loads(result.stdout)["engine_rules"]["compute_method"] == "phase model"
    result = runner.invoke(app, ["plan", "bonsai-8b", "--memory", "16GiB", "--explain"])
    assert "ggml-alloc replayed" in " ".join(result.stdout.split())
