"""Sizes people type, and sizes we print: GiB and GB are never the same thing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from membudget import SizeParseError, format_bytes, parse_size
from membudget.units import GB, GIB


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("8GiB", 8 * GIB, id="binary, no space"),
        pytest.param("8 GiB", 8 * GIB, id="binary, space"),
        pytest.param("8gib", 8 * GIB, id="binary units are unambiguous in any case"),
        pytest.param("8GB", 8 * GB, id="decimal gigabytes"),
        pytest.param("8 GB", 8_000_000_000, id="decimal with space"),
        pytest.param("8gb", 8 * GB, id="decimal as people type it"),
        pytest.param("8 gb", 8 * GB, id="lower-case gb with a space"),
        pytest.param("512mb", 512_000_000, id="lower-case mb"),
        pytest.param("8192MiB", 8 * GIB, id="MiB"),
        pytest.param("1.5 TiB", 1_649_267_441_664, id="fractional TiB"),
        pytest.param("1.5TB", 1_500_000_000_000, id="fractional TB"),
        pytest.param("8589934592", 8 * GIB, id="bare integer is bytes"),
        pytest.param("512 B", 512, id="bytes with unit"),
        pytest.param("4 KiB", 4096, id="KiB"),
        pytest.param("4 kB", 4000, id="kB"),
        pytest.param("4 KB", 4000, id="KB read as kilobytes"),
        pytest.param("0.1 KiB", 102, id="fractions of a byte round down"),
        pytest.param("  16GiB  ", 16 * GIB, id="surrounding spaces"),
        pytest.param(4096, 4096, id="an int passes through"),
        pytest.param("18014398509481161 TiB", 18014398509481161 * 2**40, id="exact beyond float"),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("8G", id="bare G is ambiguous"),
        pytest.param("8 g", id="lower-case g"),
        pytest.param("8 b", id="lower-case b is bits"),
        pytest.param("", id="empty"),
        pytest.param("GiB", id="no number"),
        pytest.param("-8GiB", id="negative"),
        pytest.param("8.5", id="fraction of a byte without unit"),
        pytest.param("1e9", id="scientific notation"),
        pytest.param("nan GiB", id="nan"),
        pytest.param("inf", id="inf"),
        pytest.param("8 GiB 4 MiB", id="two sizes"),
        pytest.param("8 XiB", id="unknown binary unit"),
    ],
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(SizeParseError, match="8GiB") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize(("text", "fix"), [("8G", "8GiB"), ("8 g", "8GB"), ("4K", "4KiB")])
def test_a_bare_prefix_is_refused_with_its_fix(text: str, fix: str) -> None:
    """Only the bare prefix is ambiguous (GiB or GB?); the message offers both spellings."""
    with pytest.raises(SizeParseError, match="ambiguous") as info:
        parse_size(text)
    assert fix in str(info.value)


@pytest.mark.parametrize("value", [-1, True, 1.5, None])
def test_parse_size_rejects_non_strings(value: object) -> None:
    with pytest.raises(SizeParseError):
        parse_size(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("n", "system", "text"),
    [
        pytest.param(0, "binary", "0 B", id="zero"),
        pytest.param(1023, "binary", "1023 B", id="below a KiB"),
        pytest.param(1536, "binary", "1.50 KiB", id="KiB"),
        pytest.param(8 * GIB, "binary", "8.00 GiB", id="GiB"),
        pytest.param(8 * GIB, "decimal", "8.59 GB", id="the same bytes in GB"),
        pytest.param(8 * GB, "decimal", "8.00 GB", id="GB"),
        pytest.param(8 * GB, "binary", "7.45 GiB", id="GB bytes in GiB"),
        pytest.param(-2 * GIB, "binary", "-2.00 GiB", id="negative keeps its sign"),
    ],
)
def test_format_bytes(n: int, system: str, text: str) -> None:
    assert format_bytes(n, system) == text  # type: ignore[arg-type]


def test_format_bytes_rejects_floats() -> None:
    with pytest.raises(ValueError, match="n_bytes"):
        format_bytes(1.5)  # type: ignore[arg-type]


@given(st.integers(0, 2**60), st.sampled_from(["KiB", "MiB", "GiB", "TiB", "kB", "MB", "GB", "TB"]))
def test_every_printed_size_names_its_unit_and_round_trips(n: int, unit: str) -> None:
    """A whole number of a unit parses back to the same bytes, and every printed size ends
    with a unit name."""
    factor = parse_size(f"1 {unit}")
    assert parse_size(f"{n} {unit}") == n * factor
    assert format_bytes(n).split()[-1] in {"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
    assert format_bytes(n, "decimal").split()[-1] in {"B", "kB", "MB", "GB", "TB", "PB"}


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("8gb", "8 GB, decimal units of 10^9 bytes = 8,000,000,000 bytes"),
        ("8GiB", "8 GiB, binary units of 2^30 bytes = 8,589,934,592 bytes"),
        ("4096", "a byte count = 4,096 bytes"),
    ],
)
def test_describe_size_says_which_unit_was_understood(text: str, said: str) -> None:
    from membudget.units import describe_size

    assert describe_size(text) == f"{text}: {said}"


def test_explain_says_which_unit_was_understood(capsys: pytest.CaptureFixture[str]) -> None:
    from membudget.cli import main

    assert main(["plan", "qwen3-0.6b", "--memory", "8gb", "--explain"]) in (0, 1)
    assert "--memory 8gb: 8 GB, decimal units of 10^9 bytes" in capsys.readouterr().out
