"""llama.cpp presets: per-tensor types as llama-quantize chooses them."""

from __future__ import annotations

from pathlib import Path

import pytest

from membudget import InvalidArgumentError, load_model
from membudget.presets import PRESETS, _use_more_bits, apply_preset


def test_rules_reproduce_a_real_q4_k_m_file(gemma_gguf: Path) -> None:
    real = load_model(gemma_gguf)
    redone = apply_preset(real, "Q4_K_M")
    assert [t.type_name for t in redone.tensors] == [t.type_name for t in real.tensors]
    assert redone.weights.total == real.weights.total


def test_catalogue_model_at_q4_k_m_weighs_what_the_real_file_does(gemma_gguf: Path) -> None:
    assert (
        apply_preset(load_model("gemma-3-270m"), "Q4_K_M").weights.total
        == load_model(gemma_gguf).weights.total
    )


def test_use_more_bits_layers() -> None:
    assert [i for i in range(18) if _use_more_bits(i, 18)] == [0, 1, 4, 7, 10, 13, 15, 16, 17]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_applies(preset: str) -> None:
    spec = apply_preset(load_model("llama-3.2-1b"), preset)
    assert spec.quant.file_type == preset
    assert spec.weights.total > 0


def test_presets_order_by_size() -> None:
    spec = load_model("llama-3.1-8b")
    sizes = [
        apply_preset(spec, p).weights.total
        for p in ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q6_K", "Q8_0", "F16")
    ]
    assert sizes == sorted(sizes)


def test_unknown_preset() -> None:
    with pytest.raises(InvalidArgumentError, match="Q4_K_M"):
        apply_preset(load_model("llama-3.2-1b"), "Q4_K_X")
