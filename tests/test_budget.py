"""MemoryBudget against docs/reference-estimator.md: a second, independent implementation and the worked examples."""

from __future__ import annotations

import copy
import math
import pickle
import random
import threading
from dataclasses import FrozenInstanceError
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from membudget import InvalidArgumentError, MemoryBudget

MIB = 1 << 20
U64 = (1 << 64) - 1


class Expected(NamedTuple):
    total: int
    weights: int
    overhead: int
    available: int
    kv_budget: int
    summary: str


def spec_estimate(mb: int, params: int, bits: float) -> Expected:
    """docs/reference-estimator.md written out again, independently: numpy's float32 for the rounding, Fractions for
    the integer steps, and Python's own rounding for the summary."""
    b32 = float(np.float32(bits))
    product = float(params) * b32  # float64 multiply, then divide by 8.0, as the reference does
    weights = min(math.trunc(product / 8.0), U64)
    total = mb * 1024 * 1024
    overhead = min(256 * MIB, total // 10)
    after_weights = total - weights if total > weights else 0
    available = after_weights - overhead if after_weights > overhead else 0
    kv = int(Fraction(available * 4, 5))  # floor for non-negatives

    def r(n: int) -> str:
        return str(round(n / 1048576))

    summary = (
        f"total={r(total)}MB, weights={r(weights)}MB, kv_budget={r(kv)}MB, "
        f"overhead={r(overhead)}MB, available={r(available)}MB"
    )
    return Expected(total, weights, overhead, available, kv, summary)


def spec_max_context(kv_budget: int, layers: int, heads: int, dim: int) -> int:
    per_token = layers * heads * dim * 4
    return 0 if per_token == 0 else kv_budget // per_token


class Vector(NamedTuple):
    mb: int
    params: int
    bits: float
    layers: int
    heads: int
    dim: int


def _vectors() -> list[Vector]:
    rng = random.Random(20261126)
    common_bits = [
        0.0,
        1.0,
        1.125,
        1.58,
        1.5625,
        2.0,
        2.1,
        2.5625,
        3.4375,
        4.5,
        4.8,
        5.5,
        6.5625,
        8.0,
        8.5,
        16.0,
        32.0,
        0.3,
        1e-7,
        123.456,
    ]
    mbs = [0, 1, 9, 10, 100, 2559, 2560, 2561, 4096, 8192, 16384, 24576, 65536, 81920, 1 << 20]
    params = [
        0,
        1,
        7,
        270_000_000,
        1_000_000_000,
        1_700_000_000,
        8_000_000_000,
        70_000_000_000,
        405_000_000_000,
        10**12,
        10**13,
    ]
    geoms = [
        (0, 32, 128),
        (32, 0, 128),
        (32, 32, 0),
        (1, 1, 1),
        (28, 16, 128),
        (32, 32, 128),
        (36, 32, 128),
        (80, 64, 128),
        (126, 128, 128),
        (61, 128, 192),
    ]
    out = [
        Vector(rng.choice(mbs), rng.choice(params), rng.choice(common_bits), *rng.choice(geoms))
        for _ in range(120)
    ]
    out += [
        Vector(
            rng.randrange(0, 1 << 22),
            rng.randrange(0, 10**13 + 1),
            rng.uniform(0.0, 40.0),
            rng.randrange(0, 200),
            rng.randrange(0, 256),
            rng.randrange(0, 512),
        )
        for _ in range(120)
    ]
    # Saturation: weights larger than the memory; overhead below and above the 256 MiB cap.
    out += [Vector(mb, 10**13, 16.0, 32, 32, 128) for mb in (0, 1, 1024, 2560)]
    out += [Vector(mb, 0, 0.0, 32, 8, 128) for mb in (2559, 2560, 2561, 1 << 30)]
    return out


VECTORS = _vectors()


def test_the_table_is_large_enough() -> None:
    assert len(VECTORS) >= 200


@pytest.mark.parametrize("v", VECTORS, ids=[f"v{i}" for i in range(len(VECTORS))])
def test_estimate_matches_the_independent_spec(v: Vector) -> None:
    want = spec_estimate(v.mb, v.params, v.bits)
    got = MemoryBudget.estimate(v.mb, v.params, v.bits)
    assert (
        got.total_system_bytes,
        got.model_weight_bytes,
        got.runtime_overhead,
        got.available_bytes,
        got.kv_cache_budget,
        got.summary(),
    ) == want
    assert got.max_context_length(v.layers, v.heads, v.dim) == spec_max_context(
        want.kv_budget, v.layers, v.heads, v.dim
    )


@pytest.mark.parametrize(
    ("args", "summary", "available", "kv", "geometry", "max_ctx"),
    [
        pytest.param(
            (8192, 1_000_000_000, 1.125),
            "total=8192MB, weights=134MB, kv_budget=6242MB, overhead=256MB, available=7802MB",
            8180874136,
            6544699308,
            (32, 32, 128),
            12483,
            id="reference-estimator.md worked example",
        ),
    ],
)
def test_spec_worked_examples(
    args: tuple[int, int, float],
    summary: str,
    available: int,
    kv: int,
    geometry: tuple[int, int, int],
    max_ctx: int,
) -> None:
    b = MemoryBudget.estimate(*args)
    assert b.summary() == summary
    assert b.available_bytes == available
    assert b.kv_cache_budget == kv
    assert b.max_context_length(*geometry) == max_ctx


@pytest.mark.parametrize(
    ("bits", "weights"),
    [
        pytest.param(2.1, 262_499_988, id="2.1 is 2.0999999046325684 as float32"),
        pytest.param(1.125, 140_625_000, id="1.125 is exact in float32"),
        pytest.param(1.58, 197_500_005, id="1.58 is 1.5800000429153442 as float32"),
    ],
)
def test_float32_rounding_of_bits(bits: float, weights: int) -> None:
    assert MemoryBudget.estimate(1024, 1_000_000_000, bits).model_weight_bytes == weights


def test_parameter_counts_up_to_ten_trillion() -> None:
    b = MemoryBudget.estimate(1 << 30, 10**13, 16.0)
    assert b.model_weight_bytes == 2 * 10**13
    assert b.total_system_bytes == 1 << 50


def test_fits_context_agrees_with_max_context() -> None:
    b = MemoryBudget.estimate(8192, 1_000_000_000, 1.125)
    assert b.fits_context(12483, 32, 32, 128)
    assert not b.fits_context(12484, 32, 32, 128)
    assert b.fits_context(2**64 - 1, 0, 32, 128), "no KV per token: every context fits"


def test_zero_geometry_gives_zero_context() -> None:
    b = MemoryBudget.estimate(8192, 1, 1.0)
    assert b.max_context_length(0, 32, 128) == 0
    assert b.max_context_length(32, 0, 128) == 0
    assert b.max_context_length(32, 32, 0) == 0


def test_value_semantics() -> None:
    a = MemoryBudget.estimate(8192, 10**9, 1.125)
    b = MemoryBudget.estimate(8192, 10**9, 1.125)
    assert a == b
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert copy.copy(a) == a
    assert copy.deepcopy(a) == a
    assert pickle.loads(pickle.dumps(a)) == a
    assert a != MemoryBudget.estimate(8192, 10**9, 1.0)
    with pytest.raises(FrozenInstanceError):
        a.available_bytes = 0  # type: ignore[misc]


def test_shared_between_threads() -> None:
    b = MemoryBudget.estimate(16384, 8 * 10**9, 4.5)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(200):
            value = b.max_context_length(32, 8, 128)
            with lock:
                results.append(value)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {b.max_context_length(32, 8, 128)}
    assert len(results) == 1600


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        pytest.param((-1, 10, 1.0), "total_available_mb", id="negative memory"),
        pytest.param((True, 10, 1.0), "total_available_mb", id="bool memory"),
        pytest.param((1.5, 10, 1.0), "total_available_mb", id="fractional memory"),
        pytest.param((1024, -5, 1.0), "model_params", id="negative params"),
        pytest.param((1024, 1.5, 1.0), "model_params", id="fractional params"),
        pytest.param((1024, False, 1.0), "model_params", id="bool params"),
        pytest.param((1024, float("nan"), 1.0), "model_params", id="NaN params"),
        pytest.param((1024, "10", 1.0), "model_params", id="string params"),
        pytest.param((1024, 2**64, 1.0), "model_params", id="params beyond u64"),
        pytest.param((1024, 10, float("nan")), "bits_per_weight", id="NaN bits"),
        pytest.param((1024, 10, float("inf")), "bits_per_weight", id="infinite bits"),
        pytest.param((1024, 10, -0.5), "bits_per_weight", id="negative bits"),
        pytest.param((1024, 10, True), "bits_per_weight", id="bool bits"),
        pytest.param((1024, 10, 1e39), "bits_per_weight", id="bits beyond float32"),
        pytest.param((1024, 10, "4"), "bits_per_weight", id="string bits"),
    ],
)
def test_invalid_estimate_arguments(args: tuple[object, object, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as info:
        MemoryBudget.estimate(*args)  # type: ignore[arg-type]
    assert isinstance(info.value, InvalidArgumentError)
    names = ("total_available_mb", "model_params", "bits_per_weight")
    assert repr(dict(zip(names, args, strict=True))[fragment]) in str(info.value)


@pytest.mark.parametrize(
    ("geometry", "fragment"),
    [
        pytest.param((-1, 32, 128), "num_layers", id="negative layers"),
        pytest.param((32, 1.5, 128), "num_heads", id="fractional heads"),
        pytest.param((32, 32, True), "head_dim", id="bool head dim"),
    ],
)
def test_invalid_geometry(geometry: tuple[object, object, object], fragment: str) -> None:
    b = MemoryBudget.estimate(1024, 10, 1.0)
    with pytest.raises(InvalidArgumentError, match=fragment):
        b.max_context_length(*geometry)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=fragment):
        b.fits_context(10, *geometry)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="ctx_len"):
        b.fits_context(-1, 1, 1, 1)


def test_direct_construction_rejects_negative_fields() -> None:
    with pytest.raises(InvalidArgumentError, match="available_bytes"):
        MemoryBudget(1, -1, 0, 0, 0)


@given(
    mb=st.integers(0, 1 << 24),
    params=st.integers(0, 10**13),
    bits=st.floats(0.0, 64.0, allow_nan=False, allow_infinity=False),
)
def test_parts_never_exceed_the_total(mb: int, params: int, bits: float) -> None:
    """The overhead, the available bytes and the KV budget never exceed the total, and the KV
    budget is exactly four fifths of what is available, rounded down."""
    b = MemoryBudget.estimate(mb, params, bits)
    assert b.runtime_overhead + b.available_bytes <= b.total_system_bytes
    assert b.kv_cache_budget == b.available_bytes * 4 // 5
    assert b.model_weight_bytes >= 0


@given(
    mb=st.integers(0, 1 << 20),
    extra=st.integers(0, 1 << 20),
    params=st.integers(0, 10**12),
    bits=st.floats(0.0, 32.0, allow_nan=False),
    layers=st.integers(1, 128),
    heads=st.integers(1, 128),
    dim=st.integers(1, 256),
)
def test_more_memory_never_lowers_max_context(
    mb: int, extra: int, params: int, bits: float, layers: int, heads: int, dim: int
) -> None:
    """More memory never lowers the largest context, and the largest context fits while one
    more token does not."""
    small = MemoryBudget.estimate(mb, params, bits)
    big = MemoryBudget.estimate(mb + extra, params, bits)
    n = small.max_context_length(layers, heads, dim)
    assert big.max_context_length(layers, heads, dim) >= n
    assert small.fits_context(n, layers, heads, dim)
    assert not small.fits_context(n + 1, layers, heads, dim)
