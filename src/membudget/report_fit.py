"""``membudget fit`` as one report object: the table, the JSON."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from membudget.explain import Step
from membudget.fit import FitRow, FitSweep, SortKey, sort_rows, sweep
from membudget.hardware import Hardware
from membudget.model import ModelSpec
from membudget.request import PlanRequest, request_budget
from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderableType

__all__ = ["FIT_SCHEMA", "FitReport", "run_fit"]

FIT_SCHEMA = "membudget/fit/1"


def _row_dict(r: FitRow) -> dict[str, Any]:
    return {
        "model": r.model,
        "name": r.name,
        "architecture": r.architecture,
        "n_params": r.n_params,
        "moe": r.moe,
        "preset": r.preset,
        "quant": r.quant,
        "max_context": r.max_context,
        "max_context_limit": r.max_context_limit,
        "max_parallel": r.max_parallel,
        "gpu_only": r.gpu_only,
        "placement": r.placement,
        "needed_bytes": r.needed_bytes,
        "headroom_bytes": r.headroom_bytes,
        "kv_tokens_per_gib": r.kv_tokens_per_gib,
        "command": list(r.command),
    }


@dataclass(frozen=True, slots=True)
class FitReport:
    """Every model's best fit on one machine, GPU-only fits first."""

    sweep: FitSweep
    rows: tuple[FitRow, ...]
    """The rows in the order asked for (``--sort``)."""
    engine: str
    min_ctx: int
    ctx: int
    hardware: str
    """The budget, for people (``16.00 GiB RAM, GPU 24.00 GiB``)."""

    @property
    def fits(self) -> bool | None:
        return None

    @property
    def warnings(self) -> tuple[str, ...]:
        return ()

    def headline(self) -> str:
        gpu = sum(1 for r in self.rows if r.gpu_only)
        return (
            f"{len(self.rows)} model(s) fit {self.min_ctx:,} tokens ({gpu} on the GPUs alone); "
            f"{len(self.sweep.skipped)} do not"
        )

    def explanation(self) -> tuple[Step, ...]:
        return tuple(
            Step(
                r.model,
                r.needed_bytes,
                f"the best candidate that fits {self.min_ctx:,} tokens of one sequence: "
                f"{r.preset}; membudget plan {r.model}"
                + (f" --quant {r.quant}" if r.quant else "")
                + f" --ctx {self.min_ctx} --parallel 1 gives the same plan",
            )
            for r in self.rows
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": FIT_SCHEMA,
            "engine": self.engine,
            "min_ctx": self.min_ctx,
            "ctx": self.ctx,
            "hardware": self.hardware,
            "rows": [_row_dict(r) for r in self.rows],
            "skipped": [{"model": m, "reason": why} for m, why in self.sweep.skipped],
        }

    def __rich_console__(
        self, console: Console, options: ConsoleOptions
    ) -> Iterator[RenderableType]:
        from rich.table import Table  # noqa: PLC0415 - rich only when a console renders

        for placement, title in (
            ("gpu", "on the GPUs alone"),
            ("offload", "with offload to the CPU"),
            ("cpu", "on the CPU"),
        ):
            rows = [r for r in self.rows if r.placement == placement]
            if not rows:
                continue
            t = Table(
                title=f"What fits {self.hardware} ({self.engine}), {title}",
                title_justify="left",
            )
            for col, just in (
                ("model", "left"),
                ("params", "right"),
                ("weights", "left"),
                ("largest context", "right"),
                (f"parallel at {self.ctx:,}", "right"),
                ("KV tokens/GiB", "right"),
                ("headroom", "right"),
            ):
                t.add_column(col, justify=just)  # type: ignore[arg-type]
            for r in rows:
                limit = " (trained)" if r.max_context_limit == "n_ctx_train" else ""
                t.add_row(
                    r.model,
                    f"{r.n_params / 1e9:.1f}B" + (" MoE" if r.moe else ""),
                    r.preset,
                    f"{r.max_context:,}{limit}",
                    f"{r.max_parallel:,}",
                    f"{r.kv_tokens_per_gib:,}" if r.kv_tokens_per_gib else "-",
                    format_bytes(r.headroom_bytes),
                )
            yield t
        if self.sweep.skipped:
            yield f"does not fit {self.min_ctx:,} tokens: " + ", ".join(
                m for m, _ in self.sweep.skipped
            )
        yield "(trained): the model's own context, not memory, is the limit"


def run_fit(
    models: Iterable[tuple[str, Callable[[], ModelSpec]]],
    base: PlanRequest,
    probe: Callable[[], Hardware],
    *,
    min_ctx: int = 4096,
    ctx: int | None = None,
    sort: SortKey = "params",
    keep: Callable[[ModelSpec], bool] = lambda _: True,
    jobs: int = 1,
) -> FitReport:
    """The sweep of :func:`membudget.fit.sweep` as a report (the machine read once)."""
    probe = functools.cache(probe)
    found = sweep(models, base, probe, min_ctx=min_ctx, ctx=ctx, keep=keep, jobs=jobs)
    budget = request_budget(base.resolved(), probe)
    hardware = f"{format_bytes(budget.memory_bytes)} RAM" + "".join(
        f", {dev} {format_bytes(n)}" for dev, n in budget.gpus
    )
    return FitReport(
        found, tuple(sort_rows(found.rows, sort)), base.engine, min_ctx, ctx or min_ctx, hardware
    )
