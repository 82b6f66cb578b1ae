"""Small GGUF models written with gguf-py's own writer, for tests and the accuracy suite.

``write_model`` lays out a model's tensors from a few geometry numbers in llama.cpp's naming
and fills them with zeros (tensor data is never read by membudget; llama.cpp only needs it to
exist). Any ggml type can be used for the matrices.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

Shape = tuple[int, ...]


@dataclass
class Tiny:
    """Geometry of a small test model."""

    arch: str = "llama"
    n_layer: int = 2
    n_embd: int = 256
    n_head: int = 4
    n_head_kv: int | Sequence[int] = 2
    head_dim: int = 64
    head_dim_v: int | None = None
    rope_dims: int | None = None
    n_ff: int = 512
    n_vocab: int = 512
    n_ctx_train: int = 4096
    matrix_type: GGMLQuantizationType = GGMLQuantizationType.F16
    tied: bool = False
    n_swa: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)
    extra_tensors: Sequence[tuple[str, Shape]] = ()


def _zeros(shape: Shape, qtype: GGMLQuantizationType) -> tuple[np.ndarray[Any, Any], bool]:
    """Data for a tensor of ggml ``shape`` (row length first) stored as ``qtype``; the flag
    says whether it is raw quantised bytes (one byte row per tensor row)."""
    block, size = GGML_QUANT_SIZES[qtype]
    if qtype == GGMLQuantizationType.F32:
        return np.zeros(tuple(reversed(shape)), dtype=np.float32), False
    if qtype == GGMLQuantizationType.F16:
        return np.zeros(tuple(reversed(shape)), dtype=np.float16), False
    byte_shape = (*reversed(shape[1:]), shape[0] // block * size)
    return np.zeros(byte_shape, dtype=np.uint8), True


def llama_tensors(m: Tiny) -> list[tuple[str, Shape]]:
    kv = [m.n_head_kv] * m.n_layer if isinstance(m.n_head_kv, int) else list(m.n_head_kv)
    out: list[tuple[str, Shape]] = [("token_embd.weight", (m.n_embd, m.n_vocab))]
    for il in range(m.n_layer):
        p = f"blk.{il}."
        out += [
            (p + "attn_norm.weight", (m.n_embd,)),
            (p + "attn_q.weight", (m.n_embd, m.n_head * m.head_dim)),
            (p + "attn_k.weight", (m.n_embd, max(kv[il], 1) * m.head_dim)),
            (p + "attn_v.weight", (m.n_embd, max(kv[il], 1) * m.head_dim)),
            (p + "attn_output.weight", (m.n_head * m.head_dim, m.n_embd)),
            (p + "ffn_norm.weight", (m.n_embd,)),
            (p + "ffn_gate.weight", (m.n_embd, m.n_ff)),
            (p + "ffn_up.weight", (m.n_embd, m.n_ff)),
            (p + "ffn_down.weight", (m.n_ff, m.n_embd)),
        ]
    out.append(("output_norm.weight", (m.n_embd,)))
    if not m.tied:
        out.append(("output.weight", (m.n_embd, m.n_vocab)))
    return out


_KEEP_F32 = ("ssm_conv1d.weight", ".ssm_a", ".ssm_d", "_norm.weight")


def write_model(
    path: Path,
    m: Tiny,
    tensors: Sequence[tuple[str, Shape]] | None = None,
    endianess: gguf.GGUFEndian = gguf.GGUFEndian.LITTLE,
) -> Path:
    """Write ``m`` as a GGUF file at ``path`` and return the path."""
    w = gguf.GGUFWriter(path, m.arch, endianess=endianess)
    w.add_context_length(m.n_ctx_train)
    w.add_embedding_length(m.n_embd)
    w.add_block_count(m.n_layer)
    w.add_feed_forward_length(m.n_ff)
    w.add_head_count(m.n_head)
    w.add_head_count_kv(m.n_head_kv if isinstance(m.n_head_kv, int) else list(m.n_head_kv))
    w.add_key_length(m.head_dim)
    w.add_value_length(m.head_dim if m.head_dim_v is None else m.head_dim_v)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_dimension_count(m.head_dim if m.rope_dims is None else m.rope_dims)
    w.add_vocab_size(m.n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    if m.n_swa:
        w.add_sliding_window(m.n_swa)
    for key, value in m.extra.items():
        _add(w, key.format(arch=m.arch), value)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}".encode() for i in range(m.n_vocab)])
    w.add_token_scores([0.0] * m.n_vocab)
    w.add_token_types([1] * m.n_vocab)
    for name, shape in [*(tensors if tensors is not None else llama_tensors(m)), *m.extra_tensors]:
        # expert biases stay F32, and so do the state-space vectors and 2-D norms, as the
        # converters write them (llama.cpp's SSM ops take them in F32 only)
        matrix = len(shape) >= 2 and not name.endswith((".bias", *_KEEP_F32))
        qtype = m.matrix_type if matrix else GGMLQuantizationType.F32
        if matrix and shape[0] % GGML_QUANT_SIZES[qtype][0]:
            qtype = GGMLQuantizationType.F16
        data, raw = _zeros(shape, qtype)
        w.add_tensor(name, data, raw_dtype=qtype if raw else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _add(w: gguf.GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        w.add_bool(key, value)
    elif isinstance(value, int):
        w.add_uint32(key, value)
    elif isinstance(value, float):
        w.add_float32(key, value)
    elif isinstance(value, str):
        w.add_string(key, value)
    else:
        w.add_array(key, list(value))
