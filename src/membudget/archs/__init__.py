"""Per-architecture knowledge, in one registry keyed by architecture name.

Each architecture states in one class what the readers would otherwise branch on: the
Hugging Face ``model_type`` names it answers to, its config fields and defaults, its GGUF keys,
which layers slide or keep recurrent state, the tensors it adds to a plain transformer block,
and the shape of its recurrent state. The readers stay generic: they ask :func:`rule_for`.

- :mod:`membudget.archs.base`: :class:`Hyper`, :class:`ArchRule` and the default (a plain
  attention block), :func:`build_layers`;
- :mod:`membudget.archs.attention`: attention-only families (sliding windows, MLA, MoE);
- :mod:`membudget.archs.recurrent`: Mamba, RWKV, gated delta net and short-conv families.
"""

from __future__ import annotations

from membudget.archs import attention as attention
from membudget.archs import recurrent as recurrent
from membudget.archs.base import (
    ArchRule,
    ConfigFields,
    GGUFFields,
    Hyper,
    Tensors,
    arch_for_model_type,
    build_layers,
    rule_for,
    swa_pattern_flags,
)

__all__ = [
    "ArchRule",
    "ConfigFields",
    "GGUFFields",
    "Hyper",
    "Tensors",
    "arch_for_model_type",
    "build_layers",
    "rule_for",
    "swa_pattern_flags",
]
