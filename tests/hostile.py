"""An adversarial corpus: malformed GGUF, safetensors and config.json files, typos in catalogue
names, and special files, each built by the tests from nothing.

GGUF files are assembled byte by byte here (not with gguf-py's writer, which refuses to write
most of them), so every field a reader trusts can be made to lie. Each :class:`Case` builds its
input in a directory and names the fragment its one-line error must contain.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CASES", "CONFIG", "Case", "gguf_bytes", "valid_gguf"]

# GGUF value type ids (gguf-py GGUFValueType).
U32, I32, F32, BOOL, STRING, ARRAY, U64 = 4, 5, 6, 7, 8, 9, 10
F16_TYPE = 1  # ggml type id of F16 tensors


def _s(text: str | bytes, e: str = "<") -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack(e + "Q", len(raw)) + raw


def kv(key: str, vtype: int, value: bytes, e: str = "<") -> bytes:
    return _s(key, e) + struct.pack(e + "I", vtype) + value


def u32(key: str, v: int, e: str = "<") -> bytes:
    return kv(key, U32, struct.pack(e + "I", v), e)


def string(key: str, v: str, e: str = "<") -> bytes:
    return kv(key, STRING, _s(v, e), e)


def tensor_info(name: str, dims: Sequence[int], ttype: int, offset: int, e: str = "<") -> bytes:
    return (
        _s(name, e)
        + struct.pack(e + "I", len(dims))
        + b"".join(struct.pack(e + "Q", d) for d in dims)
        + struct.pack(e + "IQ", ttype, offset)
    )


def model_kvs(e: str = "<", **override: int) -> list[bytes]:
    values = {
        "block_count": 1,
        "embedding_length": 64,
        "feed_forward_length": 128,
        "attention.head_count": 2,
        "attention.head_count_kv": 1,
        "context_length": 512,
    }
    values.update({k.replace("__", "."): v for k, v in override.items()})
    return [string("general.architecture", "llama", e)] + [
        u32(f"llama.{k}", v, e) for k, v in values.items()
    ]


def gguf_bytes(
    kvs: Sequence[bytes],
    tensors: Sequence[bytes],
    data_bytes: int = 0,
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    e: str = "<",
) -> bytes:
    head = magic + struct.pack(
        e + "IQQ",
        version,
        len(tensors) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    body = head + b"".join(kvs) + b"".join(tensors)
    pad = (-len(body)) % 32
    return body + b"\0" * pad + b"\0" * data_bytes


def valid_gguf(e: str = "<") -> bytes:
    """A small, valid llama GGUF: one F16 token embedding of 64 x 32."""
    return gguf_bytes(
        [*model_kvs(e), u32("llama.vocab_size", 32, e)],
        [tensor_info("token_embd.weight", (64, 32), F16_TYPE, 0, e)],
        64 * 32 * 2,
        e=e,
    )


@dataclass(frozen=True)
class Case:
    """One hostile input: ``build(dir)`` returns the argument given to ``membudget inspect``."""

    id: str
    build: Callable[[Path], str]
    fragment: str
    exit_code: int = 2


def _file(name: str, data: bytes | Callable[[], bytes]) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        p = d / name
        p.write_bytes(data() if callable(data) else data)
        return str(p)

    return build


def _gguf(data: bytes | Callable[[], bytes]) -> Callable[[Path], str]:
    return _file("hostile.gguf", data)


def _truncated_at(fraction: float) -> Callable[[], bytes]:
    def make() -> bytes:
        good = valid_gguf()
        header_end = len(good) - 64 * 32 * 2
        return good[: max(1, int(header_end * fraction))]

    return make


def _with_tensors(*tensors: bytes, data: int = 4096, kvs: Sequence[bytes] = ()) -> bytes:
    return gguf_bytes([*model_kvs(), *kvs], list(tensors), data)


def _safetensors(
    header: bytes | str | object, data: bytes = b"", length: int | None = None
) -> bytes:
    raw = (
        header
        if isinstance(header, bytes)
        else (header.encode() if isinstance(header, str) else json.dumps(header).encode())
    )
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _st(
    header: bytes | str | object,
    data: bytes = b"",
    length: int | None = None,
    raw: bytes | None = None,
) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        (d / "config.json").write_text(json.dumps(CONFIG))
        p = d / "model.safetensors"
        p.write_bytes(raw if raw is not None else _safetensors(header, data, length))
        return str(p)

    return build


CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "intermediate_size": 128,
    "vocab_size": 32,
    "max_position_embeddings": 512,
}


def _config(**changes: object) -> Callable[[Path], str]:
    cfg = {k: v for k, v in CONFIG.items() if changes.get(k, 0) is not None}
    cfg.update({k: v for k, v in changes.items() if v is not None})
    return _file("config.json", json.dumps(cfg).encode())


def _nested_text_config(depth: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        inner: dict[str, object] = dict(CONFIG)
        for _ in range(depth):
            inner = {"text_config": inner}
        p = d / "config.json"
        p.write_text(json.dumps(inner))
        return str(p)

    return build


def _deep_json(name: str, depth: int) -> Callable[[Path], str]:
    def build(d: Path) -> str:
        text = "[" * depth + "]" * depth
        if name == "model.safetensors":
            (d / "config.json").write_text(json.dumps(CONFIG))
            (d / name).write_bytes(_safetensors(text))
        else:
            (d / name).write_text('{"a": ' + text + "}")
        return str(d / name)

    return build


def _fifo(d: Path) -> str:
    p = d / "pipe.gguf"
    os.mkfifo(p)
    return str(p)


def _dir_as_file(d: Path) -> str:
    p = d / "folder.gguf"
    p.mkdir()
    return str(p)


def _dangling(d: Path) -> str:
    p = d / "dangling.gguf"
    p.symlink_to(d / "nowhere.gguf")
    return str(p)


def _loop(d: Path) -> str:
    a, b = d / "a.gguf", d / "b.gguf"
    a.symlink_to(b)
    b.symlink_to(a)
    return str(a)


def _symlink_to_valid(d: Path) -> str:
    real = d / "real.gguf"
    real.write_bytes(valid_gguf())
    link = d / "link.gguf"
    link.symlink_to(real)
    return str(link)


_BIG = 2**63 - 1
_E = "<"

CASES: tuple[Case, ...] = (
    # --- GGUF: the header ---
    Case("gguf-wrong-magic", _gguf(lambda: b"GGUX" + valid_gguf()[4:]), "magic"),
    Case("gguf-version-1", _gguf(lambda: gguf_bytes(model_kvs(), [], version=1)), "version 1"),
    Case("gguf-version-99", _gguf(lambda: gguf_bytes(model_kvs(), [], version=99)), "version 99"),
    Case("gguf-empty", _gguf(b""), "empty"),
    Case("gguf-truncated-header", _gguf(lambda: valid_gguf()[:12]), "truncated"),
    Case("gguf-truncated-metadata", _gguf(_truncated_at(0.3)), "truncated"),
    Case("gguf-truncated-tensor-infos", _gguf(_truncated_at(0.93)), "truncated"),
    Case("gguf-truncated-data", _gguf(lambda: valid_gguf()[:-100]), "outside"),
    Case("gguf-kv-count-2^63", _gguf(lambda: gguf_bytes(model_kvs(), [], n_kv=_BIG)), "metadata"),
    Case(
        "gguf-tensor-count-2^63",
        _gguf(lambda: gguf_bytes(model_kvs(), [], n_tensors=_BIG)),
        "tensor",
    ),
    # --- GGUF: lengths that point past the end ---
    Case(
        "gguf-key-length-past-end",
        _gguf(lambda: gguf_bytes([struct.pack("<Q", 2**40) + b"k"], [])),
        "truncated",
    ),
    Case(
        "gguf-string-length-2^63",
        _gguf(lambda: gguf_bytes([kv("general.name", STRING, struct.pack("<Q", _BIG))], [])),
        "truncated",
    ),
    Case(
        "gguf-array-length-2^62",
        _gguf(lambda: gguf_bytes([kv("x.arr", ARRAY, struct.pack("<IQ", U32, 2**62))], [])),
        "claims 4611686018427387904 elements",
    ),
    Case(
        "gguf-string-array-length-2^40",
        _gguf(
            lambda: gguf_bytes(
                [kv("tokenizer.ggml.tokens", ARRAY, struct.pack("<IQ", STRING, 2**40))], []
            )
        ),
        "claims 1099511627776 strings",
    ),
    Case(
        "gguf-nested-arrays",
        _gguf(lambda: gguf_bytes([kv("x.deep", ARRAY, struct.pack("<IQ", ARRAY, 1) * 200)], [])),
        "nests arrays",
    ),
    # --- GGUF: types and keys ---
    Case(
        "gguf-unknown-value-type",
        _gguf(lambda: gguf_bytes([kv("x.y", 99, b"")], [])),
        "unknown value type 99",
    ),
    Case(
        "gguf-duplicate-key",
        _gguf(lambda: gguf_bytes([*model_kvs(), u32("llama.block_count", 2)], [])),
        "appears twice",
    ),
    Case(
        "gguf-invalid-utf8-key",
        # Keys are decoded leniently, as llama.cpp does; the error is what the file lacks.
        _gguf(lambda: gguf_bytes([_s(b"bad\xff\xfe") + struct.pack("<II", U32, 1)], [])),
        "general.architecture is missing",
    ),
    Case(
        "gguf-no-architecture",
        _gguf(lambda: gguf_bytes([u32("llama.block_count", 1)], [])),
        "architecture",
    ),
    Case(
        "gguf-implausible-block-count",
        _gguf(lambda: gguf_bytes(model_kvs(block_count=2**31), [])),
        "not plausible",
    ),
    Case(
        "gguf-alignment-zero",
        _gguf(lambda: gguf_bytes([*model_kvs(), u32("general.alignment", 0)], [])),
        "alignment",
    ),
    Case(
        "gguf-alignment-not-power-of-two",
        _gguf(lambda: gguf_bytes([*model_kvs(), u32("general.alignment", 48)], [])),
        "alignment",
    ),
    # --- GGUF: tensors ---
    Case(
        "gguf-five-dims",
        _gguf(lambda: _with_tensors(tensor_info("t", (2, 2, 2, 2, 2), F16_TYPE, 0))),
        "dimensions",
    ),
    Case(
        "gguf-zero-dims",
        _gguf(lambda: _with_tensors(tensor_info("t", (), F16_TYPE, 0))),
        "0 dimensions",
    ),
    Case(
        "gguf-zero-length-dim",
        _gguf(lambda: _with_tensors(tensor_info("t", (64, 0), F16_TYPE, 0))),
        "zero-length",
    ),
    Case(
        "gguf-element-count-overflow",
        _gguf(lambda: _with_tensors(tensor_info("t", (2**32, 2**32, 2**32), F16_TYPE, 0))),
        "overflows 64 bits",
    ),
    Case(
        "gguf-dim-2^63",
        _gguf(lambda: _with_tensors(tensor_info("t", (_BIG,), F16_TYPE, 0))),
        "t",
    ),
    Case(
        "gguf-unknown-tensor-type",
        _gguf(lambda: _with_tensors(tensor_info("t", (64,), 1234, 0))),
        "unknown ggml type id 1234",
    ),
    Case(
        "gguf-tensor-offset-outside",
        _gguf(lambda: _with_tensors(tensor_info("t", (64,), F16_TYPE, 2**40))),
        "outside",
    ),
    Case(
        "gguf-tensors-overlap",
        _gguf(
            lambda: _with_tensors(
                tensor_info("a", (64,), F16_TYPE, 0), tensor_info("b", (64,), F16_TYPE, 64)
            )
        ),
        "overlap",
    ),
    Case(
        "gguf-tensor-misaligned",
        _gguf(lambda: _with_tensors(tensor_info("t", (64,), F16_TYPE, 3))),
        "align",
    ),
    Case(
        "gguf-duplicate-tensor",
        _gguf(
            lambda: _with_tensors(
                tensor_info("t", (64,), F16_TYPE, 0), tensor_info("t", (64,), F16_TYPE, 128)
            )
        ),
        "appears twice",
    ),
    Case("gguf-big-endian-is-read", _gguf(lambda: valid_gguf(">")), "", exit_code=0),
    Case(
        "gguf-split-part-missing",
        _file("m-00001-of-00002.gguf", valid_gguf),
        "missing",
    ),
    # --- safetensors ---
    Case("st-header-past-end", _st(b"{}", length=500), "past the end"),
    Case("st-header-over-cap", _st(b"{}", length=10**9), "cap"),
    Case("st-header-length-2^64", _st(b"{}", length=2**64 - 1), "cap"),
    Case("st-shorter-than-length", _st(b"", length=None, raw=b"\x01\x02"), "truncated"),
    Case("st-invalid-json", _st("{nope"), "not valid JSON"),
    Case("st-json-not-object", _st([1, 2, 3]), "object"),
    Case("st-deep-json", _deep_json("model.safetensors", 100_000), "JSON"),
    Case(
        "st-offsets-out-of-range",
        _st({"t": {"dtype": "F16", "shape": [4], "data_offsets": [0, 64]}}, b"\0" * 8),
        "outside",
    ),
    Case(
        "st-offsets-reversed",
        _st({"t": {"dtype": "F16", "shape": [4], "data_offsets": [8, 0]}}, b"\0" * 8),
        "t",
    ),
    Case(
        "st-offsets-overlap",
        _st(
            {
                "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
                "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
        ),
        "overlap",
    ),
    Case(
        "st-unknown-dtype",
        _st({"t": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4),
        "unknown dtype 'Q7'",
    ),
    Case(
        "st-negative-shape",
        _st({"t": {"dtype": "F16", "shape": [-4], "data_offsets": [0, 8]}}, b"\0" * 8),
        "shape",
    ),
    Case(
        "st-huge-shape",
        _st({"t": {"dtype": "F16", "shape": [2**62, 2**62], "data_offsets": [0, 8]}}, b"\0" * 8),
        "t",
    ),
    # --- config.json ---
    Case("config-missing-layers", _config(num_hidden_layers=None), "num_hidden_layers"),
    Case("config-zero-hidden-size", _config(hidden_size=0), "hidden_size"),
    Case("config-negative-heads", _config(num_attention_heads=-2), "num_attention_heads"),
    Case("config-huge-layers", _config(num_hidden_layers=10**12), "num_hidden_layers"),
    Case("config-huge-int", _config(vocab_size=10**400), "vocab_size"),
    Case("config-string-hidden-size", _config(hidden_size="64"), "hidden_size"),
    Case("config-float-heads", _config(num_attention_heads=2.5), "num_attention_heads"),
    Case("config-bool-vocab", _config(vocab_size=True), "vocab_size"),
    Case("config-heads-not-multiple", _config(num_key_value_heads=3), "multiple"),
    Case(
        "config-list-kv-heads-wrong-length", _config(num_key_value_heads=[1]), "num_key_value_heads"
    ),
    Case("config-not-object", _file("config.json", b"[1, 2]"), "not an object"),
    Case("config-invalid-json", _file("config.json", b"{"), "not valid JSON"),
    Case("config-not-utf8", _file("config.json", b'{"a": "\xff"}'), "JSON"),
    Case("config-nested-text-config", _nested_text_config(50), "nested"),
    Case("config-deep-json", _deep_json("config.json", 100_000), "JSON"),
    # --- catalogue names ---
    Case("catalogue-typo", lambda d: "lama-3.1-8b", "Did you mean 'llama-3.1-8b'"),
    Case("catalogue-typo-2", lambda d: "qwen3-8", "Did you mean"),
    Case("catalogue-unknown", lambda d: "no-such-model-anywhere", "Cannot find model"),
    # --- special files ---
    Case("special-fifo", _fifo, "not a regular file"),
    Case("special-dev-zero", lambda d: "/dev/zero", "not a regular file"),
    Case("special-directory-as-file", _dir_as_file, "GGUF"),
    Case("special-dangling-symlink", _dangling, "no such file"),
    Case("special-symlink-loop", _loop, "symbolic links"),
    Case("special-symlink-to-valid-model", _symlink_to_valid, "", exit_code=0),
)
