"""Report objects for engine plans and for validation against the real engine."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membudget.engines.llamacpp_validate import BufferComparison
from membudget.plan import Plan
from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = ["PLAN_SCHEMA", "VALIDATE_SCHEMA", "PlanReport", "ValidationReport"]

PLAN_SCHEMA = "membudget/plan/1"
VALIDATE_SCHEMA = "membudget/validate/1"

_LABELS = {
    "model": "weights",
    "kv": "KV cache",
    "kv_swa": "KV cache, SWA",
    "recurrent": "recurrent state",
    "output": "output (logits)",
    "compute": "compute buffer",
}


@dataclass(frozen=True, slots=True)
class PlanReport:
    """What one engine allocates for a model under given settings, against a budget."""

    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        p = self.plan
        e = p.estimate
        s = e.settings
        devices: dict[str, list[dict[str, Any]]] = {}
        for b in e.buffers:
            devices.setdefault(b.device, []).append(
                {"kind": b.kind, "bytes": b.n_bytes, "detail": b.detail}
            )
        return {
            "schema": PLAN_SCHEMA,
            "engine": "llama.cpp",
            "engine_rules": {"llama_cpp_version": e.rules.version},
            "model": {
                "name": e.spec.name,
                "source": e.spec.source,
                "architecture": e.spec.architecture,
                "n_params": e.spec.n_params,
                "quantization": e.spec.quant.file_type,
            },
            "settings": {
                "n_ctx": e.n_ctx,
                "n_ctx_requested": s.n_ctx,
                "n_ctx_seq": e.n_ctx_seq,
                "n_parallel": e.n_seq_max,
                "kv_unified": s.kv_unified,
                "n_batch": e.n_batch,
                "n_ubatch": e.n_ubatch,
                "cache_type_k": s.cache_type_k,
                "cache_type_v": s.cache_type_v,
                "flash_attn": "on" if e.flash_attn else "off",
                "flash_attn_requested": s.flash_attn,
                "swa_full": s.swa_full,
                "kv_cells": e.kv_size,
                "swa_cells": e.swa_size,
            },
            "memory": {
                "weights_bytes": e.weights_bytes,
                "kv_cache_bytes": e.kv_cache_bytes,
                "kv_swa_bytes": e.kv_swa_bytes,
                "recurrent_state_bytes": e.recurrent_state_bytes,
                "output_bytes": e.output_bytes,
                "compute_bytes": e.compute_bytes,
                "total_bytes": e.total_bytes,
            },
            "devices": [
                {"device": dev, "total_bytes": sum(b["bytes"] for b in bufs), "buffers": bufs}
                for dev, bufs in devices.items()
            ],
            "budget": {
                "memory_bytes": p.budget.memory_bytes,
                "raw_bytes": p.budget.raw_bytes,
                "margin_bytes": p.budget.margin_bytes,
                "source": p.budget.source,
                "fits": p.fits,
                "headroom_bytes": p.headroom_bytes,
                "max_context": p.max_context,
                "max_parallel": p.max_parallel,
            },
            "suggestions": [
                {"change": x.change, "total_bytes": x.total_bytes, "flags": list(x.flags)}
                for x in p.suggestions
            ],
            "commands": {
                "llama.cpp": list(p.command),
                "ollama": {"num_ctx": e.n_ctx_seq, "OLLAMA_NUM_PARALLEL": e.n_seq_max},
            },
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        p = self.plan
        e = p.estimate
        t = Table(
            title=(
                f"{e.spec.name} on llama.cpp: n_ctx {e.n_ctx:,} ({e.n_seq_max} x {e.n_ctx_seq:,}), "
                f"ubatch {e.n_ubatch}, K {e.settings.cache_type_k} / V {e.settings.cache_type_v}, "
                f"flash attention {'on' if e.flash_attn else 'off'}"
            ),
            title_justify="left",
        )
        t.add_column("device")
        t.add_column("buffer")
        t.add_column("bytes", justify="right")
        t.add_column("MiB", justify="right")
        t.add_column("detail")
        for b in e.buffers:
            t.add_row(
                b.device, _LABELS[b.kind], f"{b.n_bytes:,}", f"{b.n_bytes / 2**20:,.2f}", b.detail
            )
        t.add_row(
            "", "total", f"{e.total_bytes:,}", f"{e.total_bytes / 2**20:,.2f}", "", style="bold"
        )
        yield t
        yield (
            f"total: {format_bytes(e.total_bytes)} ({format_bytes(e.total_bytes, 'decimal')}); "
            f"rules of llama.cpp {e.rules.version}"
        )
        budget = p.budget
        margin = (
            f", after a {format_bytes(budget.margin_bytes)} margin" if budget.margin_bytes else ""
        )
        yield f"budget: {format_bytes(budget.memory_bytes)} from {budget.source}{margin}"
        yield p.verdict()
        ctx = f"{p.max_context:,} tokens" if p.max_context else "none"
        yield f"largest context that fits: {ctx}; most parallel sequences at {e.n_ctx_seq:,} tokens each: {p.max_parallel}"
        for x in p.suggestions:
            extra = f"  ({' '.join(x.flags)})" if x.flags else ""
            yield f"  to fit: {x.change}: needs {format_bytes(x.total_bytes)}{extra}"
        yield f"run: {p.command_line}"


@dataclass(frozen=True, slots=True)
class ValidationReport:
    """membudget's estimate beside llama.cpp's own report, buffer by buffer."""

    model: str
    rows: Sequence[BufferComparison]
    compute_tolerance: float = 0.05

    def row_ok(self, row: BufferComparison) -> bool:
        if row.kind == "compute":
            return abs(row.relative_error) <= self.compute_tolerance
        return row.exact

    @property
    def ok(self) -> bool:
        return all(self.row_ok(r) for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": VALIDATE_SCHEMA,
            "model": self.model,
            "ok": self.ok,
            "compute_tolerance": self.compute_tolerance,
            "buffers": [
                {
                    "device": r.device,
                    "kind": r.kind,
                    "estimated_bytes": r.estimated_bytes,
                    "estimated_mib": r.estimated_mib,
                    "actual_mib": r.actual_mib,
                    "relative_error": None
                    if r.relative_error == float("inf")
                    else round(r.relative_error, 6),
                    "ok": self.row_ok(r),
                }
                for r in self.rows
            ],
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        t = Table(
            title=f"{self.model}: membudget estimate vs llama.cpp (MiB)", title_justify="left"
        )
        for col in ("device", "buffer", "estimated", "llama.cpp", "error", ""):
            t.add_column(
                col, justify="right" if col in ("estimated", "llama.cpp", "error") else "left"
            )
        for r in self.rows:
            err = "inf" if r.relative_error == float("inf") else f"{r.relative_error * 100:+.2f}%"
            t.add_row(
                r.device,
                _LABELS.get(r.kind, r.kind),
                f"{r.estimated_mib:.2f}",
                f"{r.actual_mib:.2f}",
                err,
                "ok" if self.row_ok(r) else "MISMATCH",
            )
        yield t
        yield (
            "weights, KV, recurrent state and output must equal llama.cpp at its printed precision; "
            f"compute must be within {self.compute_tolerance:.0%}."
        )
