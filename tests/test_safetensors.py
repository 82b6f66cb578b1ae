"""The header-only safetensors reader against the safetensors library itself."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from membudget import SafetensorsError
from membudget.readers.safetensors import (
    DTYPE_BITS,
    HEADER_CAP,
    read_safetensors,
    read_safetensors_dir,
)


def _raw(path: Path, header: dict[str, object], data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_matches_the_safetensors_library(tmp_path: Path) -> None:
    tensors: dict[str, np.ndarray[Any, Any]] = {
        "a": np.zeros((3, 5), dtype=np.float16),
        "b": np.zeros((7,), dtype=np.float32),
        "c": np.zeros((2, 2, 2), dtype=np.int8),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    ours = read_safetensors(path)
    with safe_open(str(path), framework="numpy") as ref:
        assert {t.name for t in ours.tensors} == set(ref.keys())
        for t in ours.tensors:
            assert list(t.shape) == list(ref.get_slice(t.name).get_shape())
            assert t.dtype == ref.get_slice(t.name).get_dtype()
    assert ours.metadata == {"format": "pt"}
    assert ours.tensor_bytes == 3 * 5 * 2 + 7 * 4 + 8


@pytest.mark.parametrize(
    ("dtype", "shape", "n_bytes"),
    [
        pytest.param("F8_E4M3", [4, 8], 32, id="fp8 e4m3"),
        pytest.param("F8_E5M2", [4], 4, id="fp8 e5m2"),
        pytest.param("F8_E8M0", [4], 4, id="e8m0 scales"),
        pytest.param("F4", [4, 8], 16, id="fp4 packs two per byte"),
        pytest.param("F6_E2M3", [4, 4], 12, id="fp6 e2m3"),
        pytest.param("F6_E3M2", [8], 6, id="fp6 e3m2"),
        pytest.param("BF16", [3], 6, id="bf16"),
        pytest.param("C64", [2], 16, id="complex64"),
    ],
)
def test_every_dtype_family(tmp_path: Path, dtype: str, shape: list[int], n_bytes: int) -> None:
    path = _raw(
        tmp_path / "x.safetensors",
        {"t": {"dtype": dtype, "shape": shape, "data_offsets": [0, n_bytes]}},
        b"\0" * n_bytes,
    )
    assert read_safetensors(path).tensors[0].n_bytes == n_bytes
    assert dtype in DTYPE_BITS


def test_sharded_checkpoint_through_the_index(tmp_path: Path) -> None:
    save_file(
        {"x": np.zeros((4,), dtype=np.float32)}, str(tmp_path / "model-00001-of-00002.safetensors")
    )
    save_file(
        {"y": np.zeros((8,), dtype=np.float16)}, str(tmp_path / "model-00002-of-00002.safetensors")
    )
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "x": "model-00001-of-00002.safetensors",
                    "y": "model-00002-of-00002.safetensors",
                }
            }
        )
    )
    ckpt = read_safetensors_dir(tmp_path)
    assert ckpt is not None
    assert ckpt.tensor_bytes == 16 + 16
    assert len(ckpt.files) == 2


@pytest.mark.parametrize(
    ("build", "fragment"),
    [
        pytest.param(
            lambda p: p.write_bytes(struct.pack("<Q", 10**9) + b"{}"),
            "cap",
            id="header over the cap",
        ),
        pytest.param(
            lambda p: p.write_bytes(struct.pack("<Q", 500) + b"{}"),
            "past the end",
            id="header past the end",
        ),
        pytest.param(
            lambda p: p.write_bytes(struct.pack("<Q", 5) + b"{nope"),
            "not valid JSON",
            id="invalid JSON",
        ),
        pytest.param(
            lambda p: p.write_bytes(b"\x01\x02"), "truncated", id="shorter than the length"
        ),
        pytest.param(
            lambda p: _raw(
                p, {"t": {"dtype": "F16", "shape": [4], "data_offsets": [0, 64]}}, b"\0" * 8
            ),
            "outside",
            id="data offsets out of range",
        ),
        pytest.param(
            lambda p: _raw(
                p,
                {
                    "a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 8]},
                    "b": {"dtype": "F16", "shape": [4], "data_offsets": [4, 12]},
                },
                b"\0" * 12,
            ),
            "overlap",
            id="overlapping tensors",
        ),
        pytest.param(
            lambda p: _raw(
                p, {"t": {"dtype": "Q7", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4
            ),
            "unknown dtype 'Q7'",
            id="unknown dtype",
        ),
        pytest.param(
            lambda p: _raw(
                p, {"t": {"dtype": "F16", "shape": [4], "data_offsets": [0, 6]}}, b"\0" * 6
            ),
            "needs 8 bytes",
            id="size disagrees with shape",
        ),
    ],
)
def test_malformed_files(tmp_path: Path, build: object, fragment: str) -> None:
    path = tmp_path / "bad.safetensors"
    build(path)  # type: ignore[operator]
    with pytest.raises(SafetensorsError, match=fragment) as info:
        read_safetensors(path)
    assert "bad.safetensors'" in str(info.value)  # the path as given, whole
    assert HEADER_CAP == 100_000_000
