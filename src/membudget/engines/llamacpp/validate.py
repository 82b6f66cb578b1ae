"""Estimate against actual: membudget's llama.cpp profile beside llama.cpp's own report."""

from __future__ import annotations

from dataclasses import dataclass

from membudget.engines.llamacpp.log import ReportedBuffer
from membudget.engines.llamacpp.profile import LlamaCppEstimate

__all__ = ["COMPARED_KINDS", "BufferComparison", "compare"]

_MIB = 1024 * 1024
COMPARED_KINDS = ("model", "kv", "kv_swa", "recurrent", "output", "compute")


@dataclass(frozen=True, slots=True)
class BufferComparison:
    """One buffer kind on one device: estimated bytes against llama.cpp's printed MiB."""

    device: str
    kind: str
    estimated_bytes: int
    actual_mib: float

    @property
    def estimated_mib(self) -> float:
        """The estimate at llama.cpp's printed precision (two decimals of MiB)."""
        return round(self.estimated_bytes / _MIB, 2)

    @property
    def exact(self) -> bool:
        """Equal to llama.cpp's report at the precision it prints."""
        return abs(self.estimated_mib - self.actual_mib) < 0.005 + 1e-9 * self.actual_mib

    @property
    def relative_error(self) -> float:
        if self.actual_mib == 0:
            return 0.0 if self.estimated_bytes == 0 else float("inf")
        return (self.estimated_bytes / _MIB - self.actual_mib) / self.actual_mib


def compare(
    estimate: LlamaCppEstimate, reported: tuple[ReportedBuffer, ...]
) -> list[BufferComparison]:
    """Pair every estimated and reported buffer by (device, kind); a side that has none is 0.

    Several reported buffers of one kind on one device (model shards, CPU_Mapped beside
    CPU_REPACK) are summed at their printed precision.
    """
    est: dict[tuple[str, str], int] = {}
    for b in estimate.buffers:
        est[(b.device, b.kind)] = est.get((b.device, b.kind), 0) + b.n_bytes
    act: dict[tuple[str, str], float] = {}
    for r in reported:
        act[(r.device, r.kind)] = round(act.get((r.device, r.kind), 0.0) + r.mib, 2)
    keys = sorted(set(est) | set(act), key=lambda k: (k[0], COMPARED_KINDS.index(k[1])))
    return [
        BufferComparison(dev, kind, est.get((dev, kind), 0), act.get((dev, kind), 0.0))
        for dev, kind in keys
    ]
