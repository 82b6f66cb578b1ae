"""A header-only safetensors reader.

A safetensors file is an 8-byte little-endian header length, a JSON header, then tensor data.
Only the header is read, and only after its claimed length is checked against a cap and the file's
real size. Sharded checkpoints are read through ``model.safetensors.index.json``.
"""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from membudget.errors import SafetensorsError
from membudget.progress import advance
from membudget.readers._binary import Source, parse_json, read_small_file

__all__ = [
    "DTYPE_BITS",
    "HEADER_CAP",
    "SafetensorsFile",
    "SafetensorsTensor",
    "index_shards",
    "join_shards",
    "parse_safetensors",
    "read_safetensors",
    "read_safetensors_dir",
]

# The safetensors library refuses headers over 100,000,000 bytes (safetensors/src/tensor.rs,
# MAX_HEADER_SIZE); so do we.
HEADER_CAP = 100_000_000

# Bits per element of every safetensors dtype (safetensors/src/tensor.rs, Dtype::bitsize).
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8,
    "F4": 4,
    "F6_E2M3": 6,
    "F6_E3M2": 6,
    "U8": 8,
    "I8": 8,
    "F8_E5M2": 8,
    "F8_E4M3": 8,
    "F8_E8M0": 8,
    "I16": 16,
    "U16": 16,
    "F16": 16,
    "BF16": 16,
    "I32": 32,
    "U32": 32,
    "F32": 32,
    "C64": 64,
    "F64": 64,
    "I64": 64,
    "U64": 64,
}
_U64 = struct.Struct("<Q")


@dataclass(frozen=True, slots=True)
class SafetensorsTensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    n_bytes: int
    file: str

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class SafetensorsFile:
    """The tensors of one file or of a whole sharded checkpoint."""

    path: Path
    tensors: tuple[SafetensorsTensor, ...]
    metadata: dict[str, str]
    files: tuple[Path, ...]

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)


def _fail(path: Path, problem: str) -> SafetensorsError:
    return SafetensorsError(path, problem)


def read_safetensors(path: str | Path) -> SafetensorsFile:
    """Read one safetensors file's header. Raises :class:`membudget.SafetensorsError`."""
    with Source(Path(path), SafetensorsError) as src:
        return parse_safetensors(src)


def parse_safetensors(src: Source) -> SafetensorsFile:
    """Parse the header ``src`` holds: the one parser for local and remote files."""
    path = src.path
    (length,) = src.unpack(_U64, 0, "the header length")
    assert isinstance(length, int)
    if length > HEADER_CAP:
        raise _fail(path, f"header length {length} is over the {HEADER_CAP}-byte cap")
    if length > src.size - 8:
        raise _fail(path, f"header length {length} runs past the end of the {src.size}-byte file")
    raw = src.bytes_at(8, length, "the JSON header")
    data_size = src.size - 8 - length
    header = parse_json(raw, path, SafetensorsError, "the header")
    if not isinstance(header, dict):
        raise _fail(path, f"the header is a JSON {type(header).__name__}, not an object")
    metadata_raw = header.pop("__metadata__", {})
    metadata = (
        {str(k): str(v) for k, v in metadata_raw.items()} if isinstance(metadata_raw, dict) else {}
    )
    tensors: list[SafetensorsTensor] = []
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _fail(path, f"tensor {name!r} is described by {info!r}, not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in DTYPE_BITS:
            raise _fail(path, f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise _fail(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offsets, list)
            or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise _fail(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_size:
            raise _fail(
                path,
                f"tensor {name!r} has data_offsets {offsets!r} outside the {data_size}-byte data section",
            )
        n_bits = math.prod(shape) * DTYPE_BITS[dtype]
        if n_bits % 8 or n_bits // 8 != end - begin:
            raise _fail(
                path,
                f"tensor {name!r} ({dtype}, shape {shape}) needs {n_bits / 8:g} bytes, "
                f"but its data_offsets span {end - begin}",
            )
        spans.append((begin, end, name))
        tensors.append(SafetensorsTensor(name, dtype, tuple(shape), end - begin, path.name))
    spans.sort()
    for (_, a_end, a_name), (b_begin, _, b_name) in itertools.pairwise(spans):
        if a_end > b_begin:
            raise _fail(path, f"tensors {a_name!r} and {b_name!r} overlap")
    return SafetensorsFile(path, tuple(tensors), metadata, (path,))


def index_shards(data: bytes, index: Path) -> list[str]:
    """The shard file names a ``model.safetensors.index.json`` maps its tensors to."""
    parsed = parse_json(data, index, SafetensorsError, "the index")
    weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
    if not isinstance(weight_map, dict):
        raise _fail(index, "the index has no 'weight_map' object")
    names = sorted({str(v) for v in weight_map.values()})
    for n in names:
        if Path(n).name != n:
            raise _fail(index, f"shard name {n!r} points outside the checkpoint directory")
    return names


def join_shards(files: list[SafetensorsFile], directory: Path) -> SafetensorsFile:
    """One checkpoint from its shards' headers; a tensor in two shards is refused."""
    seen: set[str] = set()
    tensors: list[SafetensorsTensor] = []
    for f in files:
        for t in f.tensors:
            if t.name in seen:
                raise _fail(f.path, f"tensor {t.name!r} appears in more than one shard")
            seen.add(t.name)
            tensors.append(t)
    return SafetensorsFile(
        directory, tuple(tensors), files[0].metadata, tuple(f.path for f in files)
    )


def read_safetensors_dir(directory: str | Path) -> SafetensorsFile | None:
    """Read every shard of the checkpoint in ``directory``; ``None`` if it has no safetensors.

    The shards are the files ``model.safetensors.index.json`` names, or else every
    ``*.safetensors`` file in the directory.
    """
    directory = Path(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        names = index_shards(read_small_file(index, SafetensorsError), index)
        shards = [directory / n for n in names]
    else:
        shards = sorted(directory.glob("*.safetensors"))
    if not shards:
        return None
    files = []
    for i, p in enumerate(shards):
        files.append(read_safetensors(p))
        advance(i + 1, len(shards), p.name)
    return join_shards(files, directory)
