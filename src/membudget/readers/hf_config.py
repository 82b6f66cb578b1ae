"""Hugging Face ``config.json``: geometry from the field names the ecosystem uses.

The config is read leniently (aliases, ``text_config`` nesting), validated once, and every
problem is reported together. From the geometry this module lays out the model's tensors in
GGUF's naming (``blk.N.attn_q.weight`` ...), so parameter counts, weight groups and quant
presets all come from one tensor list, exactly as they do for a real GGUF file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from membudget.archs import Hyper, Tensors, arch_for_model_type, build_layers, rule_for
from membudget.errors import ConfigError
from membudget.model import (
    MLASpec,
    ModelSpec,
    Quantization,
    RecurrentSpec,
    SourceKind,
    TensorSpec,
    WeightBytes,
)
from membudget.quant import EXTERNAL_FORMATS, ggml_type_by_name
from membudget.readers._binary import parse_json, read_small_file

__all__ = [
    "Geometry",
    "StorageScheme",
    "geometry_from_config",
    "parse_config",
    "read_config",
    "spec_from_config",
]

_MAX_NESTING = 4
_MAX_DIM = 1 << 24  # no real dimension comes near 16 million
_MAX_LARGE = 1 << 32  # vocabularies, windows and contexts: none near four billion
_MAX_LAYERS = 4096

_DTYPE_BITS = {"bfloat16": 16, "float16": 16, "float32": 32, "half": 16, "float": 32, "bf16": 16}
_SWA_LAYER_TYPES = {"sliding_attention", "sliding_window_attention", "local_attention"}
_RECURRENT_LAYER_TYPES = {"mamba", "linear_attention", "conv", "ssm", "mamba2"}


@dataclass(frozen=True, slots=True)
class StorageScheme:
    """How a checkpoint stores its weights: a base dtype and, optionally, a quantised format
    for the linear layers (``quantized`` decides which tensors it covers)."""

    label: str
    base_bits: int
    quant_format: str | None = None
    experts_only: bool = False
    """MXFP4 in gpt-oss: only the routed experts are quantised."""

    def bits_for(self, name: str, shape: tuple[int, ...]) -> Fraction:
        if self.quant_format is not None and self.quant_format.startswith("ggml:"):
            # A uniform ggml type for every matrix (embeddings included), F32 vectors.
            qtype = ggml_type_by_name(self.quant_format[5:])
            if qtype is None or len(shape) < 2 or shape[0] % qtype.block_size:
                return Fraction(32) if len(shape) < 2 else Fraction(16)
            return qtype.bits_per_weight
        if self.quant_format is None or len(shape) < 2:
            return Fraction(self.base_bits)
        if name.startswith(("token_embd", "output.")) or "_norm" in name or "conv1d" in name:
            return Fraction(self.base_bits)
        if self.experts_only and "_exps" not in name:
            return Fraction(self.base_bits)
        if not name.startswith("blk."):
            return Fraction(self.base_bits)
        return EXTERNAL_FORMATS[self.quant_format].bits_per_weight


@dataclass(frozen=True, slots=True)
class Geometry:
    """Everything the tensor layout needs, read from one config."""

    arch: str
    model_type: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: tuple[int, ...]
    head_dim: int
    head_dim_v: int
    n_ff: int
    n_vocab: int
    n_ctx_train: int
    tied: bool
    attention_bias: bool
    qk_norm: bool
    sandwich_norm: bool
    n_swa: int
    swa_flags: tuple[bool, ...] | None
    recurrent_flags: tuple[bool, ...] | None
    n_expert: int
    n_expert_used: int
    n_expert_shared: int
    n_ff_expert: int
    n_ff_shared: int
    moe_flags: tuple[bool, ...]
    mla: MLASpec | None
    recurrent: RecurrentSpec | None
    conv_bias: bool
    recurrent_norm: bool
    """The recurrent mixer's gated norm is stored (``ssm_norm``)."""
    expert_bias: bool
    attn_sinks: bool
    score_bias: bool = False
    """DeepSeek-V3's routing-score correction bias (``topk_method`` noaux_tc; V2 has none)."""
    expert_weights_norm: bool = False
    """The chosen experts' weights are renormalised (``norm_topk_prob``)."""
    provenance: tuple[tuple[str, str], ...] = ()
    """ModelSpec field -> the config field (or default) it came from."""
    rope_scaling: str = ""
    """``rope_scaling.rope_type`` (or ``type``), as convert_hf_to_gguf.py writes
    ``{arch}.rope.scaling.type``."""
    rope_factor: float = 0.0
    n_ctx_orig_yarn: int = 0


def _rope(value: object) -> dict[str, Any]:
    """``rope_scaling`` of a config.json: its type, factor and original context, where given."""
    if not isinstance(value, dict):
        return {}
    kind = value.get("rope_type", value.get("type"))
    factor = value.get("factor")
    orig = value.get("original_max_position_embeddings")
    out: dict[str, Any] = {}
    if kind in ("linear", "yarn", "longrope"):
        out["rope_scaling"] = kind
    if isinstance(factor, (int, float)) and not isinstance(factor, bool) and 0 < factor < 1e6:
        out["rope_factor"] = float(factor)
    if isinstance(orig, int) and not isinstance(orig, bool) and 0 < orig < 1 << 31:
        out["n_ctx_orig_yarn"] = orig
    return out


class _Fields:
    """Lenient lookups that collect every problem instead of stopping at the first."""

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        self.problems: list[str] = []
        self.found: dict[str, str] = {}
        """First alias asked -> the field that answered (or the default that was used)."""

    def where(self, name: str) -> str:
        """Where the value asked for under ``name`` (its first alias) came from."""
        return self.found.get(name, f"{name} (not read)")

    def int(self, *names: str, default: int | None = None, minimum: int = 0) -> int:
        self.found[names[0]] = (
            f"default {default} ({' / '.join(names)} absent)" if default is not None else names[0]
        )
        for name in names:
            if name in self.cfg and self.cfg[name] is not None:
                self.found[names[0]] = f"field {name!r}"
                value = self.cfg[name]
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    self.problems.append(f"{name} is {value!r}, expected an integer")
                    return default or 0
                if isinstance(value, float) and not value.is_integer():
                    self.problems.append(f"{name} is {value!r}, expected an integer")
                    return default or 0
                number = int(value)
                if number < minimum:
                    self.problems.append(f"{name} is {number}, expected at least {minimum}")
                    return default or 0
                if number > (_MAX_LARGE if name in _LARGE_OK else _MAX_DIM):
                    self.problems.append(f"{name} is {number}, which is not plausible")
                    return default or 0
                return number
        if default is None:
            self.problems.append(f"{' or '.join(names)} is missing")
            return 0
        return default

    def bool(self, name: str, default: bool = False) -> bool:
        value = self.cfg.get(name, default)
        return value if isinstance(value, bool) else default

    def list(self, name: str) -> list[Any] | None:
        value = self.cfg.get(name)
        return value if isinstance(value, list) else None


_LARGE_OK = {"max_position_embeddings", "vocab_size", "sliding_window", "seq_length"}


def _flatten(cfg: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Merge ``text_config`` (multimodal models) over the top level, to a bounded depth."""
    merged = dict(cfg)
    inner = cfg.get("text_config")
    depth = 0
    while isinstance(inner, dict):
        depth += 1
        if depth > _MAX_NESTING:
            raise ConfigError(path, f"text_config is nested more than {_MAX_NESTING} levels deep")
        merged.update({k: v for k, v in inner.items() if k != "text_config"})
        inner = inner.get("text_config")
    return merged


def geometry_from_config(raw: Mapping[str, Any], path: Path) -> Geometry:
    """Read a config's geometry; raise one :class:`ConfigError` listing every problem."""
    if not isinstance(raw, Mapping):
        raise ConfigError(path, f"the config is a JSON {type(raw).__name__}, not an object")
    cfg = _flatten(raw, path)
    f = _Fields(cfg)
    model_type = str(cfg.get("model_type") or "")
    arch = arch_for_model_type(model_type)
    rule = rule_for(arch)
    n_layer = f.int("num_hidden_layers", "n_layer", "num_layers", "n_layers", minimum=1)
    if n_layer > _MAX_LAYERS:
        f.problems.append(f"num_hidden_layers is {n_layer}, which is not plausible")
        n_layer = 0
    n_embd = f.int("hidden_size", "d_model", "n_embd", minimum=1)
    recurrent_only = rule.all_recurrent
    n_head = f.int(
        "num_attention_heads",
        "n_head",
        "n_heads",
        default=0 if recurrent_only else None,
        minimum=0 if recurrent_only else 1,
    )
    kv_list = f.list("num_key_value_heads")
    if kv_list is not None and (
        len(kv_list) != n_layer or not all(isinstance(v, int) and v >= 0 for v in kv_list)
    ):
        f.problems.append(f"num_key_value_heads must list {n_layer} non-negative integers")
        kv_list = None
    kv_single = (
        f.int("num_key_value_heads", "n_head_kv", "num_kv_heads", default=n_head)
        if kv_list is None
        else 0
    )
    if kv_list is None and n_head and kv_single and n_head % kv_single:
        f.problems.append(
            f"num_attention_heads ({n_head}) is not a multiple of num_key_value_heads ({kv_single})"
        )
    head_dim = f.int("head_dim", default=n_embd // n_head if n_head else 0)
    n_vocab = f.int("vocab_size", minimum=1)
    n_ff = rule.config_ffn(f)
    n_ctx = f.int("max_position_embeddings", "seq_length", "n_positions", default=0)

    # Sliding windows: an explicit per-layer list, a pattern period, or every layer.
    layer_types = f.list("layer_types")
    n_swa = 0
    swa_flags: tuple[bool, ...] | None = None
    window = cfg.get("sliding_window")
    use_swa = cfg.get("use_sliding_window", True) is not False
    local = rule.config_local_attention(f, n_layer)
    if local is not None:
        n_swa, swa_flags = local
    elif isinstance(window, int) and not isinstance(window, bool) and window > 0 and use_swa:
        n_swa = window
        if layer_types is not None:
            swa_flags = tuple(str(t) in _SWA_LAYER_TYPES for t in layer_types[:n_layer])
        elif isinstance(cfg.get("sliding_window_pattern"), int):
            period = int(cfg["sliding_window_pattern"])
            swa_flags = tuple(period > 0 and il % period < period - 1 for il in range(n_layer))
        elif rule.swa_period is None:
            swa_flags = (True,) * n_layer  # Mistral 7B v0.1 style: every layer slides
    elif window is not None and not (isinstance(window, int) and not isinstance(window, bool)):
        f.problems.append(f"sliding_window is {window!r}, expected an integer or null")

    # Recurrent layers of hybrids.
    recurrent_flags: tuple[bool, ...] | None = None
    if layer_types is not None:
        if len(layer_types) < n_layer:
            f.problems.append(
                f"layer_types lists {len(layer_types)} layers, the model has {n_layer}"
            )
        else:
            recurrent_flags = tuple(str(t) in _RECURRENT_LAYER_TYPES for t in layer_types[:n_layer])
    else:
        recurrent_flags = rule.config_recurrent_flags(f, n_layer)

    # Mixture of experts.
    n_expert = f.int("num_local_experts", "n_routed_experts", "num_experts", default=0)
    n_expert_used = f.int("num_experts_per_tok", "num_selected_experts", "top_k_experts", default=0)
    n_expert_shared = f.int(
        "n_shared_experts", "num_shared_experts", default=rule.default_shared_experts
    )
    n_ff_expert = f.int(*rule.expert_ffn_fields, default=n_ff)
    n_ff_shared = f.int("shared_expert_intermediate_size", default=n_ff_expert * n_expert_shared)
    if n_ff_shared and not n_expert_shared:
        n_expert_shared = 1
    first_dense = f.int("first_k_dense_replace", default=0)
    step = f.int(
        "decoder_sparse_step",
        "expert_layer_period",
        "interleave_moe_layer_step",
        default=1,
        minimum=1,
    )
    offset = f.int("expert_layer_offset", default=step - 1 if rule.moe_last_in_step else 0)
    mlp_only = {int(i) for i in (f.list("mlp_only_layers") or []) if isinstance(i, int)}
    moe_list = f.list("moe_layers")  # Llama4TextConfig names its MoE layers outright
    moe_flags = (
        tuple(n_expert > 1 and il in set(moe_list) for il in range(n_layer))
        if moe_list is not None
        else tuple(
            n_expert > 1 and il >= first_dense and il % step == offset % step and il not in mlp_only
            for il in range(n_layer)
        )
    )

    mla = None
    kv_lora = f.int("kv_lora_rank", default=0)
    if kv_lora:
        rope = f.int("qk_rope_head_dim", default=64)
        nope = f.int("qk_nope_head_dim", default=128)
        v_dim = f.int("v_head_dim", default=128)
        mla = MLASpec(kv_lora, rope, nope, v_dim, f.int("q_lora_rank", default=0), True)
        head_dim = nope + rope

    recurrent = rule.config_recurrent(f, n_embd)

    if f.problems:
        raise ConfigError(path, "; ".join(f.problems))
    provenance = {
        "n_layer": f.where("num_hidden_layers"),
        "n_embd": f.where("hidden_size"),
        "n_head": f.where("num_attention_heads"),
        "n_head_kv": "field 'num_key_value_heads' (per layer)"
        if kv_list is not None
        else f.where("num_key_value_heads"),
        "head_dim_k": f.where("head_dim"),
        "head_dim_v": f.where("head_dim"),
        "n_vocab": f.where("vocab_size"),
        "n_ff": f.where("intermediate_size"),
        "n_ctx_train": f.where("max_position_embeddings"),
        "sliding_window": (
            "field 'attention_chunk_size' (chunked local attention)"
            if n_swa and local is not None
            else "field 'sliding_window'"
            if n_swa
            else "no sliding window"
        ),
        "n_expert": f.where("num_local_experts"),
        "n_expert_used": f.where("num_experts_per_tok"),
    }
    if mla is not None:
        provenance["head_dim_k"] = "fields 'qk_nope_head_dim' + 'qk_rope_head_dim'"
        provenance["head_dim_v"] = f.where("v_head_dim")
        provenance["kv_lora_rank"] = f.where("kv_lora_rank")
        provenance["rope_dim"] = f.where("qk_rope_head_dim")
    if recurrent is not None:
        provenance["recurrent"] = (
            f"{recurrent.kind} state: d_conv {recurrent.d_conv}, d_inner {recurrent.d_inner}, "
            f"d_state {recurrent.d_state} from the config's SSM fields (defaults where absent)"
        )
    n_head_kv = tuple(int(v) for v in kv_list) if kv_list is not None else (kv_single,) * n_layer
    return Geometry(
        arch=arch,
        model_type=model_type,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=head_dim,
        head_dim_v=(mla.v_head_dim if mla else head_dim),
        n_ff=n_ff,
        n_vocab=n_vocab,
        n_ctx_train=n_ctx,
        **_rope(cfg.get("rope_scaling")),
        tied=bool(cfg.get("tie_word_embeddings", rule.tied_default)),
        attention_bias=bool(cfg.get("attention_bias", rule.attention_bias_default)),
        qk_norm=rule.config_qk_norm(f),
        sandwich_norm=rule.sandwich_norm,
        n_swa=n_swa,
        swa_flags=swa_flags,
        recurrent_flags=recurrent_flags,
        n_expert=n_expert,
        n_expert_used=n_expert_used,
        n_expert_shared=n_expert_shared,
        n_ff_expert=n_ff_expert,
        n_ff_shared=n_ff_shared,
        moe_flags=moe_flags,
        mla=mla,
        recurrent=recurrent,
        conv_bias=bool(cfg.get("conv_bias", cfg.get("use_conv_bias", True))),
        recurrent_norm=rule.config_recurrent_norm(f),
        expert_bias=rule.expert_bias,
        attn_sinks=rule.attention_sinks,
        score_bias=rule.config_score_bias(f),
        expert_weights_norm=cfg.get("norm_topk_prob") is True,
        provenance=tuple(provenance.items()),
    )


def layout_tensors(g: Geometry) -> Tensors:
    """The model's tensors in GGUF naming and ggml shape order (row length first)."""
    e = g.n_embd
    out: Tensors = [("token_embd.weight", (e, g.n_vocab))]
    rule = rule_for(g.arch)
    for il in range(g.n_layer):
        p = f"blk.{il}."
        # a parallel hybrid (Falcon-H1) has a recurrent mixer beside attention in every layer
        recurrent = rule.parallel_hybrid or (g.recurrent_flags[il] if g.recurrent_flags else False)
        attention = (not recurrent) or rule.parallel_hybrid
        if not rule.post_norms_only:
            out.append((p + "attn_norm.weight", (e,)))
        if attention and g.n_head:
            out += _attention(g, p, g.n_head_kv[il])
        if recurrent and g.recurrent is not None:
            mixer = rule.recurrent_tensors(g.recurrent, e, p, g.conv_bias)
            out += [t for t in mixer if g.recurrent_norm or t[0] != p + "ssm_norm.weight"]
        if g.sandwich_norm or rule.post_norms_only:
            out += [(p + "post_attention_norm.weight", (e,)), (p + "post_ffw_norm.weight", (e,))]
        out += _ffn(g, p, g.moe_flags[il], pre_norm=not rule.post_norms_only)
    out.append(("output_norm.weight", (e,)))
    if not g.tied:
        out.append(("output.weight", (e, g.n_vocab)))
    return out


def _attention(g: Geometry, p: str, n_kv: int) -> Tensors:
    e, h = g.n_embd, g.n_head
    if g.mla is not None:
        m = g.mla
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        out: Tensors = []
        if m.q_lora_rank:
            out += [
                (p + "attn_q_a.weight", (e, m.q_lora_rank)),
                (p + "attn_q_a_norm.weight", (m.q_lora_rank,)),
                (p + "attn_q_b.weight", (m.q_lora_rank, h * qk)),
            ]
        else:
            out.append((p + "attn_q.weight", (e, h * qk)))
        return [
            *out,
            (p + "attn_kv_a_mqa.weight", (e, m.kv_lora_rank + m.qk_rope_head_dim)),
            (p + "attn_kv_a_norm.weight", (m.kv_lora_rank,)),
            (p + "attn_kv_b.weight", (m.kv_lora_rank, h * (m.qk_nope_head_dim + m.v_head_dim))),
            (p + "attn_output.weight", (h * m.v_head_dim, e)),
        ]
    d, dv = g.head_dim, g.head_dim_v
    rule = rule_for(g.arch)
    q_width = h * d * (2 if rule.gated_query else 1)
    out = [
        (p + "attn_q.weight", (e, q_width)),
        (p + "attn_k.weight", (e, n_kv * d)),
        (p + "attn_v.weight", (e, n_kv * dv)),
        (p + "attn_output.weight", (h * dv, e)),
    ]
    if g.attention_bias:
        out += [
            (p + "attn_q.bias", (h * d,)),
            (p + "attn_k.bias", (n_kv * d,)),
            (p + "attn_v.bias", (n_kv * dv,)),
        ]
        if rule.attention_output_bias:
            out.append((p + "attn_output.bias", (e,)))
    if g.qk_norm and rule.qk_norm_full:
        out += [(p + "attn_q_norm.weight", (h * d,)), (p + "attn_k_norm.weight", (n_kv * d,))]
    elif g.qk_norm:
        out += [(p + "attn_q_norm.weight", (d,)), (p + "attn_k_norm.weight", (d,))]
    if g.attn_sinks:
        out.append((p + "attn_sinks.weight", (h,)))
    return out


def _ffn(g: Geometry, p: str, moe: bool, *, pre_norm: bool = True) -> Tensors:
    e = g.n_embd
    out: Tensors = []
    if pre_norm:
        out.append((p + "ffn_norm.weight", (e,)))
    if not moe:
        if g.n_ff:
            out += [
                (p + "ffn_gate.weight", (e, g.n_ff)),
                (p + "ffn_up.weight", (e, g.n_ff)),
                (p + "ffn_down.weight", (g.n_ff, e)),
            ]
        return out
    x, f = g.n_expert, g.n_ff_expert
    out += [
        (p + "ffn_gate_inp.weight", (e, x)),
        (p + "ffn_gate_exps.weight", (e, f, x)),
        (p + "ffn_up_exps.weight", (e, f, x)),
        (p + "ffn_down_exps.weight", (f, e, x)),
    ]
    if g.expert_bias:
        out += [
            (p + "ffn_gate_inp.bias", (x,)),
            (p + "ffn_gate_exps.bias", (f, x)),
            (p + "ffn_up_exps.bias", (f, x)),
            (p + "ffn_down_exps.bias", (e, x)),
        ]
    if g.score_bias:
        out.append((p + "exp_probs_b.bias", (x,)))
    if g.n_ff_shared:
        s = g.n_ff_shared
        out += [
            (p + "ffn_gate_shexp.weight", (e, s)),
            (p + "ffn_up_shexp.weight", (e, s)),
            (p + "ffn_down_shexp.weight", (s, e)),
        ]
        if rule_for(g.arch).shared_expert_gate:
            out.append((p + "ffn_gate_inp_shexp.weight", (e,)))
    return out


def storage_scheme(cfg: Mapping[str, Any], path: Path) -> StorageScheme:
    """The storage a config declares: its dtype and its ``quantization_config``."""
    flat = _flatten(cfg, path)
    dtype = str(flat.get("torch_dtype") or flat.get("dtype") or "bfloat16")
    base = _DTYPE_BITS.get(dtype, 16)
    q = cfg.get("quantization_config") or flat.get("quantization_config")
    if not isinstance(q, Mapping):
        return StorageScheme(dtype, base)
    method = str(q.get("quant_method", "")).lower()
    if method in ("gptq", "awq"):
        bits = int(q.get("bits", q.get("w_bit", 4)) or 4)
        group = int(q.get("group_size", q.get("q_group_size", 128)) or 128)
        group = 128 if group <= 0 else group
        name = f"{method}-{bits}bit-g{group}"
        if name not in EXTERNAL_FORMATS:
            name = (
                f"gptq-{bits}bit-g{group}"
                if f"gptq-{bits}bit-g{group}" in EXTERNAL_FORMATS
                else "gptq-4bit-g128"
            )
        return StorageScheme(f"{method} {bits}-bit g{group}", base, name)
    if method == "bitsandbytes":
        if q.get("load_in_8bit"):
            return StorageScheme("bitsandbytes int8", base, "bnb-int8")
        kind = str(q.get("bnb_4bit_quant_type", "fp4")).lower()
        double = bool(q.get("bnb_4bit_use_double_quant"))
        name = "bnb-nf4-double-quant" if kind == "nf4" and double else f"bnb-{kind}"
        return StorageScheme(
            f"bitsandbytes {kind}", base, name if name in EXTERNAL_FORMATS else "bnb-nf4"
        )
    if method in ("fp8", "fbgemm_fp8"):
        block = q.get("weight_block_size")
        name = "fp8-block128" if isinstance(block, list) and block == [128, 128] else "fp8"
        return StorageScheme("fp8", base, name)
    if method == "mxfp4":
        return StorageScheme("mxfp4 experts", base, "mxfp4", experts_only=True)
    if method == "compressed-tensors":
        fmt = str(q.get("format", "")).lower()
        if "nvfp4" in fmt:
            return StorageScheme("compressed-tensors nvfp4", base, "nvfp4")
        if "float" in fmt or "fp8" in fmt:
            return StorageScheme("compressed-tensors fp8", base, "fp8")
        return StorageScheme("compressed-tensors int4", base, "gptq-4bit-g128")
    return StorageScheme(f"{dtype} ({method or 'unknown'} quantisation ignored)", base)


def _tensor_bytes(bits: Fraction, n_elements: int) -> int:
    """``ceil(bits * n_elements / 8)``, in integers."""
    return -(-(bits.numerator * n_elements) // (8 * bits.denominator))


def spec_from_config(
    cfg: Mapping[str, Any],
    *,
    path: Path,
    name: str,
    source: str,
    source_kind: SourceKind = "config",
    scheme: StorageScheme | None = None,
    real_tensors: tuple[TensorSpec, ...] | None = None,
    n_params: int | None = None,
    notes: tuple[str, ...] = (),
    origin: str = "",
) -> ModelSpec:
    """Build a ModelSpec from a config. ``real_tensors`` (safetensors) replace the computed
    layout's bytes when given; ``n_params`` overrides the computed count."""
    g = geometry_from_config(cfg, path)
    scheme = scheme or storage_scheme(cfg, path)
    layout = layout_tensors(g)
    computed = tuple(
        TensorSpec(
            n, scheme.label, shape, _tensor_bytes(scheme.bits_for(n, shape), math.prod(shape))
        )
        for n, shape in layout
    )
    tensors = computed
    count = sum(t.n_elements for t in computed)
    if real_tensors is not None:
        tensors = real_tensors
    hyper = Hyper(
        arch=g.arch,
        n_layer=g.n_layer,
        n_head=(g.n_head,) * g.n_layer,
        n_head_kv=g.n_head_kv,
        head_dim_k=g.head_dim,
        head_dim_v=g.head_dim_v,
        n_swa=g.n_swa,
        swa_pattern=g.swa_flags,
        recurrent_layers=g.recurrent_flags,
        moe_layers=g.moe_flags,
        swa_chunked=rule_for(g.arch).chunked_local,
    )
    weights = (
        WeightBytes.from_tensors(computed, g.n_layer)
        if real_tensors is None
        else _hf_weight_groups(real_tensors, g.n_layer)
    )
    return ModelSpec(
        name=name,
        architecture=g.arch,
        source=source,
        source_kind=source_kind,
        n_params=n_params if n_params is not None else count,
        n_embd=g.n_embd,
        n_ff=g.n_ff,
        n_vocab=g.n_vocab,
        n_ctx_train=g.n_ctx_train,
        rope_scaling=g.rope_scaling,
        rope_factor=g.rope_factor,
        n_ctx_orig_yarn=g.n_ctx_orig_yarn,
        layers=build_layers(hyper),
        weights=weights,
        quant=Quantization(scheme.label, tuple((t.name, t.type_name) for t in tensors)),
        n_expert=g.n_expert,
        n_expert_used=g.n_expert_used,
        n_expert_shared=g.n_expert_shared,
        n_ff_expert=g.n_ff_expert if g.n_expert else 0,
        expert_weights_norm=g.expert_weights_norm and g.n_expert > 0,
        mla=g.mla,
        recurrent=g.recurrent,
        tied_embeddings=g.tied,
        tensors=computed,
        notes=notes,
        provenance=(
            *((k, f"{origin or path.name}: {v}") for k, v in g.provenance),
            (
                "weights",
                f"{origin or path.name}: {len(computed)} tensors laid out from the geometry, "
                f"stored as {scheme.label}"
                if real_tensors is None
                else f"{len(real_tensors)} tensors of the safetensors header, at their dtypes",
            ),
        ),
    )


def _hf_weight_groups(tensors: tuple[TensorSpec, ...], n_layer: int) -> WeightBytes:
    """Group Hugging Face tensor names (``model.layers.N.``, ``embed_tokens``, ``lm_head``)."""
    layers = [0] * n_layer
    experts = [0] * n_layer
    embd = output = other = 0
    for t in tensors:
        parts = t.name.split(".")
        idx = next(
            (
                int(parts[i + 1])
                for i, s in enumerate(parts[:-1])
                if s == "layers" and parts[i + 1].isdigit()
            ),
            None,
        )
        if idx is not None and idx < n_layer:
            if ".experts." in t.name:
                experts[idx] += t.n_bytes
            else:
                layers[idx] += t.n_bytes
        elif "embed_tokens" in t.name or t.name.endswith("wte.weight"):
            embd += t.n_bytes
        elif "lm_head" in t.name:
            output += t.n_bytes
        else:
            other += t.n_bytes
    return WeightBytes(embd, output, tuple(layers), tuple(experts) if any(experts) else (), other)


def read_config(path: str | Path) -> dict[str, Any]:
    """Read a config.json as a dict; errors name the file."""
    path = Path(path)
    return parse_config(read_small_file(path, ConfigError), path)


def parse_config(data: bytes, path: Path) -> dict[str, Any]:
    """A config.json's bytes as a dict; errors name ``path``."""
    cfg = parse_json(data, path, ConfigError, "it")
    if not isinstance(cfg, dict):
        raise ConfigError(path, f"it is a JSON {type(cfg).__name__}, not an object")
    return cfg
