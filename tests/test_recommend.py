"""Recommendations: each with a value, the flags, and a reason."""

from __future__ import annotations

import json

import pytest

from membudget import load_model
from membudget.cli import main
from membudget.engines.llamacpp import LlamaCppRules, LlamaCppSettings
from membudget.hardware import detect
from membudget.plan import Budget
from membudget.presets import apply_preset
from membudget.recommend import recommend
from membudget.units import GIB

R = LlamaCppRules(repack_types=frozenset())


def _by_setting(spec_name: str, ram: int, ctx: int) -> dict[str, object]:
    spec = apply_preset(load_model(spec_name), "Q4_K_M")
    recs = recommend(spec, LlamaCppSettings(n_ctx=ctx), Budget(ram, ram, 0, "t"), detect(), R)
    assert all(r.reason for r in recs)
    return {r.setting: r for r in recs}


def test_q8_0_cache_when_f16_does_not_reach_the_context() -> None:
    recs = _by_setting("qwen3-8b", 8 * GIB, 40960)
    assert recs["KV cache type"].value == "q8_0"  # type: ignore[attr-defined]


def test_f16_cache_when_it_fits() -> None:
    recs = _by_setting("qwen3-0.6b", 16 * GIB, 4096)
    assert recs["KV cache type"].value == "f16"  # type: ignore[attr-defined]
    assert recs["flash attention"].value == "on"  # type: ignore[attr-defined]
    assert int(recs["threads"].value) >= 1  # type: ignore[attr-defined]


def test_recommend_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["recommend", "qwen3-4b", "--memory", "8GiB", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["schema"] == "membudget/recommend/1"
    settings = {r["setting"] for r in data["recommendations"]}
    assert {
        "KV cache type",
        "flash attention",
        "prefix caching",
        "batch size",
        "threads",
    } <= settings
