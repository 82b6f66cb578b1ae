"""The registry's base: :class:`ArchRule` (a plain attention block) and what readers hand it.

Readers turn their file's fields into a neutral :class:`Hyper`; the rules registered here fill
in what the file leaves implicit (which layers slide, which are recurrent) and produce the
per-layer :class:`~membudget.model.LayerSpec` tuple. A rule registers itself by subclassing
:class:`ArchRule` with ``arch=`` and ``model_types=`` (gguf-py registers its quant classes the
same way). Readers reach a file's fields through the small :class:`ConfigFields` and
:class:`GGUFFields` protocols, so a rule reads what it needs without knowing the reader.

Facts are llama.cpp's, from ``src/llama-model.cpp`` (``load_hparams``), and Hugging Face
transformers' configuration classes for config.json models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from membudget._gguf import Keys
from membudget.model import LayerSpec, RecurrentKind, RecurrentSpec

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

Tensors = list[tuple[str, tuple[int, ...]]]
"""Tensor names in GGUF naming with shapes in ggml order (row length first)."""


class ConfigFields(Protocol):
    """A config.json's fields, read leniently: aliases tried in order, problems collected."""

    cfg: Mapping[str, Any]

    def int(self, *names: str, default: int | None = None, minimum: int = 0) -> int: ...

    def list(self, name: str) -> list[Any] | None: ...


class GGUFFields(Protocol):
    """A GGUF header's ``{arch}.*`` keys, by gguf-py's templates."""

    def get_int(self, template: str, default: int | None = None) -> int: ...


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
    swa_chunked: bool = False
    """The local layers attend within chunks of ``n_swa`` tokens, not a sliding window."""


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

    # What a config.json leaves out, and what the block adds to a plain transformer block
    # (transformers' modeling classes of each family).
    tied_default: ClassVar[bool] = False
    """``tie_word_embeddings`` when the config does not say."""
    attention_bias_default: ClassVar[bool] = False
    """``attention_bias`` when the config does not say (biases on Q, K and V)."""
    attention_output_bias: ClassVar[bool] = False
    """With attention biases, the output projection has one too."""
    qk_norm: ClassVar[bool] = False
    """Per-head RMS norms on Q and K."""
    sandwich_norm: ClassVar[bool] = False
    """Norms after attention and after the FFN as well as before (Gemma 2 and 3)."""
    post_norms_only: ClassVar[bool] = False
    """Norms after attention and after the FFN instead of before (OLMo 2)."""
    qk_norm_full: ClassVar[bool] = False
    """With :attr:`qk_norm`, Q and K are normed across all their heads at once, with weights
    as wide as the projections (OLMo 2), not per head."""
    gated_query: ClassVar[bool] = False
    """Q projects twice the heads: a sigmoid output gate per head (Qwen3-Next, Qwen3.5)."""
    attention_sinks: ClassVar[bool] = False
    """One learned sink logit per head."""
    expert_bias: ClassVar[bool] = False
    """Biases on the router and on every expert's projections."""
    shared_expert_gate: ClassVar[bool] = False
    """A sigmoid gate (one row) on the shared expert's output."""
    chunked_local: ClassVar[bool] = False
    """The local layers attend within chunks (Llama 4), not a sliding window."""
    ffn_fields: ClassVar[tuple[str, ...]] = ("intermediate_size", "ffn_dim", "n_inner")
    """The config fields of a dense layer's FFN width, first found wins."""
    expert_ffn_fields: ClassVar[tuple[str, ...]] = (
        "moe_intermediate_size",
        "expert_intermediate_size",
    )
    """The config fields of one expert's FFN width (the dense width when absent)."""
    default_shared_experts: ClassVar[int] = 0
    """Shared experts when the config names none."""
    moe_last_in_step: ClassVar[bool] = False
    """With an expert-layer step N, the MoE layer closes each run of N (layers N-1, 2N-1...)
    instead of opening it."""

    model_types: ClassVar[dict[str, str]] = {}
    """Every Hugging Face ``model_type`` registered, to the architecture name it maps to."""

    def __init_subclass__(
        cls,
        arch: str | tuple[str, ...] = (),
        model_types: tuple[str, ...] = (),
        **kwargs: object,
    ) -> None:
        super().__init_subclass__(**kwargs)
        names = (arch,) if isinstance(arch, str) else arch
        for name in names:
            ArchRule.registry[name] = cls
        for model_type in model_types:
            ArchRule.model_types[model_type] = names[0]

    # --- config.json ---------------------------------------------------------------------------

    @classmethod
    def config_recurrent_flags(cls, f: ConfigFields, n_layer: int) -> tuple[bool, ...] | None:
        """Which layers are recurrent when the config has no ``layer_types`` list."""
        if cls.all_recurrent:
            return (True,) * n_layer
        if cls.default_full_attention_interval:
            interval = f.int(
                "full_attention_interval", default=cls.default_full_attention_interval, minimum=1
            )
            return tuple((il + 1) % interval != 0 for il in range(n_layer))
        return None

    @classmethod
    def config_local_attention(
        cls, f: ConfigFields, n_layer: int
    ) -> tuple[int, tuple[bool, ...]] | None:
        """(window or chunk, which layers use it) where the family states local attention in
        its own fields; None: the generic ``sliding_window`` fields."""
        return None

    @classmethod
    def config_qk_norm(cls, f: ConfigFields) -> bool:
        """Per-head RMS norms on Q and K (:attr:`qk_norm` unless the family's config says)."""
        return cls.qk_norm

    @classmethod
    def config_ffn(cls, f: ConfigFields) -> int:
        """A dense layer's FFN width: the first of :attr:`ffn_fields` the config has (0: none)."""
        return f.int(*cls.ffn_fields, default=0)

    @classmethod
    def config_recurrent(cls, f: ConfigFields, n_embd: int) -> RecurrentSpec | None:
        """The recurrent state's shape from the config's fields (None: no recurrent layers)."""
        return None

    @classmethod
    def config_recurrent_norm(cls, f: ConfigFields) -> bool:
        """The recurrent mixer stores its gated norm (``ssm_norm``), where it has one."""
        return True

    @classmethod
    def config_score_bias(cls, f: ConfigFields) -> bool:
        """The router keeps a per-expert score correction bias."""
        return False

    # --- GGUF ----------------------------------------------------------------------------------

    @classmethod
    def gguf_sliding_window(cls, found: int | None) -> int:
        """``n_swa`` from the ``{arch}.attention.sliding_window`` key (None: absent)."""
        return found or 0

    @classmethod
    def gguf_recurrent(cls, m: GGUFFields, n_embd: int) -> RecurrentSpec | None:
        """The recurrent state's shape from llama.cpp's ``{arch}.ssm.*`` keys
        (llama-model.cpp ``load_hparams``: ``ssm_d_inner``, ``ssm_dt_rank``...)."""
        if cls.recurrent is None:
            return None
        d_inner = m.get_int(Keys.SSM.INNER_SIZE, 0)
        n_head = m.get_int(Keys.SSM.TIME_STEP_RANK, 0)
        return RecurrentSpec(
            cls.recurrent,
            d_conv=m.get_int(Keys.SSM.CONV_KERNEL, 0),
            d_inner=d_inner,
            d_state=m.get_int(Keys.SSM.STATE_SIZE, 0),
            n_group=m.get_int(Keys.SSM.GROUP_COUNT, 0),
            n_head=n_head,
            head_dim=d_inner // n_head if n_head else 0,
        )

    @classmethod
    def gguf_recurrent_keys(cls) -> str:
        """Which keys :meth:`gguf_recurrent` read, for explanations."""
        return "{arch}.ssm.*"

    # --- tensors -------------------------------------------------------------------------------

    @classmethod
    def recurrent_tensors(
        cls, r: RecurrentSpec, n_embd: int, prefix: str, conv_bias: bool
    ) -> Tensors:
        """The tensors of one recurrent layer (none for attention-only architectures)."""
        return []

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
    """The rule registered for ``arch``, or the plain attention block."""
    return ArchRule.registry.get(arch, ArchRule)


def arch_for_model_type(model_type: str) -> str:
    """llama.cpp's architecture name for a Hugging Face ``model_type`` (itself when unknown,
    ``llama`` when empty)."""
    return ArchRule.model_types.get(model_type, model_type or "llama")


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
                chunked=h.swa_chunked and swa[il] and bool(kv),
            )
        )
    return tuple(layers)
