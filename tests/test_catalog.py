"""The built-in catalogue: coverage, cited sources, and parameter counts from geometry."""

from __future__ import annotations

import pytest

from membudget import UnknownModelError, load_model
from membudget.readers.catalog import catalog, suggest

REQUIRED = [
    "bonsai-1.7b", "bonsai-4b", "bonsai-8b", "bonsai-8b-ternary",
    "llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b", "llama-3.2-1b", "llama-3.2-3b",
    "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b",
    "qwen3-30b-a3b", "qwen3-235b-a22b", "qwen3-next-80b-a3b",
    "gemma-3-270m", "gemma-3-1b", "gemma-3-4b", "gemma-3-12b", "gemma-3-27b",
    "mistral-7b", "mistral-small-24b", "mixtral-8x7b", "deepseek-v3", "deepseek-r1",
    "gpt-oss-20b", "gpt-oss-120b", "phi-4", "granite-4.0-h-small", "mamba-2.8b",
    # issue 16: the families people ask `membudget fit` about
    "llama-3.3-70b", "llama-4-scout", "llama-4-maverick", "qwen2.5-7b", "qwen2.5-72b",
    "qwen3-coder-480b-a35b", "qwen3.5-397b-a17b", "qwen3.5-35b-a3b", "gemma-2-9b",
    "mistral-nemo-12b", "mixtral-8x22b", "magistral-small", "devstral-small",
    "deepseek-r1-distill-qwen-32b", "deepseek-r1-distill-llama-70b", "deepseek-v3.1", "kimi-k2",
    "phi-4-mini", "granite-4.0-h-tiny", "smollm2-1.7b", "lfm2-1.2b", "glm-4.5", "glm-4.5-air",
    "glm-4.6", "olmo-2-7b", "olmo-2-13b", "granite-3.3-8b", "minimax-m2",
    "falcon-h1-7b", "falcon-h1-3b",
]  # fmt: skip


def test_catalogue_covers_the_required_models() -> None:
    assert len(catalog()) >= 80
    assert set(REQUIRED) <= set(catalog())
    assert len({e.source for e in catalog().values()}) >= 75, "entries cite their own configs"


@pytest.mark.parametrize("name", list(catalog()))
def test_geometry_gives_the_cited_parameter_count(name: str) -> None:
    entry = catalog()[name]
    assert entry.source, "every entry cites its source"
    spec = load_model(name)
    assert spec.n_params == pytest.approx(entry.n_params, rel=entry.params_tolerance)
    assert spec.weights.total > 0
    assert spec.source_kind == "catalogue"


@pytest.mark.parametrize(
    ("name", "check"),
    [
        pytest.param(
            "deepseek-v3", lambda s: s.mla is not None and s.mla.kv_lora_rank == 512, id="MLA"
        ),
        pytest.param(
            "gpt-oss-20b",
            lambda s: [x.sliding_window for x in s.layers[:2]] == [128, 0],
            id="gpt-oss SWA",
        ),
        pytest.param(
            "gemma-3-27b", lambda s: sum(x.is_swa for x in s.layers) == 52, id="gemma3 5:1"
        ),
        pytest.param("mamba-2.8b", lambda s: s.n_recurrent_layers == 64, id="mamba"),
        pytest.param(
            "qwen3-next-80b-a3b", lambda s: s.n_recurrent_layers == 36, id="qwen3-next 3:1"
        ),
        pytest.param("bonsai-8b", lambda s: round(s.bits_per_weight, 2) == 1.13, id="Q1_0 weights"),
        pytest.param("llama-3.1-8b", lambda s: {x.n_head_kv for x in s.layers} == {8}, id="GQA"),
        pytest.param("lfm2-1.2b", lambda s: s.n_ff == 8192, id="LFM2 auto-adjusted FFN width"),
        pytest.param(
            "lfm2-350m", lambda s: (s.n_ff, s.n_recurrent_layers) == (4608, 10), id="LFM2 rounding"
        ),
        pytest.param(
            "kimi-k2",
            lambda s: (s.architecture, s.n_expert, s.mla is not None) == ("deepseek2", 384, True),
            id="Kimi K2 is DeepSeek-V3's architecture",
        ),
        pytest.param(
            "llama-4-maverick",
            lambda s: sum(x.moe for x in s.layers) == 24 and s.layers[1].moe,
            id="Maverick's MoE every 2nd layer",
        ),
        pytest.param("qwen3.5-35b-a3b", lambda s: s.n_recurrent_layers == 30, id="qwen3.5 3:1"),
        pytest.param(
            "gemma-2-27b", lambda s: sum(x.is_swa for x in s.layers) == 23, id="gemma2 1:1"
        ),
    ],
)
def test_architecture_facts(name: str, check: object) -> None:
    assert check(load_model(name))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("typo", "expected"),
    [
        pytest.param("lama-3.1-8b", "llama-3.1-8b", id="dropped letter"),
        pytest.param("Qwen3_8B", "qwen3-8b", id="case and underscore"),
        pytest.param("gemma3-27b", "gemma-3-27b", id="missing dash"),
    ],
)
def test_typos_get_suggestions(typo: str, expected: str) -> None:
    if typo == "Qwen3_8B":
        assert load_model(typo).name == "Qwen3 8B"  # normalised names resolve directly
        return
    assert expected in suggest(typo)
    with pytest.raises(UnknownModelError, match=expected):
        load_model(typo)
