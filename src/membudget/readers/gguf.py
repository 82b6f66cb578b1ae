"""A header-only GGUF reader.

It reads the key/value metadata and the tensor infos of GGUF versions 2 and 3 (little- or
big-endian, as gguf-py writes them) and never touches tensor data. Tokenizer arrays are skipped,
not materialised: only their element type and length are kept, as :class:`ArrayInfo`. Every
length the file claims is checked against the file's real size before it is used.

Split models (``name-00001-of-00003.gguf``) are read part by part; their tensors are summed.
"""

from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np

from membudget._gguf import GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUFValueType, Keys
from membudget.errors import GGUFError
from membudget.progress import advance
from membudget.quant import ggml_type
from membudget.readers._binary import Source

__all__ = [
    "ArrayInfo",
    "GGUFFile",
    "GGUFTensor",
    "MetadataValue",
    "join_parts",
    "parse_gguf",
    "read_gguf",
    "split_parts",
]

GGML_MAX_DIMS = 4  # ggml/include/ggml.h
_INT64_MAX = 2**63 - 1
# Arrays with more elements than this are skipped and kept as ArrayInfo; per-layer arrays
# (head counts, window patterns) are far shorter.
_KEEP_ARRAY_MAX = 1 << 16
_MAX_NESTING = 4
_MAX_STRING = 1 << 24  # a metadata string longer than 16 MiB is skipped, not read


@dataclass(frozen=True, slots=True)
class ArrayInfo:
    """An array that was skipped rather than read: its element type and its length."""

    element_type: str
    length: int


MetadataValue = Union[int, float, bool, str, tuple["MetadataValue", ...], ArrayInfo]  # noqa: UP007 - a recursive alias must stay a runtime Union on 3.10


@dataclass(frozen=True, slots=True)
class GGUFTensor:
    """One tensor's info. ``shape`` is in ggml order (ne0 first, the row length)."""

    name: str
    shape: tuple[int, ...]
    type_id: int
    type_name: str
    offset: int
    n_elements: int
    n_bytes: int
    part: int = 0


@dataclass(frozen=True, slots=True)
class GGUFFile:
    """What a GGUF header says. For split models, ``tensors`` covers every part."""

    path: Path
    version: int
    byte_order: str
    metadata: Mapping[str, MetadataValue]
    tensors: tuple[GGUFTensor, ...]
    alignment: int
    data_offset: int
    file_size: int
    parts: tuple[Path, ...] = field(default=())

    @property
    def architecture(self) -> str:
        arch = self.metadata.get(Keys.General.ARCHITECTURE)
        return arch if isinstance(arch, str) else ""

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


_SCALAR_FORMATS: dict[int, str] = {
    GGUFValueType.UINT8: "B",
    GGUFValueType.INT8: "b",
    GGUFValueType.UINT16: "H",
    GGUFValueType.INT16: "h",
    GGUFValueType.UINT32: "I",
    GGUFValueType.INT32: "i",
    GGUFValueType.FLOAT32: "f",
    GGUFValueType.BOOL: "?",
    GGUFValueType.UINT64: "Q",
    GGUFValueType.INT64: "q",
    GGUFValueType.FLOAT64: "d",
}
_NP_KINDS: dict[int, str] = {
    GGUFValueType.UINT8: "u1",
    GGUFValueType.INT8: "i1",
    GGUFValueType.UINT16: "u2",
    GGUFValueType.INT16: "i2",
    GGUFValueType.UINT32: "u4",
    GGUFValueType.INT32: "i4",
    GGUFValueType.FLOAT32: "f4",
    GGUFValueType.BOOL: "u1",
    GGUFValueType.UINT64: "u8",
    GGUFValueType.INT64: "i8",
    GGUFValueType.FLOAT64: "f8",
}


def _type_name(value_type: int) -> str:
    try:
        return GGUFValueType(value_type).name
    except ValueError:
        return f"unknown({value_type})"


class _Reader:
    def __init__(self, src: Source, order: str) -> None:
        self.src = src
        self.order = order
        self.pos = 0
        self.formats = {k: struct.Struct(order + f) for k, f in _SCALAR_FORMATS.items()}
        self.u32 = struct.Struct(order + "I")
        self.u64 = struct.Struct(order + "Q")

    def fail(self, problem: str) -> GGUFError:
        return GGUFError(self.src.path, problem)

    def read_u32(self, what: str) -> int:
        (value,) = self.src.unpack(self.u32, self.pos, what)
        self.pos += 4
        assert isinstance(value, int)
        return value

    def read_u64(self, what: str) -> int:
        (value,) = self.src.unpack(self.u64, self.pos, what)
        self.pos += 8
        assert isinstance(value, int)
        return value

    def read_string(self, what: str, keep: bool = True) -> str:
        length = self.read_u64(f"the length of {what}")
        self.src.need(self.pos, length, what)
        start = self.pos
        self.pos += length
        if not keep or length > _MAX_STRING:
            return ""
        return bytes(self.src.buf[start : self.pos]).decode("utf-8", errors="replace")

    def read_value(self, value_type: int, key: str, depth: int = 0) -> MetadataValue:
        fmt = self.formats.get(value_type)
        if fmt is not None:
            (value,) = self.src.unpack(fmt, self.pos, f"the value of {key!r}")
            self.pos += fmt.size
            assert isinstance(value, (int, float, bool))
            return value
        if value_type == GGUFValueType.STRING:
            return self.read_string(f"the value of {key!r}")
        if value_type == GGUFValueType.ARRAY:
            return self.read_array(key, depth)
        raise self.fail(f"key {key!r} has unknown value type {value_type}")

    def read_array(self, key: str, depth: int) -> MetadataValue:
        if depth >= _MAX_NESTING:
            raise self.fail(f"key {key!r} nests arrays deeper than {_MAX_NESTING} levels")
        element_type = self.read_u32(f"the element type of {key!r}")
        count = self.read_u64(f"the length of {key!r}")
        remaining = self.src.size - self.pos
        fmt = self.formats.get(element_type)
        if fmt is not None:
            if count > remaining // fmt.size:
                raise self.fail(
                    f"array {key!r} claims {count} elements of {fmt.size} bytes, "
                    f"but only {remaining} bytes remain"
                )
            start = self.pos
            self.pos += count * fmt.size
            if count > _KEEP_ARRAY_MAX or key.startswith("tokenizer."):
                return ArrayInfo(_type_name(element_type), count)
            self.src.need(start, count * fmt.size, f"the values of {key!r}")
            kind = _NP_KINDS[element_type]
            dtype = np.dtype(("<" if self.order == "<" else ">") + kind)
            values = np.frombuffer(self.src.buf, dtype=dtype, count=count, offset=start)
            if element_type == GGUFValueType.BOOL:
                return tuple(bool(v) for v in values)
            return tuple(values.tolist())
        if element_type == GGUFValueType.STRING:
            if count > remaining // 8:
                raise self.fail(
                    f"array {key!r} claims {count} strings, but only {remaining} bytes remain"
                )
            if count > 1024 or key.startswith("tokenizer."):
                self.pos = skip_strings(self.src, self.pos, count, self.order, key)
                return ArrayInfo("STRING", count)
            return tuple(self.read_string(f"element of {key!r}") for _ in range(count))
        if element_type == GGUFValueType.ARRAY:
            if count > remaining // 12:
                raise self.fail(
                    f"array {key!r} claims {count} nested arrays, but only {remaining} bytes remain"
                )
            items = tuple(self.read_array(key, depth + 1) for _ in range(count))
            return items if count <= _KEEP_ARRAY_MAX else ArrayInfo("ARRAY", count)
        raise self.fail(f"array {key!r} has unknown element type {element_type}")


def _walk_strings(src: Source, pos: int, count: int, u64: struct.Struct, key: str) -> int:
    """Step over ``count`` length-prefixed strings one by one; return the end offset."""
    size, unpack = src.size, u64.unpack_from
    for _ in range(count):
        if pos + 8 > size:
            break
        src.ensure(pos + 8)
        pos += 8 + unpack(src.buf, pos)[0]
        if pos > size:
            break
    else:
        return pos
    raise GGUFError(src.path, f"file is truncated inside the string array {key!r}")


_WINDOW_MAX = 1 << 23


def skip_strings(src: Source, pos: int, count: int, order: str, key: str) -> int:
    """Return the offset just past ``count`` length-prefixed strings starting at ``pos``.

    Vocabularies hold hundreds of thousands of short strings. Walking them one by one in Python
    costs ~85 ns each, so this finds, per window, every offset whose 8-byte little-endian value
    is below 256 (a plausible length prefix) with numpy, then checks exactly that they chain:
    each candidate must start where the previous string ends. Whatever the check cannot vouch
    for (long strings, big-endian files, zero bytes inside strings) is walked one string at a
    time, so the result always equals the plain walk.
    """
    u64 = struct.Struct(order + "Q")
    if order != "<":
        return _walk_strings(src, pos, count, u64, key)
    size = src.size
    remaining = count
    start = pos
    while remaining > 0:
        # Size the window from what is left: 16 bytes a string at first (an 8-byte prefix and a
        # short token), then the average seen so far, with a quarter to spare.
        done = count - remaining
        per_string = (pos - start) / done if done else 16.0
        window = min(_WINDOW_MAX, src.window_max, int(remaining * per_string * 1.25) + 4096)
        end = min(size, pos + window)
        length = end - pos
        src.ensure(end)
        buf = src.buf
        if remaining < 64 or length < 16:
            return _walk_strings(src, pos, remaining, u64, key)
        # mask[i]: the 8 bytes at pos + i read as a little-endian u64 are below 256, i.e. they
        # could be a string's length prefix. Its value is then just the low byte.
        mask = np.zeros(length, dtype=bool)
        for shift in range(8):
            n = (length - shift) // 8
            if n > 0:
                words = np.frombuffer(buf, dtype="<u8", count=n, offset=pos + shift)
                mask[shift : shift + 8 * n : 8] = words < 256
        cand = np.flatnonzero(mask)
        low = np.frombuffer(buf, dtype=np.uint8, count=length, offset=pos)
        ends = cand + 8 + low[cand]
        if cand.size == 0 or cand[0] != 0:
            pos = _walk_strings(src, pos, 1, u64, key)
            remaining -= 1
            continue
        broken = np.flatnonzero(cand[1:] != ends[:-1])
        chained = int(broken[0]) + 1 if broken.size else int(cand.size)
        # Only strings that end inside the window are vouched for.
        inside = int(np.searchsorted(ends[:chained], length, side="right"))
        take = min(inside, remaining)
        if take == 0:
            pos = _walk_strings(src, pos, 1, u64, key)
            remaining -= 1
            continue
        pos += int(ends[take - 1])
        remaining -= take
    return pos


_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def split_parts(path: Path) -> tuple[Path, ...]:
    """The parts of a split model that ``path`` belongs to, in order (just ``path`` if unsplit)."""
    match = _SPLIT_RE.match(path.name)
    if match is None:
        return (path,)
    total = int(match["count"])
    if total < 1:
        raise GGUFError(path, "the split file name says the model has 0 parts")
    prefix = match["prefix"]
    parts = tuple(
        path.with_name(f"{prefix}-{i:05d}-of-{total:05d}.gguf") for i in range(1, total + 1)
    )
    missing = [p.name for p in parts if not p.exists()]
    if missing:
        raise GGUFError(path, f"split model part(s) missing: {', '.join(missing)}")
    return parts


def _read_one(path: Path, part: int) -> GGUFFile:
    with Source(path, GGUFError) as src:
        return parse_gguf(src, part)


def parse_gguf(src: Source, part: int = 0) -> GGUFFile:
    """Parse the GGUF header ``src`` holds (part ``part`` of a split model): the one parser for
    local and remote files."""
    path = src.path
    src.need(0, 8, "the magic number and version")
    magic = int.from_bytes(src.buf[0:4], "little")
    if magic != GGUF_MAGIC:
        raise GGUFError(
            path, f"not a GGUF file: magic is {bytes(src.buf[0:4])!r}, expected b'GGUF'"
        )
    version = int.from_bytes(src.buf[4:8], "little")
    order = "<"
    if version > 0xFFFF and int.from_bytes(src.buf[4:8], "big") in (2, 3):
        order, version = ">", int.from_bytes(src.buf[4:8], "big")
    if version == 1:
        raise GGUFError(
            path, "GGUF version 1 is not supported (only 2 and 3); convert the model again"
        )
    if version not in (2, 3):
        raise GGUFError(path, f"unsupported GGUF version {version} (expected 2 or 3)")
    r = _Reader(src, order)
    r.pos = 8
    n_tensors = r.read_u64("the tensor count")
    n_kv = r.read_u64("the metadata count")
    remaining = src.size - r.pos
    if n_kv > remaining // 13:  # key length (8) + one key byte + value type (4)
        raise GGUFError(
            path,
            f"file is truncated or corrupt: header claims {n_kv} metadata entries, "
            f"more than the remaining {remaining} bytes can hold",
        )
    metadata: dict[str, MetadataValue] = {}
    for i in range(n_kv):
        key = r.read_string(f"metadata key #{i}")
        value_type = r.read_u32(f"the type of {key!r}")
        value = r.read_value(value_type, key)
        if key in metadata:
            raise GGUFError(path, f"metadata key {key!r} appears twice")
        metadata[key] = value
    remaining = src.size - r.pos
    if n_tensors > remaining // 24:  # name length (8) + n_dims (4) + type (4) + offset (8)
        raise GGUFError(
            path,
            f"file is truncated or corrupt: header claims {n_tensors} tensors, "
            f"more than the remaining {remaining} bytes can hold",
        )
    raw: list[tuple[str, tuple[int, ...], int, int]] = []
    for i in range(n_tensors):
        name = r.read_string(f"the name of tensor #{i}")
        n_dims = r.read_u32(f"the dimension count of {name!r}")
        if n_dims > GGML_MAX_DIMS:
            raise GGUFError(
                path, f"tensor {name!r} has {n_dims} dimensions (at most {GGML_MAX_DIMS})"
            )
        if n_dims == 0:
            raise GGUFError(path, f"tensor {name!r} has 0 dimensions")
        shape = tuple(r.read_u64(f"the shape of {name!r}") for _ in range(n_dims))
        type_id = r.read_u32(f"the type of {name!r}")
        offset = r.read_u64(f"the offset of {name!r}")
        raw.append((name, shape, type_id, offset))
    alignment_value = metadata.get(Keys.General.ALIGNMENT, GGUF_DEFAULT_ALIGNMENT)
    if (
        not isinstance(alignment_value, int)
        or isinstance(alignment_value, bool)
        or alignment_value <= 0
        or alignment_value & (alignment_value - 1)
    ):
        raise GGUFError(
            path, f"general.alignment is {alignment_value!r}; it must be a power of two"
        )
    alignment = alignment_value
    data_offset = -(-r.pos // alignment) * alignment
    tensors = _tensor_infos(path, raw, alignment, max(0, src.size - data_offset), part)
    return GGUFFile(
        path=path,
        version=version,
        byte_order="little" if order == "<" else "big",
        metadata=metadata,
        tensors=tensors,
        alignment=alignment,
        data_offset=data_offset,
        file_size=src.size,
        parts=(path,),
    )


def _tensor_infos(
    path: Path,
    raw: list[tuple[str, tuple[int, ...], int, int]],
    alignment: int,
    data_size: int,
    part: int,
) -> tuple[GGUFTensor, ...]:
    seen: set[str] = set()
    out: list[GGUFTensor] = []
    for name, shape, type_id, offset in raw:
        if name in seen:
            raise GGUFError(path, f"tensor {name!r} appears twice")
        seen.add(name)
        qtype = ggml_type(type_id)
        if qtype is None:
            raise GGUFError(path, f"tensor {name!r} has unknown ggml type id {type_id}")
        n_elements = 1
        for dim in shape:
            if dim == 0:
                raise GGUFError(path, f"tensor {name!r} has a zero-length dimension {shape!r}")
            n_elements *= dim
            if n_elements > _INT64_MAX:
                raise GGUFError(
                    path,
                    f"tensor {name!r} has shape {shape!r}: its element count overflows 64 bits",
                )
        if shape[0] % qtype.block_size:
            raise GGUFError(
                path,
                f"tensor {name!r} has rows of {shape[0]} elements, not a multiple of "
                f"{qtype.name}'s block of {qtype.block_size}",
            )
        n_bytes = qtype.nbytes(n_elements)
        if offset % alignment:
            raise GGUFError(
                path, f"tensor {name!r} has offset {offset}, not aligned to {alignment} bytes"
            )
        if offset + n_bytes > data_size:
            raise GGUFError(
                path,
                f"tensor {name!r} lies outside the file: {n_bytes} bytes at data offset {offset}, "
                f"but the data section has {data_size} bytes",
            )
        out.append(GGUFTensor(name, shape, type_id, qtype.name, offset, n_elements, n_bytes, part))
    by_offset = sorted(out, key=lambda t: t.offset)
    for a, b in itertools.pairwise(by_offset):
        if a.n_bytes and b.n_bytes and a.offset + a.n_bytes > b.offset:
            raise GGUFError(path, f"tensors {a.name!r} and {b.name!r} overlap")
    return tuple(out)


def join_parts(files: list[GGUFFile], path: Path) -> GGUFFile:
    """One model from the parts of a split GGUF, read in order."""
    if len(files) == 1:
        return files[0]
    first = files[0]
    count = first.metadata.get(Keys.Split.LLM_KV_SPLIT_COUNT)
    if isinstance(count, int) and count != len(files):
        raise GGUFError(path, f"split.count is {count}, but the file names say {len(files)} parts")
    names: set[str] = set()
    tensors: list[GGUFTensor] = []
    for f in files:
        for t in f.tensors:
            if t.name in names:
                raise GGUFError(f.path, f"tensor {t.name!r} appears in more than one part")
            names.add(t.name)
            tensors.append(t)
    return GGUFFile(
        path=first.path,
        version=first.version,
        byte_order=first.byte_order,
        metadata=first.metadata,
        tensors=tuple(tensors),
        alignment=first.alignment,
        data_offset=first.data_offset,
        file_size=sum(f.file_size for f in files),
        parts=tuple(f.path for f in files),
    )


def read_gguf(path: str | Path) -> GGUFFile:
    """Read the header of a GGUF file, or of every part of a split model.

    For a split model, ``metadata`` is the first part's and ``tensors`` lists every part's
    tensors. Raises :class:`membudget.GGUFError` for anything malformed.
    """
    path = Path(path)
    parts = split_parts(path)
    if len(parts) == 1:
        return _read_one(path, 0)
    files = []
    for i, p in enumerate(parts):
        files.append(_read_one(p, i))
        advance(i + 1, len(parts), p.name)
    return join_parts(files, path)
