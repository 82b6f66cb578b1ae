"""A short fuzzing run over the GGUF, safetensors and config readers: whatever the bytes, the
loader returns a model or raises one of the documented exceptions (``membudget.errors``)."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from membudget.loader import load_model
from tests.fuzz import ALLOWED, TARGETS, seeds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[bytes]]:
    return seeds(tmp_path_factory.mktemp("seeds"))


@pytest.mark.parametrize("target", sorted(TARGETS))
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seed=st.integers(0, 2**32 - 1), pick=st.integers(0, 2))
def test_readers_raise_only_documented_errors(
    target: str, seed: int, pick: int, corpus: dict[str, list[bytes]], tmp_path: Path
) -> None:
    """Loading mutated bytes never raises anything outside the documented tree."""
    run, mutate = TARGETS[target]
    base = corpus[target][pick % len(corpus[target])]
    data = mutate(base, random.Random(seed))
    with contextlib.suppress(ALLOWED):
        run(data, tmp_path)


@pytest.mark.parametrize("target", sorted(TARGETS))
@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=512))
def test_random_bytes_are_refused_cleanly(target: str, data: bytes, tmp_path: Path) -> None:
    """Bytes from nowhere are refused with a documented error (or, rarely, read)."""
    run, _ = TARGETS[target]
    with contextlib.suppress(ALLOWED):
        run(data, tmp_path)


FINDINGS = sorted((Path(__file__).parent / "data" / "fuzz").glob("*"))


@pytest.mark.parametrize("path", FINDINGS, ids=[p.name for p in FINDINGS])
def test_past_findings_stay_fixed(path: Path) -> None:
    """Inputs ``benchmarks/fuzz.py`` once found (named after what they broke) now get a
    documented error. gguf-buffererror-string-array: closing the map while a numpy view of it
    was alive raised BufferError."""
    with contextlib.suppress(ALLOWED):
        load_model(path)
