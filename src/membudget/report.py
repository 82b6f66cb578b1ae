"""Report objects: one model per answer, rendered as a table (rich) or as JSON.

A report renders itself through rich's ``__rich_console__`` protocol, importing rich only when a
console asks for it, so the core never needs rich. ``to_dict()`` is the JSON contract; every
dictionary carries a ``schema`` id that changes whenever a field changes meaning.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membudget.budget import MemoryBudget
from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = ["ESTIMATE_SCHEMA", "EstimateReport", "Geometry"]

ESTIMATE_SCHEMA = "membudget/estimate/1"


@dataclass(frozen=True, slots=True)
class Geometry:
    """Attention geometry as the reference estimator sees it (query heads stand in for KV)."""

    num_layers: int
    num_heads: int
    head_dim: int


@dataclass(frozen=True, slots=True)
class EstimateReport:
    """The answer of ``membudget estimate``: the reference budget, its largest context and,
    when asked, whether one context fits."""

    memory_bytes: int
    model_params: int
    bits_per_weight: float
    budget: MemoryBudget
    geometry: Geometry | None = None
    context: int | None = None

    @property
    def kv_bytes_per_token(self) -> int | None:
        if self.geometry is None:
            return None
        g = self.geometry
        return MemoryBudget.kv_bytes_per_token(g.num_layers, g.num_heads, g.head_dim)

    @property
    def max_context(self) -> int | None:
        if self.geometry is None:
            return None
        g = self.geometry
        return self.budget.max_context_length(g.num_layers, g.num_heads, g.head_dim)

    @property
    def fits(self) -> bool | None:
        """Whether the asked context fits; ``None`` when no context was asked."""
        if self.context is None or self.geometry is None:
            return None
        g = self.geometry
        return self.budget.fits_context(self.context, g.num_layers, g.num_heads, g.head_dim)

    def to_dict(self) -> dict[str, Any]:
        b = self.budget
        return {
            "schema": ESTIMATE_SCHEMA,
            "engine": "reference",
            "input": {
                "memory_bytes": self.memory_bytes,
                "total_available_mb": b.total_system_bytes // (1024 * 1024),
                "model_params": self.model_params,
                "bits_per_weight": self.bits_per_weight,
                "num_layers": self.geometry.num_layers if self.geometry else None,
                "num_heads": self.geometry.num_heads if self.geometry else None,
                "head_dim": self.geometry.head_dim if self.geometry else None,
                "context": self.context,
            },
            "budget": {
                "total_system_bytes": b.total_system_bytes,
                "model_weight_bytes": b.model_weight_bytes,
                "runtime_overhead": b.runtime_overhead,
                "available_bytes": b.available_bytes,
                "kv_cache_budget": b.kv_cache_budget,
            },
            "summary": b.summary(),
            "kv_bytes_per_token": self.kv_bytes_per_token,
            "max_context": self.max_context,
            "fits": self.fits,
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        b = self.budget
        table = Table(
            title="Reference memory budget (sizes in bytes and GiB)", title_justify="left"
        )
        table.add_column("part")
        table.add_column("bytes", justify="right")
        table.add_column("size", justify="right")
        for label, value in (
            ("total", b.total_system_bytes),
            ("weights", b.model_weight_bytes),
            ("runtime overhead", b.runtime_overhead),
            ("available", b.available_bytes),
            ("KV cache budget", b.kv_cache_budget),
        ):
            table.add_row(label, f"{value:,}", format_bytes(value))
        yield table
        yield f"summary: {b.summary()}  (MB here means MiB, as in the reference)"
        if self.geometry is None:
            yield "max context: give --layers, --heads and --head-dim to compute it"
            return
        per_token = self.kv_bytes_per_token or 0
        yield f"KV cache per token (FP16 K+V): {per_token:,} bytes"
        yield f"max context: {self.max_context:,} tokens"
        if self.context is not None:
            verdict = "fits" if self.fits else "does NOT fit"
            yield (
                f"context {self.context:,}: {verdict} "
                f"(needs {self.context * per_token:,} bytes of {b.kv_cache_budget:,})"
            )
