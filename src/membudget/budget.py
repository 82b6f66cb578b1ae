"""``MemoryBudget``: the reference estimator, reproduced to the byte.

This is the estimator of the auto-tuner this project grew from (``docs/reference-estimator.md`` pins its
arithmetic). It is deliberately kept as it is — flat overhead, FP16 cache, query heads as KV heads
— so that results compare byte for byte with the reference. Everything else in membudget models
the engines properly; this class is the compatible floor, not the product.

"MB" in this module means MiB (1024 * 1024 bytes), as in the reference.
"""

from __future__ import annotations

import math
import operator
import struct
from dataclasses import dataclass

from membudget.errors import InvalidArgumentError
from membudget.units import MIB

__all__ = ["MemoryBudget"]

# The reference stores sizes in Rust's ``usize``; on the 64-bit hosts it runs on that is u64.
_USIZE_MAX = 2**64 - 1
# Runtime overhead is a tenth of the total, capped at 256 MiB (docs/reference-estimator.md, estimate).
_OVERHEAD_CAP_BYTES = 256 * MIB
# FP16 K and V: 2 tensors x 2 bytes per element (docs/reference-estimator.md, max_context_length).
_FP16_KV_FACTOR = 2 * 2


def _count(name: str, value: object, maximum: int = _USIZE_MAX) -> int:
    """Return ``value`` as a non-negative int, or raise naming ``name``.

    Integral floats such as ``8e9`` are accepted (people type parameter counts that way); bools,
    fractions, NaN, infinities, negatives and values beyond what the reference can hold are not.
    """
    if isinstance(value, bool):
        raise InvalidArgumentError(name, value, "must be a non-negative integer, not a bool")
    if isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer():
            raise InvalidArgumentError(name, value, "must be a non-negative integer")
        number = int(value)
    else:
        try:
            number = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise InvalidArgumentError(name, value, "must be a non-negative integer") from None
    if number < 0:
        raise InvalidArgumentError(name, value, "must be a non-negative integer")
    if number > maximum:
        raise InvalidArgumentError(name, value, f"must be at most {maximum}")
    return number


def _f32(name: str, value: object) -> float:
    """Round ``value`` to the nearest float32, as the reference's ``f32`` argument does."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidArgumentError(name, value, "must be a finite non-negative number")
    as_float = float(value)
    if not math.isfinite(as_float) or as_float < 0:
        raise InvalidArgumentError(name, value, "must be a finite non-negative number")
    try:
        (rounded,) = struct.unpack("<f", struct.pack("<f", as_float))
    except OverflowError:
        raise InvalidArgumentError(name, value, "must fit in a 32-bit float") from None
    return float(rounded)


@dataclass(frozen=True, slots=True)
class MemoryBudget:
    """Memory budget of a model deployment, as the reference estimator computes it.

    An immutable value: hashable, compared by value, safe to copy and to share between threads.
    Build one with :meth:`estimate`. All fields are bytes.
    """

    total_system_bytes: int
    """Total memory the user is willing to use."""
    available_bytes: int
    """What is left after the model weights and the runtime overhead (never negative)."""
    model_weight_bytes: int
    """The weights' footprint: ``trunc(params * f32(bits) / 8)``."""
    kv_cache_budget: int
    """Four fifths of ``available_bytes``, earmarked for the KV cache."""
    runtime_overhead: int
    """A tenth of the total, at most 256 MiB, for buffers and activations."""

    def __post_init__(self) -> None:
        for name in (
            "total_system_bytes",
            "available_bytes",
            "model_weight_bytes",
            "kv_cache_budget",
            "runtime_overhead",
        ):
            _count(name, getattr(self, name))

    @classmethod
    def estimate(
        cls, total_available_mb: int, model_params: int, bits_per_weight: float
    ) -> MemoryBudget:
        """Estimate the budget for ``model_params`` weights of ``bits_per_weight`` bits each
        in ``total_available_mb`` MiB of memory.

        ``bits_per_weight`` is rounded to float32 first, exactly as the reference's ``f32``
        argument is (2.1 becomes 2.0999999046325684).
        """
        mb = _count("total_available_mb", total_available_mb, _USIZE_MAX // MIB)
        params = _count("model_params", model_params)
        bits = _f32("bits_per_weight", bits_per_weight)

        total = mb * MIB
        # Rust's float-to-int ``as`` cast truncates toward zero and saturates at the type's max.
        weights = min(int(float(params) * bits / 8.0), _USIZE_MAX)
        overhead = min(total // 10, _OVERHEAD_CAP_BYTES)
        available = max(0, max(0, total - weights) - overhead)
        return cls(
            total_system_bytes=total,
            available_bytes=available,
            model_weight_bytes=weights,
            kv_cache_budget=available * 4 // 5,
            runtime_overhead=overhead,
        )

    @staticmethod
    def kv_bytes_per_token(num_layers: int, num_heads: int, head_dim: int) -> int:
        """FP16 K and V bytes per token, with query heads standing in for KV heads."""
        layers = _count("num_layers", num_layers)
        heads = _count("num_heads", num_heads)
        dim = _count("head_dim", head_dim)
        return _FP16_KV_FACTOR * layers * heads * dim

    def max_context_length(self, num_layers: int, num_heads: int, head_dim: int) -> int:
        """The largest context whose FP16 KV cache fits in ``kv_cache_budget`` (0 if none)."""
        per_token = self.kv_bytes_per_token(num_layers, num_heads, head_dim)
        return 0 if per_token == 0 else self.kv_cache_budget // per_token

    def fits_context(self, ctx_len: int, num_layers: int, num_heads: int, head_dim: int) -> bool:
        """Whether a context of ``ctx_len`` tokens fits in ``kv_cache_budget``."""
        tokens = _count("ctx_len", ctx_len)
        return tokens * self.kv_bytes_per_token(num_layers, num_heads, head_dim) <= (
            self.kv_cache_budget
        )

    def summary(self) -> str:
        """The reference's one-line summary, in MiB (which the reference writes "MB")."""

        def mb(n: int) -> str:
            return f"{n / MIB:.0f}"

        return (
            f"total={mb(self.total_system_bytes)}MB, weights={mb(self.model_weight_bytes)}MB, "
            f"kv_budget={mb(self.kv_cache_budget)}MB, overhead={mb(self.runtime_overhead)}MB, "
            f"available={mb(self.available_bytes)}MB"
        )
