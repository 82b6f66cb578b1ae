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


def parse_split(text: str | None) -> tuple[float, ...]:
    """Parse llama.cpp's ``-ts 3,1``: non-negative proportions, one per GPU."""
    if not text:
        return ()
    try:
        values = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise InvalidArgumentError(
            "--tensor-split", text, "must be comma-separated numbers such as 3,1"
        ) from None
    if any(not (v >= 0 and v < float("inf")) for v in values) or not sum(values) > 0:
        raise InvalidArgumentError(
            "--tensor-split", text, "needs non-negative finite shares, not all zero"
        )
    return values


def parse_rpc_node(text: str) -> tuple[str, bool]:
    """``--rpc-node 24GiB`` (a GPU worker) or ``24GiB:cpu`` / ``24GiB:cuda``: the size as typed,
    and whether the worker's backend is a CPU."""
    size, sep, backend = text.rpartition(":")
    if not sep:
        return text, False
    kind = backend.strip().lower()
    if kind not in ("cpu", "cuda", "gpu"):
        raise InvalidArgumentError(
            "--rpc-node", text, "takes a size, then optionally :cpu or :cuda (the worker's backend)"
        )
    return size, kind == "cpu"
