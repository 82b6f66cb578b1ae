"""Parsers for what people type on the command line, beyond sizes (``membudget.units``)."""

from __future__ import annotations

import re
from fractions import Fraction

from membudget.errors import InvalidArgumentError

# "8B model" means eight billion parameters: the suffixes are counts, not bytes.
_COUNT_SUFFIXES = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_COUNT_RE = re.compile(
    r"^\s*(?P<number>[0-9]+(?:\.[0-9]*)?(?:[eE][+]?[0-9]+)?)\s*(?P<suffix>[KMBT]?)\s*$"
)


def parse_count(name: str, text: str) -> int:
    """Parse a parameter count: ``8000000000``, ``8e9``, ``8B``, ``270M``, ``1.5T``.

    The result must be a whole number; ``1.5`` is rejected, ``1.5B`` is 1,500,000,000.
    """
    match = _COUNT_RE.match(text)
    if match is None:
        raise InvalidArgumentError(
            name, text, "must be a whole count such as 8000000000, 8e9, 8B or 270M"
        )
    value = Fraction(match["number"]) * _COUNT_SUFFIXES[match["suffix"].upper()]
    if value.denominator != 1:
        raise InvalidArgumentError(name, text, "must be a whole count, not a fraction")
    return int(value)
