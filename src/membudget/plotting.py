"""Draw :mod:`membudget.curves` with matplotlib (the ``plot`` extra). An interface module: the
core never imports it.

Sizes on the axes are GiB (2**30 bytes), and the axis labels say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from membudget.curves import CompareBar, MemoryCurve
from membudget.errors import InvalidArgumentError, MembudgetError
from membudget.units import GIB, format_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["PLOT_FORMATS", "draw"]

PLOT_FORMATS = ("png", "svg")
_COLOURS = ("#4c72b0", "#dd8452", "#937860", "#55a868", "#8172b3", "#c44e52", "#64b5cd")
_INSTALL = "pip install 'membudget[plot]'"


def _matplotlib() -> None:
    try:
        import matplotlib  # noqa: PLC0415, F401
    except ImportError:
        raise MembudgetError(
            f"Plotting needs matplotlib, which is not installed. Install it with: {_INSTALL}"
        ) from None


def _format(out: Path) -> str:
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise InvalidArgumentError("--out", str(out), "must end in .png or .svg")
    return fmt


def _curve(ax: Axes, curve: MemoryCurve, device: str) -> None:
    x = list(curve.contexts)
    rows = [(name, values) for dev, name, values in curve.parts if dev == device]
    ax.stackplot(
        x,
        *[[v / GIB for v in values] for _, values in rows],
        labels=[name for name, _ in rows],
        colors=_COLOURS[: len(rows)],
        alpha=0.85,
    )
    budget = dict(curve.budgets).get(device)
    if budget is not None:
        ax.axhline(budget / GIB, color="black", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"budget {format_bytes(budget)}",
            xy=(x[0], budget / GIB),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=8,
        )
    if curve.max_context and curve.max_context <= x[-1]:
        ax.axvline(curve.max_context, color="#c44e52", linewidth=1.2)
        ax.annotate(
            f"largest context that fits: {curve.max_context:,}",
            xy=(curve.max_context, 0),
            xytext=(-4, 6),
            textcoords="offset points",
            rotation=90,
            ha="right",
            va="bottom",
            fontsize=8,
            color="#c44e52",
        )
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("memory (GiB, 2^30 bytes)")
    ax.set_title(f"{device}: {curve.model} on {curve.engine}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def _compare(ax: Axes, bars: tuple[CompareBar, ...], budget: int | None, title: str) -> None:
    names: list[str] = []
    for bar in bars:
        names.extend(name for name, _ in bar.parts if name not in names)
    bottoms = [0.0] * len(bars)
    for i, name in enumerate(names):
        heights = [dict(b.parts).get(name, 0) / GIB for b in bars]
        ax.bar(
            [b.label for b in bars],
            heights,
            bottom=bottoms,
            label=name,
            color=_COLOURS[i % len(_COLOURS)],
        )
        bottoms = [a + h for a, h in zip(bottoms, heights, strict=True)]
    for i, b in enumerate(bars):
        ax.annotate(
            f"max ctx\n{b.max_context:,}" if b.max_context else "does not fit",
            xy=(i, bottoms[i]),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            fontsize=7,
        )
    if budget is not None:
        ax.axhline(budget / GIB, color="black", linestyle="--", linewidth=1.2, label="budget")
    ax.set_ylabel("memory (GiB, 2^30 bytes)")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)


def draw(
    curve: MemoryCurve,
    out: Path,
    bars: tuple[CompareBar, ...] = (),
    compare_title: str = "",
    ctx: int = 0,
) -> str:
    """Write the plot to ``out`` (.png or .svg) and return the format used."""
    fmt = _format(out)
    _matplotlib()
    from matplotlib.figure import Figure  # noqa: PLC0415 - the plot extra

    panels = len(curve.devices) + (1 if bars else 0)
    fig = Figure(figsize=(6.4 * panels, 4.8), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, device in zip(axes, curve.devices, strict=False):
        _curve(ax, curve, device)
    if bars:
        budget = dict(curve.budgets).get(curve.devices[0]) if len(curve.devices) == 1 else None
        _compare(axes[-1], bars, budget, f"{compare_title} at {ctx:,} tokens")
    try:
        fig.savefig(out, format=fmt, dpi=110)
    except OSError as e:
        raise MembudgetError(f"Cannot write plot {str(out)!r}: {e.strerror or e}.") from None
    return fmt
