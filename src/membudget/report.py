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
from membudget.explain import Input, Step, explain_reference
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.readers.catalog import CatalogEntry
from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = [
    "CATALOG_SCHEMA",
    "ESTIMATE_SCHEMA",
    "HARDWARE_SCHEMA",
    "MODEL_SCHEMA",
    "CatalogReport",
    "EstimateReport",
    "Geometry",
    "HardwareReport",
    "ModelReport",
]

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

    def headline(self) -> str:
        if self.fits is None:
            return self.budget.summary()
        verdict = "fits" if self.fits else "does NOT fit"
        return f"context {self.context:,}: {verdict} (max context {self.max_context:,} tokens)"

    def explanation(self) -> tuple[Step, ...]:
        steps = explain_reference(
            self.budget, self.memory_bytes, self.model_params, self.bits_per_weight
        )
        if self.geometry is None:
            return steps
        g = self.geometry
        return (
            *steps,
            Step(
                "KV per token",
                self.kv_bytes_per_token,
                f"2 (K and V) x layers {g.num_layers} x heads {g.num_heads} x head_dim "
                f"{g.head_dim} x 2 B (FP16; the reference counts query heads) = "
                f"{self.kv_bytes_per_token:,}",
            ),
            Step(
                "max context",
                None,
                f"KV cache budget {self.budget.kv_cache_budget:,} // {self.kv_bytes_per_token:,} "
                f"= {self.max_context:,} tokens",
            ),
        )

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


CATALOG_SCHEMA = "membudget/catalog/1"
MODEL_SCHEMA = "membudget/model/1"


@dataclass(frozen=True, slots=True)
class CatalogReport:
    """The catalogue listing."""

    entries: tuple[CatalogEntry, ...]

    @property
    def fits(self) -> bool | None:
        """Listings answer no fit question."""
        return None

    def headline(self) -> str:
        return "\n".join(e.name for e in self.entries)

    def explanation(self) -> tuple[Step, ...]:
        return ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": CATALOG_SCHEMA,
            "models": [
                {
                    "name": e.name,
                    "display": e.display,
                    "family": e.family,
                    "n_params": e.n_params,
                    "storage": e.storage or "as config.json declares",
                    "source": e.source,
                }
                for e in self.entries
            ],
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        table = Table(
            title=f"membudget catalogue ({len(self.entries)} models)", title_justify="left"
        )
        table.add_column("name")
        table.add_column("model")
        table.add_column("params", justify="right")
        for e in self.entries:
            table.add_row(e.name, e.display, _params(e.n_params))
        yield table


def _params(n: int) -> str:
    for factor, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M")):
        if n >= factor:
            return f"{n / factor:.2f}{suffix}"
    return str(n)


def _runs(values: list[int] | list[bool]) -> str:
    """Run-length text for per-layer arrays: ``8 x32`` or ``1 x4, 0, 1 x3``."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j < len(values) and values[j] == values[i]:
            j += 1
        v = values[i]
        text = ("yes" if v else "no") if isinstance(v, bool) else str(v)
        out.append(text if j - i == 1 else f"{text} x{j - i}")
        i = j
    return ", ".join(out)


@dataclass(frozen=True, slots=True)
class ModelReport:
    """One model's description, as ``membudget inspect`` shows it."""

    spec: ModelSpec

    @property
    def fits(self) -> bool | None:
        """Listings answer no fit question."""
        return None

    def headline(self) -> str:
        s = self.spec
        return (
            f"{s.name}: {s.architecture}, {s.n_params:,} parameters, "
            f"{format_bytes(s.weight_bytes)} of weights ({s.quant.file_type})"
        )

    def explanation(self) -> tuple[Step, ...]:
        s = self.spec
        return tuple(
            Step(
                name,
                None,
                f"{name} = {_field_value(s, name)}",
                (Input(name, _field_value(s, name), where),),
            )
            for name, where in s.provenance
        )

    def to_dict(self) -> dict[str, Any]:
        return {"schema": MODEL_SCHEMA, "model": self.spec.to_dict()}

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        s = self.spec
        layers = s.layers
        t = Table(
            title=f"{s.name} ({s.architecture}, from {s.source_kind})",
            title_justify="left",
            show_header=False,
        )
        t.add_column("field")
        t.add_column("value")
        t.add_row("source", s.source)
        t.add_row("parameters", f"{s.n_params:,} ({_params(s.n_params)})")
        t.add_row("layers", str(s.n_layer))
        t.add_row("embedding / FFN width", f"{s.n_embd} / {s.n_ff}")
        t.add_row("vocabulary", f"{s.n_vocab:,}")
        t.add_row("trained context", f"{s.n_ctx_train:,} tokens")
        t.add_row("query heads", _runs([layer.n_head for layer in layers]))
        t.add_row("KV heads (0 = no cache)", _runs([layer.n_head_kv for layer in layers]))
        t.add_row(
            "K / V head dims",
            f"{layers[0].head_dim_k if layers else 0} / {layers[0].head_dim_v if layers else 0}",
        )
        if s.sliding_window:
            t.add_row(
                "sliding window",
                f"{s.sliding_window} tokens on {sum(layer.is_swa for layer in layers)} of {s.n_layer} layers",
            )
        if s.mla is not None:
            m = s.mla
            cache = "compressed latent" if m.compressed_cache else "full heads (older file)"
            t.add_row(
                "MLA",
                f"kv_lora_rank {m.kv_lora_rank}, rope {m.qk_rope_head_dim}, nope {m.qk_nope_head_dim}, v {m.v_head_dim}; cache: {cache}",
            )
        if s.recurrent is not None:
            r = s.recurrent
            t.add_row(
                "recurrent",
                f"{r.kind} on {s.n_recurrent_layers} layers (d_inner {r.d_inner}, d_state {r.d_state}, d_conv {r.d_conv}, heads {r.n_head})",
            )
        if s.is_moe:
            t.add_row(
                "experts",
                f"{s.n_expert} routed, {s.n_expert_used} used per token, {s.n_expert_shared} shared, FFN {s.n_ff_expert}",
            )
        w = s.weights
        t.add_row(
            "weights",
            f"{w.total:,} bytes ({format_bytes(w.total)}, {format_bytes(w.total, 'decimal')})",
        )
        t.add_row("  token embedding", format_bytes(w.token_embd))
        t.add_row(
            "  output head",
            format_bytes(w.output) + (" (tied to the embedding)" if s.tied_embeddings else ""),
        )
        t.add_row("  layers", format_bytes(sum(w.layers)))
        if w.experts:
            t.add_row("  routed experts", format_bytes(w.experts_total))
        t.add_row("quantisation", f"{s.quant.file_type}, {s.bits_per_weight:.3f} bits per weight")
        counts = s.quant.type_counts
        if counts:
            t.add_row("  tensor types", ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
        yield t
        for note in s.notes:
            yield f"note: {note}"


HARDWARE_SCHEMA = "membudget/hardware/1"


@dataclass(frozen=True, slots=True)
class HardwareReport:
    """What ``membudget hw`` shows."""

    hardware: Hardware

    @property
    def fits(self) -> bool | None:
        """Listings answer no fit question."""
        return None

    def headline(self) -> str:
        h = self.hardware
        gpus = f", {len(h.gpus)} GPU(s)" if h.gpus else ""
        return f"RAM {format_bytes(h.ram.available_bytes)} available of {format_bytes(h.ram.total_bytes)}{gpus}"

    def explanation(self) -> tuple[Step, ...]:
        return ()

    def to_dict(self) -> dict[str, Any]:
        return {"schema": HARDWARE_SCHEMA, **self.hardware.to_dict()}

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        h = self.hardware
        t = Table(title="This machine (sizes in GiB and GB)", title_justify="left")
        t.add_column("device")
        t.add_column("what")
        t.add_column("total", justify="right")
        t.add_column("available", justify="right")
        limit = (
            f", container limit {format_bytes(h.ram.cgroup_limit_bytes)}"
            if h.ram.cgroup_limit_bytes
            else ""
        )
        t.add_row(
            "RAM",
            f"{h.ram.source}{limit}",
            f"{format_bytes(h.ram.total_bytes)} ({format_bytes(h.ram.total_bytes, 'decimal')})",
            format_bytes(h.ram.available_bytes),
        )
        for g in h.gpus:
            t.add_row(
                f"GPU {g.index}", g.name, format_bytes(g.total_bytes), format_bytes(g.free_bytes)
            )
        t.add_row(
            "CPU",
            f"{h.cpu.arch}, {h.cpu.simd}",
            f"{h.cpu.physical_cores} cores",
            f"{h.cpu.logical_cores} threads",
        )
        yield t
        if h.apple is not None:
            yield f"Apple GPU working set: {format_bytes(h.apple.gpu_working_set_bytes)} ({h.apple.source})"
        for note in h.notes:
            yield f"note: {note}"


def _field_value(spec: ModelSpec, name: str) -> str:
    """A ModelSpec field's value for an explanation (per-layer fields summarised)."""
    per_layer = {"n_head", "n_head_kv", "head_dim_k", "head_dim_v", "sliding_window"}
    if name in per_layer:
        values = sorted({getattr(layer, name) for layer in spec.layers})
        return ", ".join(str(v) for v in values) or "-"
    if name == "n_layer":
        return str(spec.n_layer)
    if name == "weights":
        return f"{spec.weight_bytes:,} bytes"
    if name in ("kv_lora_rank", "rope_dim") and spec.mla is not None:
        return str(spec.mla.kv_lora_rank if name == "kv_lora_rank" else spec.mla.qk_rope_head_dim)
    if name == "recurrent" and spec.recurrent is not None:
        return spec.recurrent.kind
    value = getattr(spec, name, None)
    return f"{value:,}" if isinstance(value, int) else str(value)
