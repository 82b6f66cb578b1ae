"""llama.cpp's quantisation presets (``llama-quantize`` file types) applied tensor by tensor.

"What would this model weigh at Q4_K_M?" is answered by choosing each tensor's type the way
llama.cpp does. The rules are derived from llama.cpp's ``llama_tensor_get_type``
(``src/llama-quant.cpp``), restricted to the presets listed in :data:`PRESETS`:

- vectors (norms, biases) and the tensors llama-quantize never quantises (MoE routers, SSM
  conv/A/D, attention sinks) stay F32;
- ``output.weight`` (or ``token_embd.weight`` when embeddings are tied) gets Q6_K unless the
  preset is Q8_0 or wider;
- ``attn_v`` and ``ffn_down`` get more bits on the layers ``use_more_bits`` selects
  (the first and last eighth, and every third layer between) in the ``_M`` presets;
- a k-quant whose row length is not a multiple of 256 falls back: Q4_K -> Q5_0, Q5_K -> Q5_1,
  Q6_K -> Q8_0, Q2_K/Q3_K/IQ4_XS -> IQ4_NL (and to F16 if that still does not divide).

The test suite checks these rules against every tensor of a real Q4_K_M file.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from membudget.errors import InvalidArgumentError
from membudget.model import GGML_MAX_NAME, ModelSpec, Quantization, TensorSpec, WeightBytes

__all__ = ["PRESETS", "Preset", "apply_preset", "preset_types"]


@dataclass(frozen=True, slots=True)
class Preset:
    name: str
    base: str
    attn_v: str = ""
    """"more": Q6_K on use_more_bits layers; "first2": Q5_K on the first two; a type name."""
    ffn_down: str = ""
    attn_output: str = ""
    output: str = "Q6_K"
    experts: str = ""


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("Q2_K", "Q2_K", attn_v="Q3_K", ffn_down="Q3_K", attn_output="Q3_K"),
        Preset("Q3_K_S", "Q3_K"),
        Preset("Q3_K_M", "Q3_K", attn_v="first2", ffn_down="first16th", attn_output="Q4_K"),
        Preset("Q3_K_L", "Q3_K", attn_v="Q5_K", ffn_down="Q5_K", attn_output="Q5_K"),
        Preset("Q4_0", "Q4_0"),
        Preset("Q4_1", "Q4_1"),
        Preset("Q4_K_S", "Q4_K", attn_v="first4", ffn_down="first8th"),
        Preset("Q4_K_M", "Q4_K", attn_v="more", ffn_down="more"),
        Preset("Q5_0", "Q5_0"),
        Preset("Q5_1", "Q5_1"),
        Preset("Q5_K_S", "Q5_K"),
        Preset("Q5_K_M", "Q5_K", attn_v="more", ffn_down="more"),
        Preset("Q6_K", "Q6_K"),
        Preset("Q8_0", "Q8_0", output="Q8_0"),
        Preset("IQ4_NL", "IQ4_NL"),
        Preset("IQ4_XS", "IQ4_XS"),
        Preset("MXFP4_MOE", "Q8_0", output="Q8_0", experts="MXFP4"),
        Preset("Q1_0", "Q1_0", output="Q1_0"),
        Preset("TQ1_0", "TQ1_0", output="TQ1_0"),
        Preset("TQ2_0", "TQ2_0", output="TQ2_0"),
        Preset("F16", "F16", output="F16"),
        Preset("BF16", "BF16", output="BF16"),
    )
}

_FALLBACK = {
    "Q4_K": "Q5_0",
    "Q5_K": "Q5_1",
    "Q6_K": "Q8_0",
    "Q2_K": "IQ4_NL",
    "Q3_K": "IQ4_NL",
    "IQ4_XS": "IQ4_NL",
}
_NEVER_QUANTISED = re.compile(
    r"(ffn_gate_inp\.weight|ssm_conv1d|ssm_a$|ssm_d$|ssm_dt\.|attn_sinks|_norm\.|"
    r"shortconv\.conv|exp_probs_b|time_mix_|pos_embd)"
)


_FFN_DOWN = re.compile(r"ffn_down(_exps)?\.weight$")


def _use_more_bits(i: int, n: int) -> bool:
    # llama-quant.cpp use_more_bits(i_layer, n_layers), integer division throughout.
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@functools.lru_cache(maxsize=1024)
def _fit(type_name: str, row: int) -> str:
    """The type llama.cpp falls back to when ``row`` is not a whole number of blocks."""
    from membudget.quant import ggml_type_by_name  # noqa: PLC0415 - gguf only when used

    qtype = ggml_type_by_name(type_name)
    if qtype is None or row % qtype.block_size == 0:
        return type_name
    fallback = _FALLBACK.get(type_name, "F16")
    fb = ggml_type_by_name(fallback)
    return fallback if fb is not None and row % fb.block_size == 0 else "F16"


def _layer_rule(rule: str, i: int, n: int, more: str) -> str:
    if rule == "more":
        return more if _use_more_bits(i, n) else ""
    if rule == "first2":
        return "Q5_K" if i < 2 else "Q4_K"
    if rule == "first4":
        return "Q5_K" if i < 4 else ""
    if rule == "first8th":
        return "Q5_K" if i < n // 8 else ""
    if rule == "first16th":
        return "Q5_K" if i < n // 16 else "Q4_K"
    return rule


# what a tensor is to the preset rules, from its name alone
_VECTOR, _OUTPUT, _EMBD, _V, _DOWN, _ATTN_OUT, _OTHER = range(7)


@functools.lru_cache(maxsize=1 << 14)
def _role(name: str) -> tuple[int, bool]:
    """(role, routed experts) of a tensor named ``name`` (remembered for names ggml could
    hold)."""
    if _NEVER_QUANTISED.search(name):
        return _VECTOR, False
    if name == "output.weight":
        role = _OUTPUT
    elif name == "token_embd.weight":
        role = _EMBD
    elif name.endswith("attn_v.weight"):
        role = _V
    elif _FFN_DOWN.search(name):
        role = _DOWN
    elif name.endswith("attn_output.weight"):
        role = _ATTN_OUT
    else:
        role = _OTHER
    return role, "_exps" in name


def preset_types(tensors: Sequence[TensorSpec], preset: Preset, n_expert: int = 0) -> list[str]:
    """The type llama-quantize would give each tensor under ``preset``."""
    roles = [
        _role(t.name) if len(t.name) < GGML_MAX_NAME else _role.__wrapped__(t.name) for t in tensors
    ]
    tied = not any(role == _OUTPUT for role, _ in roles)
    n_v = sum(1 for role, _ in roles if role == _V)
    n_down = sum(1 for role, _ in roles if role == _DOWN)
    i_v = i_down = 0
    out: list[str] = []
    for t, (role, exps) in zip(tensors, roles, strict=True):
        if len(t.shape) < 2 or role == _VECTOR:
            out.append("F32")
            continue
        chosen = preset.base
        if role == _OUTPUT or (tied and role == _EMBD):
            chosen = preset.output
        elif role == _V:
            if n_expert == 8 and preset.base not in ("F16", "BF16"):
                chosen = "Q8_0"  # llama.cpp gives Mixtral-style 8-expert models a Q8_0 V
            else:
                chosen = _layer_rule(preset.attn_v, i_v, n_v, "Q6_K") or chosen
            i_v += 1
        elif role == _DOWN:
            chosen = _layer_rule(preset.ffn_down, i_down, n_down, "Q6_K") or chosen
            i_down += 1
        elif role == _ATTN_OUT and preset.attn_output:
            chosen = preset.attn_output
        if preset.experts and exps:
            chosen = preset.experts
        out.append(_fit(chosen, t.shape[0]))
    return out


_APPLIED: OrderedDict[tuple[int, str], tuple[ModelSpec, ModelSpec]] = OrderedDict()
"""The last models retyped, by (id of the model, preset), each kept beside its model so the
id cannot be reused meanwhile: a sweep asks for a winning preset twice (to find it, then to
plan it)."""
_APPLIED_LOCK = threading.Lock()


def apply_preset(spec: ModelSpec, preset: str) -> ModelSpec:
    """``spec`` with every tensor retyped as llama-quantize's ``preset`` would."""
    key = (id(spec), preset.upper())
    with _APPLIED_LOCK:
        hit = _APPLIED.get(key)
        if hit is not None and hit[0] is spec:
            _APPLIED.move_to_end(key)
            return hit[1]
    retyped = _apply_preset(spec, preset)
    with _APPLIED_LOCK:
        _APPLIED[key] = (spec, retyped)
        while len(_APPLIED) > 32:
            _APPLIED.popitem(last=False)
    return retyped


def _apply_preset(spec: ModelSpec, preset: str) -> ModelSpec:
    chosen = PRESETS.get(preset.upper())
    if chosen is None:
        raise InvalidArgumentError("preset", preset, f"must be one of {', '.join(PRESETS)}")
    if not spec.tensors:
        raise InvalidArgumentError("spec", spec.name, "has no tensor list to requantise")
    from membudget.quant import ggml_type_by_name  # noqa: PLC0415 - gguf only when used

    types = preset_types(spec.tensors, chosen, spec.n_expert)
    known: dict[str, tuple[str, int, int]] = {}  # a type's name, block size, block bytes
    tensors = []
    for t, type_name in zip(spec.tensors, types, strict=True):
        found = known.get(type_name)
        if found is None:
            qtype = ggml_type_by_name(type_name)
            assert qtype is not None
            found = known[type_name] = (qtype.name, qtype.block_size, qtype.type_size)
        name, block, size = found
        n_bytes = t.n_elements // block * size
        if name == t.type_name and n_bytes == t.n_bytes and t.offset is None and not t.part:
            tensors.append(t)  # as stored already
        else:
            tensors.append(TensorSpec(t.name, name, t.shape, n_bytes))
    weights = WeightBytes.from_tensors(tensors, spec.n_layer)
    return replace(
        spec,
        weights=weights,
        tensors=tuple(tensors),
        quant=Quantization(chosen.name, tuple((t.name, t.type_name) for t in tensors)),
        notes=(
            *spec.notes,
            f"weights requantised to {chosen.name} by llama.cpp's per-tensor rules",
        ),
        provenance=(
            *((k, v) for k, v in spec.provenance if k != "weights"),
            (
                "weights",
                (
                    f"{len(tensors)} tensors requantised to preset {chosen.name} by "
                    "llama.cpp's per-tensor type rules (llama_tensor_get_type)"
                ),
            ),
        ),
    )
