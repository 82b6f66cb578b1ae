"""The header-only GGUF reader against gguf-py's own reader, on files gguf-py wrote."""

from __future__ import annotations

import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as Q
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membudget import GGUFError
from membudget.readers._binary import Source
from membudget.readers.gguf import ArrayInfo, read_gguf, skip_strings
from tests.ggufs import Tiny, write_model


def _reference(path: Path) -> dict[str, tuple[str, tuple[int, ...], int, int]]:
    r = gguf.GGUFReader(path)
    return {
        t.name: (
            t.tensor_type.name,
            tuple(int(d) for d in t.shape),
            int(t.n_bytes),
            int(t.data_offset),
        )
        for t in r.tensors
    }


@pytest.mark.parametrize(
    "qtype",
    [Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_K, Q.Q6_K, Q.IQ4_XS, Q.TQ2_0, Q.Q1_0, Q.MXFP4],
    ids=lambda q: q.name,
)
def test_tensors_match_gguf_py(tmp_path: Path, qtype: Q) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(matrix_type=qtype))
    ours = read_gguf(path)
    ref = _reference(path)
    assert {t.name for t in ours.tensors} == set(ref)
    for t in ours.tensors:
        type_name, shape, n_bytes, data_offset = ref[t.name]
        assert t.type_name == type_name, t.name
        assert t.shape == shape, t.name
        assert t.n_bytes == n_bytes, t.name
        assert ours.data_offset + t.offset == data_offset, t.name


def test_metadata_matches_gguf_py(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(n_head_kv=(2, 0, 1), n_layer=3))
    ours = read_gguf(path)
    r = gguf.GGUFReader(path)
    for key, fld in r.fields.items():
        if key.startswith("GGUF."):
            continue
        value = ours.metadata[key]
        if isinstance(value, ArrayInfo):
            assert value.length == len(fld.data), key
        else:
            want = fld.contents()
            assert value == (tuple(want) if isinstance(want, list) else want), key
    assert ours.metadata["llama.attention.head_count_kv"] == (2, 0, 1)
    assert ours.architecture == "llama"
    assert ours.version == 3


def test_every_value_type(tmp_path: Path) -> None:
    w = gguf.GGUFWriter(tmp_path / "v.gguf", "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_float32("t.f32", 1.5)
    w.add_uint64("t.u64", 2**63 + 5)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.25)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo")
    w.add_array("t.arr_i", [1, 2, 3])
    w.add_array("t.arr_s", ["a", "bc"])
    w.add_array("t.arr_b", [True, False])
    w.add_array("t.arr_f", [0.5, 1.5])
    w.add_tensor("x", np.zeros((2, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    md = read_gguf(tmp_path / "v.gguf").metadata
    assert md["t.u8"] == 200
    assert md["t.i8"] == -100
    assert md["t.u16"] == 60000
    assert md["t.i16"] == -30000
    assert md["t.u32"] == 4_000_000_000
    assert md["t.i32"] == -2_000_000_000
    assert md["t.f32"] == 1.5
    assert md["t.u64"] == 2**63 + 5
    assert md["t.i64"] == -(2**62)
    assert md["t.f64"] == 2.25
    assert md["t.bool"] is True
    assert md["t.str"] == "héllo"
    assert md["t.arr_i"] == (1, 2, 3)
    assert md["t.arr_s"] == ("a", "bc")
    assert md["t.arr_b"] == (True, False)
    assert md["t.arr_f"] == (0.5, 1.5)


def test_tokenizer_arrays_are_skipped_not_materialised(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny(n_vocab=4096))
    md = read_gguf(path).metadata
    assert md["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 4096)
    assert md["tokenizer.ggml.scores"] == ArrayInfo("FLOAT32", 4096)
    assert md["tokenizer.ggml.token_type"] == ArrayInfo("INT32", 4096)


def test_big_endian_file(tmp_path: Path) -> None:
    path = write_model(tmp_path / "be.gguf", Tiny(), endianess=gguf.GGUFEndian.BIG)
    le = read_gguf(write_model(tmp_path / "le.gguf", Tiny()))
    be = read_gguf(path)
    assert be.byte_order == "big"
    assert [(t.name, t.shape, t.n_bytes) for t in be.tensors] == [
        (t.name, t.shape, t.n_bytes) for t in le.tensors
    ]
    assert be.metadata["llama.block_count"] == 2


def test_version_2_is_read(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny())
    data = bytearray(path.read_bytes())
    data[4:8] = struct.pack("<I", 2)
    (tmp_path / "v2.gguf").write_bytes(bytes(data))
    assert read_gguf(tmp_path / "v2.gguf").version == 2


def test_split_model_parts_are_summed(tmp_path: Path) -> None:
    m = Tiny(n_layer=2)
    from tests.ggufs import llama_tensors

    tensors = llama_tensors(m)
    half = len(tensors) // 2
    whole = read_gguf(write_model(tmp_path / "whole.gguf", m))
    for i, part in enumerate((tensors[:half], tensors[half:]), start=1):
        extra = {"split.no": i - 1, "split.count": 2, "split.tensors.count": len(tensors)}
        m_part = Tiny(n_layer=2, extra=dict(extra.items()))
        write_model(tmp_path / f"model-{i:05d}-of-00002.gguf", m_part, tensors=part)
    split = read_gguf(tmp_path / "model-00002-of-00002.gguf")
    assert len(split.parts) == 2
    assert split.tensor_bytes == whole.tensor_bytes
    assert {t.name for t in split.tensors} == {t.name for t in whole.tensors}


def test_split_model_with_a_missing_part(tmp_path: Path) -> None:
    write_model(tmp_path / "model-00001-of-00003.gguf", Tiny())
    with pytest.raises(GGUFError, match=r"model-00002-of-00003\.gguf"):
        read_gguf(tmp_path / "model-00001-of-00003.gguf")


def test_real_gemma_vocabulary(gemma_gguf: Path) -> None:
    f = read_gguf(gemma_gguf)
    assert f.metadata["tokenizer.ggml.tokens"] == ArrayInfo("STRING", 262_144)
    ref = _reference(gemma_gguf)
    assert sum(t.n_bytes for t in f.tensors) == sum(v[2] for v in ref.values())
    assert len(f.tensors) == len(ref) == 236


def _string_array(strings: list[bytes]) -> bytes:
    return b"".join(struct.pack("<Q", len(s)) + s for s in strings)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    strings=st.lists(
        st.one_of(
            st.binary(max_size=12),
            st.binary(min_size=250, max_size=300),
            st.just(b""),
            st.just(b"\x00" * 9),
        ),
        min_size=0,
        max_size=400,
    ),
    tail=st.binary(max_size=64),
)
def test_skip_strings_equals_the_plain_walk(
    tmp_path: Path, strings: list[bytes], tail: bytes
) -> None:
    """Skipping a string array always ends exactly where walking it one string at a time does,
    whatever the strings hold (empty, zero bytes, longer than 255) and whatever follows."""
    body = _string_array(strings)
    path = tmp_path / "s.bin"
    path.write_bytes(b"P" * 3 + body + tail + b"\x00" * 8)
    with Source(path, GGUFError) as src:
        assert skip_strings(src, 3, len(strings), "<", "k") == 3 + len(body)


def test_skip_strings_reports_truncation(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    path.write_bytes(_string_array([b"abc"] * 100)[:-2])
    with Source(path, GGUFError) as src, pytest.raises(GGUFError, match="truncated"):
        skip_strings(src, 0, 100, "<", "tokenizer.ggml.tokens")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        pytest.param(lambda b: b"GGUX" + b[4:], "magic", id="wrong magic"),
        pytest.param(lambda b: b[:4] + struct.pack("<I", 1) + b[8:], "version 1", id="version 1"),
        pytest.param(lambda b: b[:4] + struct.pack("<I", 7) + b[8:], "version 7", id="version 7"),
        pytest.param(lambda b: b[:6], "truncated", id="truncated in the version"),
        pytest.param(lambda b: b[:30], "truncated", id="truncated in the metadata"),
        pytest.param(
            lambda b: b[:8] + struct.pack("<Q", 2**60) + b[16:],
            "tensors",
            id="tensor count near 2**60",
        ),
        pytest.param(
            lambda b: b[:16] + struct.pack("<Q", 2**63 - 1) + b[24:],
            "metadata entries",
            id="kv count near 2**63",
        ),
    ],
)
def test_malformed_headers(tmp_path: Path, mutate: object, fragment: str) -> None:
    good = write_model(tmp_path / "good.gguf", Tiny()).read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(mutate(good))  # type: ignore[operator]
    with pytest.raises(GGUFError, match=fragment) as info:
        read_gguf(bad)
    assert "bad.gguf'" in str(info.value)  # the path as given, whole


def test_unknown_tensor_type_names_tensor_and_id(tmp_path: Path) -> None:
    path = write_model(tmp_path / "m.gguf", Tiny())
    f = read_gguf(path)
    first = f.tensors[0]
    data = bytearray(path.read_bytes())
    name = first.name.encode()
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    type_at = at + 4 + 8 * n_dims
    data[type_at : type_at + 4] = struct.pack("<I", 999)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=rf"{first.name}'.*999"):
        read_gguf(path)
