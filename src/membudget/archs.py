"""Per-architecture knowledge, in one registry keyed by architecture name.

Readers turn their file's fields into a neutral :class:`Hyper`; the rules registered here fill
in what the file leaves implicit (which layers slide, which are recurrent) and produce the
per-layer :class:`~membudget.model.LayerSpec` tuple. A rule registers itself by subclassing
:class:`ArchRule` with ``arch=`` (gguf-py registers its quant classes the same way).

Facts are llama.cpp's, from ``src/llama-model.cpp`` (``load_hparams``), and Hugging Face
transformers' configuration classes for config.json models.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from membudget.model import LayerSpec, RecurrentKind

__all__ = ["ArchRule", "Hyper", "build_layers", "rule_for"]


@dataclass(frozen=True, slots=True)
class Hyper:
    """Attention and recurrence facts as a file states them, before architecture rules."""

    arch: str
    n_layer: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_dim_k: int
    head_dim_v: int
    n_swa: int = 0
    swa_pattern: tuple[bool, ...] | int | None = None
    """Per-layer SWA flags, or a period as llama.cpp's ``set_swa_pattern`` takes it."""
    recurrent_layers: tuple[bool, ...] | None = None
    full_attention_interval: int = 0
    moe_layers: tuple[bool, ...] | None = None
    kv_shared_from: int = 0
    """Layers from this index on reuse an earlier layer's cache (0: none)."""


def swa_pattern_flags(n_layer: int, period: int, dense_first: bool = False) -> tuple[bool, ...]:
    """llama.cpp's ``set_swa_pattern(period)``: layer ``il`` slides when ``period == 0`` or
    ``il % period < period - 1``; with ``dense_first`` the full layer opens each period."""
    if period == 0:
        return (True,) * n_layer
    if dense_first:
        return tuple(il % period != 0 for il in range(n_layer))
    return tuple(il % period < period - 1 for il in range(n_layer))


class ArchRule:
    """Default rule: every layer is plain attention, SWA only where the file says so."""

    registry: ClassVar[dict[str, type[ArchRule]]] = {}
    swa_period: ClassVar[int | None] = None
    """The period llama.cpp assumes when the file has a window but no pattern key."""
    dense_first: ClassVar[bool] = False
    recurrent: ClassVar[RecurrentKind | None] = None
    all_recurrent: ClassVar[bool] = False
    """Every layer is recurrent (Mamba, RWKV)."""
    parallel_hybrid: ClassVar[bool] = False
    """Every layer has both attention and recurrent state (Falcon-H1)."""
    kv_zero_means_recurrent: ClassVar[bool] = False
    """A layer whose KV-head count is 0 is recurrent (Jamba, Granite 4 hybrid, LFM2)."""
    default_full_attention_interval: ClassVar[int] = 0
    """Qwen3-Next style: layer il is full attention iff (il + 1) % interval == 0."""

    def __init_subclass__(cls, arch: str | tuple[str, ...] = (), **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name in (arch,) if isinstance(arch, str) else arch:
            ArchRule.registry[name] = cls

    @classmethod
    def swa_flags(cls, h: Hyper) -> tuple[bool, ...]:
        if h.n_swa <= 0:
            return (False,) * h.n_layer
        if isinstance(h.swa_pattern, tuple):
            flags = h.swa_pattern[: h.n_layer]
            return flags + (False,) * (h.n_layer - len(flags))
        period = h.swa_pattern if isinstance(h.swa_pattern, int) else cls.swa_period
        if period is None:
            return (False,) * h.n_layer
        return swa_pattern_flags(h.n_layer, period, cls.dense_first)

    @classmethod
    def recurrent_flags(cls, h: Hyper) -> tuple[bool, ...]:
        if h.recurrent_layers is not None:
            return h.recurrent_layers
        if cls.all_recurrent or cls.parallel_hybrid:
            return (True,) * h.n_layer
        interval = h.full_attention_interval or cls.default_full_attention_interval
        if interval:
            return tuple((il + 1) % interval != 0 for il in range(h.n_layer))
        if cls.kv_zero_means_recurrent:
            return tuple(kv == 0 for kv in h.n_head_kv)
        return (False,) * h.n_layer


def rule_for(arch: str) -> type[ArchRule]:
    return ArchRule.registry.get(arch, ArchRule)


def build_layers(h: Hyper) -> tuple[LayerSpec, ...]:
    """Per-layer geometry for ``h`` under its architecture's rule."""
    rule = rule_for(h.arch)
    swa = rule.swa_flags(h)
    rec = rule.recurrent_flags(h)
    moe = h.moe_layers or (False,) * h.n_layer
    layers = []
    for il in range(h.n_layer):
        recurrent = rec[il]
        kv = h.n_head_kv[il]
        if recurrent and not rule.parallel_hybrid:
            kv = 0  # a recurrent layer of a hybrid keeps state, not a KV cache
        layers.append(
            LayerSpec(
                n_head=h.n_head[il],
                n_head_kv=kv,
                head_dim_k=h.head_dim_k,
                head_dim_v=h.head_dim_v,
                sliding_window=h.n_swa if swa[il] and kv else 0,
                recurrent=recurrent,
                kv_shared=bool(h.kv_shared_from) and il >= h.kv_shared_from,
                moe=moe[il],
            )
        )
    return tuple(layers)


# --- sliding-window families (llama-model.cpp: set_swa_pattern) ------------------------------


class Gemma2(ArchRule, arch="gemma2"):
    swa_period = 2


class Gemma3(ArchRule, arch=("gemma3", "gemma-embedding")):
    swa_period = 6


class Cohere2(ArchRule, arch="cohere2"):
    swa_period = 4


class GptOss(ArchRule, arch="gpt-oss"):
    swa_period = 2


class Exaone4(ArchRule, arch="exaone4"):
    swa_period = 4


# --- recurrent and hybrid families ------------------------------------------------------------


class Mamba(ArchRule, arch="mamba"):
    recurrent = "mamba"
    all_recurrent = True


class Mamba2(ArchRule, arch="mamba2"):
    recurrent = "mamba2"
    all_recurrent = True


class Rwkv6(ArchRule, arch=("rwkv6", "rwkv6qwen2")):
    recurrent = "rwkv6"
    all_recurrent = True


class Rwkv7(ArchRule, arch=("rwkv7", "arwkv7")):
    recurrent = "rwkv7"
    all_recurrent = True


class Jamba(ArchRule, arch="jamba"):
    recurrent = "mamba"
    kv_zero_means_recurrent = True


class GraniteHybrid(ArchRule, arch=("granitehybrid", "nemotron_h")):
    recurrent = "mamba2"
    kv_zero_means_recurrent = True


class FalconH1(ArchRule, arch="falcon-h1"):
    recurrent = "mamba2"
    parallel_hybrid = True


class Qwen3Next(ArchRule, arch=("qwen3next", "qwen35", "qwen35moe")):
    """Qwen3-Next and Qwen3.5: gated delta net layers, full attention every 4th layer unless
    ``full_attention_interval`` says otherwise (llama.cpp ``qwen3next.cpp``, ``qwen35.cpp``)."""

    recurrent = "gated_delta_net"
    default_full_attention_interval = 4


class Lfm2(ArchRule, arch=("lfm2", "lfm2moe")):
    recurrent = "shortconv"
    kv_zero_means_recurrent = True
