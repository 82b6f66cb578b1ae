"""Sizes in, sizes out.

Parsing accepts what people type: a bare integer is bytes; otherwise a number and a unit. Binary
units (KiB, MiB, GiB, TiB, PiB) are powers of 1024; decimal units (kB, MB, GB, TB, PB) are powers
of 1000. They are different words for different amounts and are never mixed up: 8 GiB is
8,589,934,592 bytes, 8 GB is 8,000,000,000 bytes. A bare "G" or "Gb" is ambiguous and rejected.

Formatting always names its unit. :func:`format_bytes` uses binary units by default (what
operating systems and llama.cpp report, as "MiB") and decimal ones on request; like rich's
``filesize`` it says which convention it uses in its own output, because the unit is printed.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from membudget.errors import InvalidArgumentError, SizeParseError

__all__ = [
    "BINARY_UNITS",
    "DECIMAL_UNITS",
    "GB",
    "GIB",
    "KIB",
    "MIB",
    "TIB",
    "UnitSystem",
    "describe_size",
    "format_bytes",
    "parse_size",
]

KIB = 1024
MIB = 1024**2
GIB = 1024**3
TIB = 1024**4
GB = 1000**3

UnitSystem = Literal["binary", "decimal"]

BINARY_UNITS: dict[str, int] = {
    "B": 1,
    "KiB": KIB,
    "MiB": MIB,
    "GiB": GIB,
    "TiB": TIB,
    "PiB": 1024**5,
}
DECIMAL_UNITS: dict[str, int] = {
    "B": 1,
    "kB": 1000,
    "MB": 1000**2,
    "GB": GB,
    "TB": 1000**4,
    "PB": 1000**5,
}

# Spellings people type, case-insensitively: "8gb" and "8 GB" are decimal gigabytes, "8gib" and
# "8GiB" binary. Only a bare prefix ("8G": GiB or GB?) is refused, with both spellings offered.
_UNIT_SPELLINGS: dict[str, int] = {
    **{name.lower(): factor for name, factor in BINARY_UNITS.items() if name != "B"},
    "B": 1,
    **{name: factor for name, factor in DECIMAL_UNITS.items() if name != "B"},
    "KB": 1000,
}
_SIZE_RE = re.compile(r"^\s*(?P<number>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]+)?\s*$")
_ACCEPTED = (
    "a byte count such as '8589934592', or a number and a unit such as '8GiB', '8 GiB', "
    "'8192MiB', '1.5 TiB' (binary, powers of 1024) or '8GB' (decimal, powers of 1000)"
)


def _unit_factor(unit: str) -> int | None:
    if unit in _UNIT_SPELLINGS:
        return _UNIT_SPELLINGS[unit]
    lowered = unit.lower()
    if lowered.endswith("ib"):
        return _UNIT_SPELLINGS.get(lowered)
    decimal = {name.lower(): factor for name, factor in DECIMAL_UNITS.items() if name != "B"}
    return decimal.get(lowered)  # a lone "b" stays refused: bits or bytes?


def parse_size(text: str | int) -> int:
    """Return the number of bytes that ``text`` names.

    >>> parse_size("8GiB"), parse_size("8 GB"), parse_size("1.5 TiB"), parse_size("4096")
    (8589934592, 8000000000, 1649267441664, 4096)

    Fractions of a byte are rounded down. Raises :class:`SizeParseError` for anything
    ambiguous or malformed, with the accepted forms in the message.
    """
    if isinstance(text, bool):
        raise SizeParseError(f"Cannot read size {text!r}: expected {_ACCEPTED}.")
    if isinstance(text, int):
        if text < 0:
            raise SizeParseError(f"Cannot read size {text!r}: sizes cannot be negative.")
        return text
    if not isinstance(text, str):
        raise SizeParseError(f"Cannot read size {text!r}: expected {_ACCEPTED}.")
    match = _SIZE_RE.match(text)
    if match is None:
        raise SizeParseError(f"Cannot read size {text!r}: expected {_ACCEPTED}.")
    number, unit = match["number"], match["unit"]
    if unit is None:
        if "." in number:
            raise SizeParseError(
                f"Cannot read size {text!r}: a size without a unit is a whole number of bytes; "
                f"expected {_ACCEPTED}."
            )
        return int(number)
    factor = _unit_factor(unit)
    if factor is None and unit.upper() in ("K", "M", "G", "T", "P"):
        prefix = unit.upper()
        raise SizeParseError(
            f"Cannot read size {text!r}: {prefix!r} alone is ambiguous; write "
            f"{number}{'Ki' if prefix == 'K' else prefix + 'i'}B (powers of 1024) or "
            f"{number}{'k' if prefix == 'K' else prefix}B (powers of 1000)."
        )
    if factor is None:
        raise SizeParseError(
            f"Cannot read size {text!r}: unknown unit {unit!r}; expected {_ACCEPTED}."
        )
    return int(Fraction(number) * factor)  # exact; int() rounds a fraction of a byte down


def describe_size(text: str) -> str:
    """How :func:`parse_size` reads ``text``, for ``--explain``: the unit understood and its
    system (``"8gb: 8 GB, decimal units of 10^9 bytes = 8,000,000,000 bytes"``)."""
    n = parse_size(text)
    match = _SIZE_RE.match(text)
    assert match is not None  # parse_size accepted it
    unit = match["unit"]
    if unit is None:
        return f"{text.strip()}: a byte count = {n:,} bytes"
    factor = _unit_factor(unit) or 1
    binary = {v: k for k, v in BINARY_UNITS.items()}
    decimal = {v: k for k, v in DECIMAL_UNITS.items()}
    if factor == 1:
        return f"{text.strip()}: bytes = {n:,} bytes"
    if unit.lower().endswith("ib"):
        power = factor.bit_length() - 1
        name = binary[factor]
        return f"{text.strip()}: {match['number']} {name}, binary units of 2^{power} bytes = {n:,} bytes"
    power = len(str(factor)) - 1
    name = decimal[factor]
    return (
        f"{text.strip()}: {match['number']} {name}, decimal units of 10^{power} bytes = {n:,} bytes"
    )


def _check_bytes(n: object) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise InvalidArgumentError("n_bytes", n, "must be an integer number of bytes")
    return n


def format_bytes(n: int, system: UnitSystem = "binary", precision: int = 2) -> str:
    """Format ``n`` bytes with the largest unit that keeps the number at or above 1.

    Binary units by default (``"1.50 GiB"``), decimal with ``system="decimal"`` (``"1.61 GB"``).
    Whole bytes print without decimals (``"512 B"``). Negative values keep their sign.

    >>> format_bytes(1610612736), format_bytes(1610612736, "decimal"), format_bytes(512)
    ('1.50 GiB', '1.61 GB', '512 B')
    """
    n = _check_bytes(n)
    table = BINARY_UNITS if system == "binary" else DECIMAL_UNITS
    sign = "-" if n < 0 else ""
    magnitude = abs(n)
    name, factor = "B", 1
    for unit, unit_factor in table.items():
        if magnitude >= unit_factor:
            name, factor = unit, unit_factor
    if factor == 1:
        return f"{sign}{magnitude} B"
    return f"{sign}{magnitude / factor:.{precision}f} {name}"
