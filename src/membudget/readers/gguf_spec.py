"""From a GGUF header to a :class:`~membudget.model.ModelSpec`.

Key names are gguf-py's templates (``Keys.Attention.HEAD_COUNT_KV`` is
``"{arch}.attention.head_count_kv"``); per-architecture rules come from :mod:`membudget.archs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from membudget._gguf import Keys, LlamaFileType
from membudget.archs import Hyper, build_layers, rule_for
from membudget.errors import GGUFError
from membudget.model import MLASpec, ModelSpec, Quantization, TensorSpec, WeightBytes
from membudget.readers.gguf import ArrayInfo, GGUFFile, MetadataValue, read_gguf

__all__ = ["load_gguf", "spec_from_gguf"]


class _Meta:
    """Typed access to ``{arch}.*`` keys, with errors that name the file and the key."""

    def __init__(self, f: GGUFFile) -> None:
        self.f = f
        self.arch = f.architecture
        self.md: Mapping[str, MetadataValue] = f.metadata

    def key(self, template: str) -> str:
        return template.format(arch=self.arch)

    def where(self, template: str, default: object = None) -> str:
        """Where a value read through ``template`` came from, for explanations."""
        key = self.key(template)
        if key in self.md:
            return f"GGUF key {key!r}"
        return f"default {default} (GGUF key {key!r} absent)"

    def raw(self, template: str) -> MetadataValue | None:
        return self.md.get(self.key(template))

    def get_int_or_none(self, template: str) -> int | None:
        value = self.raw(template)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise GGUFError(self.f.path, f"{self.key(template)} is {value!r}, expected an integer")
        if value < 0:
            raise GGUFError(self.f.path, f"{self.key(template)} is {value}, expected >= 0")
        return value

    def get_int(self, template: str, default: int | None = None) -> int:
        value = self.get_int_or_none(template)
        if value is None:
            if default is None:
                raise GGUFError(self.f.path, f"required key {self.key(template)!r} is missing")
            return default
        return value

    def per_layer(self, template: str, n_layer: int, default: int | None = None) -> tuple[int, ...]:
        """A key that is either one integer or an array with one integer per layer."""
        value = self.raw(template)
        if isinstance(value, tuple):
            if len(value) != n_layer or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
            ):
                raise GGUFError(
                    self.f.path,
                    f"{self.key(template)} must hold {n_layer} non-negative integers "
                    f"(one per layer), found {len(value)} values",
                )
            return tuple(int(v) for v in value)  # type: ignore[arg-type]
        return (self.get_int(template, default),) * n_layer


def _file_type_name(value: MetadataValue | None) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return LlamaFileType(value).name.removeprefix("MOSTLY_")
        except ValueError:
            return f"unknown({value})"
    return "unknown"


def _float(value: MetadataValue | None) -> float:
    """A float key's value, 0.0 when absent or not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    number = float(value)
    return number if math.isfinite(number) else 0.0


def _rope_type(value: MetadataValue | None) -> str:
    """``{arch}.rope.scaling.type`` as llama.cpp reads it (``llama_rope_scaling_type_from_string``)."""
    return (
        value if isinstance(value, str) and value in ("none", "linear", "yarn", "longrope") else ""
    )


def spec_from_gguf(f: GGUFFile) -> ModelSpec:
    """Describe the model that ``f`` holds."""
    if not f.architecture:
        raise GGUFError(f.path, "general.architecture is missing; this is not a model file")
    m = _Meta(f)
    n_layer = m.get_int(Keys.LLM.BLOCK_COUNT)
    if n_layer > 4096:
        raise GGUFError(
            f.path, f"{m.key(Keys.LLM.BLOCK_COUNT)} is {n_layer}, which is not plausible"
        )
    n_embd = m.get_int(Keys.LLM.EMBEDDING_LENGTH)
    rule = rule_for(m.arch)
    n_head = m.per_layer(Keys.Attention.HEAD_COUNT, n_layer, 0)
    n_head_kv = (
        m.per_layer(Keys.Attention.HEAD_COUNT_KV, n_layer)
        if m.raw(Keys.Attention.HEAD_COUNT_KV) is not None
        else n_head
    )
    max_head = max(n_head, default=0)
    head_k = m.get_int(Keys.Attention.KEY_LENGTH, n_embd // max_head if max_head else 0)
    head_v = m.get_int(Keys.Attention.VALUE_LENGTH, n_embd // max_head if max_head else 0)
    pattern_raw = m.raw(Keys.Attention.SLIDING_WINDOW_PATTERN)
    swa_pattern: tuple[bool, ...] | int | None = None
    if isinstance(pattern_raw, tuple):
        swa_pattern = tuple(bool(v) for v in pattern_raw)
    elif isinstance(pattern_raw, int) and not isinstance(pattern_raw, bool):
        swa_pattern = pattern_raw
    n_expert = m.get_int(Keys.LLM.EXPERT_COUNT, 0)
    n_ff_raw = m.raw(Keys.LLM.FEED_FORWARD_LENGTH)
    n_ff = (
        max((int(v) for v in n_ff_raw if isinstance(v, (int, float))), default=0)
        if isinstance(n_ff_raw, tuple)
        else m.get_int(Keys.LLM.FEED_FORWARD_LENGTH, 0)
    )
    tensors = tuple(
        TensorSpec(t.name, t.type_name, t.shape, t.n_bytes, t.offset, t.part) for t in f.tensors
    )
    weights = WeightBytes.from_tensors(tensors, n_layer)
    moe_layers = tuple(e > 0 for e in weights.experts) if weights.experts else None
    hyper = Hyper(
        arch=m.arch,
        n_layer=n_layer,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=head_k,
        head_dim_v=head_v,
        n_swa=rule.gguf_sliding_window(m.get_int_or_none(Keys.Attention.SLIDING_WINDOW)),
        swa_chunked=rule.chunked_local,
        swa_pattern=swa_pattern,
        full_attention_interval=m.get_int(Keys.LLM.FULL_ATTENTION_INTERVAL, 0),
        moe_layers=moe_layers,
        kv_shared_from=max(0, n_layer - m.get_int(Keys.Attention.SHARED_KV_LAYERS, 0))
        if m.get_int(Keys.Attention.SHARED_KV_LAYERS, 0)
        else 0,
    )
    layers = build_layers(hyper)
    # Multi-token-prediction blocks follow the trunk; llama.cpp skips them unless asked to
    # draft with them (llama-model.cpp: n_layer() = n_layer_all - n_layer_nextn).
    n_mtp = m.get_int(Keys.LLM.NEXTN_PREDICT_LAYERS, 0)
    if n_mtp >= n_layer > 0:
        raise GGUFError(
            f.path,
            f"{m.key(Keys.LLM.NEXTN_PREDICT_LAYERS)} is {n_mtp}, but the file has only "
            f"{n_layer} blocks",
        )
    layers = layers[: n_layer - n_mtp]
    mtp_note = (
        f"{n_mtp} multi-token-prediction block(s) after the {n_layer - n_mtp}-block trunk: "
        "counted in the file's weights, not in what llama.cpp loads by default"
    )

    mla = None
    kv_lora = m.get_int(Keys.Attention.KV_LORA_RANK, 0)
    if kv_lora:
        rope = m.get_int(Keys.Rope.DIMENSION_COUNT, 0)
        k_mla = m.get_int(Keys.Attention.KEY_LENGTH_MLA, 0)
        v_mla = m.get_int(Keys.Attention.VALUE_LENGTH_MLA, 0)
        compressed = bool(k_mla and v_mla)
        mla = MLASpec(
            kv_lora_rank=kv_lora,
            qk_rope_head_dim=rope,
            qk_nope_head_dim=(k_mla if compressed else head_k) - rope,
            v_head_dim=v_mla if compressed else head_v,
            q_lora_rank=m.get_int(Keys.Attention.Q_LORA_RANK, 0),
            compressed_cache=compressed,
        )

    recurrent = rule.gguf_recurrent(m, n_embd)

    vocab = m.get_int_or_none(Keys.LLM.VOCAB_SIZE)
    vocab_from = m.where(Keys.LLM.VOCAB_SIZE)
    if vocab is None:
        vocab_from = f"length of GGUF array {Keys.Tokenizer.LIST!r}"
        tokens = f.metadata.get(Keys.Tokenizer.LIST)
        if isinstance(tokens, ArrayInfo):
            vocab = tokens.length
        elif isinstance(tokens, tuple):
            vocab = len(tokens)
        else:
            embd = next((t for t in f.tensors if t.name == "token_embd.weight"), None)
            vocab = embd.shape[1] if embd is not None and len(embd.shape) > 1 else 0
            vocab_from = "shape of tensor 'token_embd.weight'"
    head_default = f"n_embd / n_head = {n_embd // max_head if max_head else 0}"
    provenance: dict[str, str] = {
        "n_layer": m.where(Keys.LLM.BLOCK_COUNT)
        if not n_mtp
        else f"{m.where(Keys.LLM.BLOCK_COUNT)} ({n_layer}) less "
        f"{m.where(Keys.LLM.NEXTN_PREDICT_LAYERS)} ({n_mtp} MTP block(s))",
        "n_embd": m.where(Keys.LLM.EMBEDDING_LENGTH),
        "n_head": m.where(Keys.Attention.HEAD_COUNT, 0),
        "n_head_kv": m.where(Keys.Attention.HEAD_COUNT_KV, "n_head"),
        "head_dim_k": m.where(Keys.Attention.KEY_LENGTH, head_default),
        "head_dim_v": m.where(Keys.Attention.VALUE_LENGTH, head_default),
        "n_vocab": vocab_from,
        "n_ff": m.where(Keys.LLM.FEED_FORWARD_LENGTH, 0),
        "n_ctx_train": m.where(Keys.LLM.CONTEXT_LENGTH, 0),
        "sliding_window": m.where(Keys.Attention.SLIDING_WINDOW, 0),
        "n_expert": m.where(Keys.LLM.EXPERT_COUNT, 0),
        "n_expert_used": m.where(Keys.LLM.EXPERT_USED_COUNT, 0),
        "weights": f"{len(tensors)} tensor infos of the GGUF header, each "
        "n_elements / block_size * bytes_per_block of its ggml type",
    }
    if mla is not None:
        provenance["kv_lora_rank"] = m.where(Keys.Attention.KV_LORA_RANK)
        provenance["rope_dim"] = m.where(Keys.Rope.DIMENSION_COUNT, 0)
    if recurrent is not None:
        shape = ", ".join(
            f"{name} {getattr(recurrent, name)}"
            for name in ("d_conv", "d_inner", "d_state", "n_head", "head_dim")
            if getattr(recurrent, name)
        )
        provenance["recurrent"] = (
            f"{recurrent.kind} state from GGUF keys {m.key(rule.gguf_recurrent_keys())} ({shape})"
        )
    names = {t.name for t in f.tensors}
    pooling = m.get_int(Keys.LLM.POOLING_TYPE, 0)
    name = f.metadata.get(Keys.General.NAME)
    return ModelSpec(
        name=name if isinstance(name, str) and name else Path(f.path).stem,
        architecture=m.arch,
        source=str(f.path),
        source_kind="gguf",
        n_params=sum(t.n_elements for t in f.tensors),
        n_embd=n_embd,
        n_ff=n_ff,
        n_vocab=vocab,
        n_ctx_train=m.get_int(Keys.LLM.CONTEXT_LENGTH, 0),
        rope_scaling=_rope_type(m.raw(Keys.Rope.SCALING_TYPE)),
        rope_factor=_float(m.raw(Keys.Rope.SCALING_FACTOR)),
        n_ctx_orig_yarn=m.get_int(Keys.Rope.SCALING_ORIG_CTX_LEN, 0),
        layers=layers,
        weights=weights,
        quant=Quantization(
            file_type=_file_type_name(f.metadata.get(Keys.General.FILE_TYPE)),
            tensor_types=tuple((t.name, t.type_name) for t in f.tensors),
        ),
        n_expert=n_expert,
        n_expert_used=m.get_int(Keys.LLM.EXPERT_USED_COUNT, 0),
        n_expert_shared=m.get_int(Keys.LLM.EXPERT_SHARED_COUNT, 0),
        n_ff_expert=m.get_int(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH, 0),
        expert_gating=m.get_int(Keys.LLM.EXPERT_GATING_FUNC, 0),
        expert_weights_norm=m.raw(Keys.LLM.EXPERT_WEIGHTS_NORM) is True,
        expert_weights_scale=_float(m.raw(Keys.LLM.EXPERT_WEIGHTS_SCALE)),
        mla=mla,
        recurrent=recurrent,
        tied_embeddings="output.weight" not in names,
        embedding_only=pooling > 0,
        tensors=tensors,
        n_layer_mtp=n_mtp,
        notes=(
            f"read from the GGUF header ({len(f.parts)} part(s), version {f.version})",
            *([mtp_note] if n_mtp else []),
        ),
        provenance=tuple(provenance.items()),
    )


def load_gguf(path: str | Path) -> ModelSpec:
    return spec_from_gguf(read_gguf(path))
