"""``ModelSpec``: one engine-free description of a model.

Readers (GGUF, safetensors, config.json, the catalogue) each build one; the KV arithmetic and the
engine profiles read only this. Everything is frozen; per-layer facts live in ``layers``.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "LayerSpec",
    "MLASpec",
    "ModelSpec",
    "Quantization",
    "RecurrentKind",
    "RecurrentSpec",
    "SourceKind",
    "TensorSpec",
    "WeightBytes",
    "block_index",
]

SourceKind = Literal["gguf", "safetensors", "config", "catalogue"]
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.")


GGML_MAX_NAME = 64
"""ggml.h ``GGML_MAX_NAME``: the buffer a tensor's name fits in, its terminating zero included."""


def block_index(tensor_name: str) -> int | None:
    """The block a GGUF tensor belongs to (``blk.N.``), or ``None`` for model-level tensors."""
    if len(tensor_name) < GGML_MAX_NAME:
        return _block_index(tensor_name)  # a name ggml could hold: remembered
    return _block_index.__wrapped__(tensor_name)


@functools.lru_cache(maxsize=1 << 14)
def _block_index(tensor_name: str) -> int | None:
    m = _BLOCK_RE.match(tensor_name)
    return int(m[1]) if m is not None else None


RecurrentKind = Literal["mamba", "mamba2", "rwkv6", "rwkv7", "gated_delta_net", "shortconv"]


@dataclass(frozen=True, slots=True)
class LayerSpec:
    """One block's attention geometry.

    ``n_head_kv == 0`` means the layer keeps no KV cache (a recurrent layer in a hybrid, or a
    layer that reuses another's cache). ``sliding_window == 0`` means full attention; with
    ``chunked`` the window is an attention chunk (Llama 4's chunked local attention: a token
    sees the earlier tokens of its own chunk).
    """

    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    sliding_window: int = 0
    recurrent: bool = False
    kv_shared: bool = False
    moe: bool = False
    chunked: bool = False

    @property
    def has_kv(self) -> bool:
        return self.n_head_kv > 0 and not self.kv_shared

    @property
    def is_swa(self) -> bool:
        return self.sliding_window > 0


@dataclass(frozen=True, slots=True)
class MLASpec:
    """Multi-head latent attention (DeepSeek-V2/V3): the cache can hold only the compressed
    latent (``kv_lora_rank``) plus the rope part of K, per layer and token."""

    kv_lora_rank: int
    qk_rope_head_dim: int
    qk_nope_head_dim: int
    v_head_dim: int
    q_lora_rank: int = 0
    compressed_cache: bool = True
    """True when the file carries what current llama.cpp needs to cache only the latent."""


@dataclass(frozen=True, slots=True)
class RecurrentSpec:
    """Recurrent-state geometry of Mamba, RWKV, gated-delta-net or short-conv layers."""

    kind: RecurrentKind
    d_conv: int = 0
    d_inner: int = 0
    d_state: int = 0
    n_group: int = 0
    n_head: int = 0
    head_dim: int = 0


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One stored tensor: name, type, shape in ggml order (row length first), bytes."""

    name: str
    type_name: str
    shape: tuple[int, ...]
    n_bytes: int
    offset: int | None = None
    """Where the data starts in its file's data section (GGUF), or None when the tensor is not
    read from a file as it is (a catalogue entry, a requantised model)."""
    part: int = 0
    """Which part of a split GGUF holds it."""

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class WeightBytes:
    """Weight bytes by group. ``layers[i]`` is block ``i`` without its routed experts."""

    token_embd: int
    output: int
    layers: tuple[int, ...]
    experts: tuple[int, ...] = ()
    other: int = 0

    @classmethod
    def from_tensors(cls, tensors: Iterable[TensorSpec], n_layer: int) -> WeightBytes:
        """Group tensors named in GGUF's convention (``token_embd``, ``output``, ``blk.N.*``;
        routed experts carry ``_exps``)."""
        layers = [0] * n_layer
        experts = [0] * n_layer
        token_embd = output = other = 0
        for t in tensors:
            il_or_none = block_index(t.name)
            if il_or_none is not None and il_or_none < n_layer:
                il = il_or_none
                if "_exps" in t.name:
                    experts[il] += t.n_bytes
                else:
                    layers[il] += t.n_bytes
            elif t.name == "token_embd.weight":
                token_embd += t.n_bytes
            elif t.name == "output.weight":
                output += t.n_bytes
            else:
                other += t.n_bytes
        return cls(token_embd, output, tuple(layers), tuple(experts) if any(experts) else (), other)

    @property
    def experts_total(self) -> int:
        return sum(self.experts)

    @property
    def total(self) -> int:
        return self.token_embd + self.output + sum(self.layers) + sum(self.experts) + self.other


@dataclass(frozen=True, slots=True)
class Quantization:
    """How the weights are stored: the file type label and the per-tensor types."""

    file_type: str
    tensor_types: tuple[tuple[str, str], ...] = ()
    """(tensor name, type name) for every tensor, when the source lists tensors."""

    @property
    def type_counts(self) -> dict[str, int]:
        return dict(Counter(t for _, t in self.tensor_types))


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything membudget needs to know about a model, independent of any engine."""

    name: str
    architecture: str
    source: str
    source_kind: SourceKind
    n_params: int
    n_embd: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    layers: tuple[LayerSpec, ...]
    weights: WeightBytes
    quant: Quantization
    n_expert: int = 0
    n_expert_used: int = 0
    n_expert_shared: int = 0
    n_ff_expert: int = 0
    expert_gating: int = 0
    """llama.cpp's expert gating function (GGUF ``{arch}.expert_gating_func``): 0 when the file
    does not say (the architecture's default applies), 1 softmax, 2 sigmoid, 3 softmax over
    the chosen experts only."""
    expert_weights_norm: bool = False
    """Whether the chosen experts' weights are renormalised (GGUF ``{arch}.expert_weights_norm``);
    some architectures renormalise regardless."""
    expert_weights_scale: float = 0.0
    """Factor on the chosen experts' weights (GGUF ``{arch}.expert_weights_scale``; 0 unset)."""
    mla: MLASpec | None = None
    recurrent: RecurrentSpec | None = None
    tied_embeddings: bool = False
    embedding_only: bool = False
    tensors: tuple[TensorSpec, ...] = field(default=(), repr=False)
    rope_scaling: str = ""
    """The RoPE scaling the model was trained with (GGUF ``{arch}.rope.scaling.type``, config
    ``rope_scaling``): ``none``, ``linear``, ``yarn``, ...; empty when not said."""
    rope_factor: float = 0.0
    """Its context factor (GGUF ``{arch}.rope.scaling.factor``); 0 when not said."""
    n_ctx_orig_yarn: int = 0
    """The context before scaling (GGUF ``{arch}.rope.scaling.original_context_length``); 0 when
    not said (llama.cpp then takes ``n_ctx_train``)."""
    n_layer_mtp: int = 0
    """Multi-token-prediction blocks stored after the trunk (GGUF ``{arch}.nextn_predict_layers``).
    ``layers`` holds the trunk only: llama.cpp loads, caches and runs these blocks only for MTP
    drafting, which is off by default (``llama_model_params.load_mtp``)."""
    notes: tuple[str, ...] = ()
    """Where facts came from, and anything that was guessed."""
    provenance: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """Field name -> where its value came from: a GGUF key, a config field, a default."""

    def source_of(self, name: str) -> str:
        """Where the value of field ``name`` came from, as a phrase for people."""
        found = dict(self.provenance).get(name)
        if found is not None:
            return found
        return f"{self.source_kind} {self.source}"

    @property
    def n_layer(self) -> int:
        return len(self.layers)

    @property
    def weight_bytes(self) -> int:
        return self.weights.total

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.weights.total / self.n_params if self.n_params else 0.0

    @property
    def is_moe(self) -> bool:
        return self.n_expert > 1

    @property
    def sliding_window(self) -> int:
        return max((layer.sliding_window for layer in self.layers), default=0)

    @property
    def n_recurrent_layers(self) -> int:
        return sum(layer.recurrent for layer in self.layers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view; per-layer arrays are run-length friendly lists."""
        layers = self.layers
        return {
            "name": self.name,
            "architecture": self.architecture,
            "source": self.source,
            "source_kind": self.source_kind,
            "n_params": self.n_params,
            "n_layer": self.n_layer,
            "n_layer_mtp": self.n_layer_mtp,
            "n_embd": self.n_embd,
            "n_ff": self.n_ff,
            "n_vocab": self.n_vocab,
            "n_ctx_train": self.n_ctx_train,
            "n_expert": self.n_expert,
            "n_expert_used": self.n_expert_used,
            "n_expert_shared": self.n_expert_shared,
            "n_ff_expert": self.n_ff_expert,
            "tied_embeddings": self.tied_embeddings,
            "embedding_only": self.embedding_only,
            "attention": {
                "n_head": [layer.n_head for layer in layers],
                "n_head_kv": [layer.n_head_kv for layer in layers],
                "head_dim_k": [layer.head_dim_k for layer in layers],
                "head_dim_v": [layer.head_dim_v for layer in layers],
                "sliding_window": [layer.sliding_window for layer in layers],
                "recurrent": [layer.recurrent for layer in layers],
                "kv_shared": [layer.kv_shared for layer in layers],
            },
            "mla": None
            if self.mla is None
            else {
                "kv_lora_rank": self.mla.kv_lora_rank,
                "qk_rope_head_dim": self.mla.qk_rope_head_dim,
                "qk_nope_head_dim": self.mla.qk_nope_head_dim,
                "v_head_dim": self.mla.v_head_dim,
                "q_lora_rank": self.mla.q_lora_rank,
                "compressed_cache": self.mla.compressed_cache,
            },
            "recurrent": None
            if self.recurrent is None
            else {
                "kind": self.recurrent.kind,
                "d_conv": self.recurrent.d_conv,
                "d_inner": self.recurrent.d_inner,
                "d_state": self.recurrent.d_state,
                "n_group": self.recurrent.n_group,
                "n_head": self.recurrent.n_head,
                "head_dim": self.recurrent.head_dim,
            },
            "weights": {
                "total_bytes": self.weights.total,
                "token_embd_bytes": self.weights.token_embd,
                "output_bytes": self.weights.output,
                "layers_bytes": list(self.weights.layers),
                "experts_bytes": list(self.weights.experts),
                "other_bytes": self.weights.other,
            },
            "quantization": {
                "file_type": self.quant.file_type,
                "bits_per_weight": round(self.bits_per_weight, 4),
                "tensor_type_counts": self.quant.type_counts,
            },
            "notes": list(self.notes),
        }
