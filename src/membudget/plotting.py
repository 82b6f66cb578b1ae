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
    from matplotlib.figure import Figure

__all__ = ["COMPONENT_COLOURS", "PLOT_FORMATS", "colour_of", "draw", "figure"]

PLOT_FORMATS = ("png", "svg")
# One colour per component, in every panel and every command (the page's bar uses the same
# order): a component never changes colour with what else is drawn beside it.
COMPONENT_COLOURS: dict[str, str] = {
    "weights": "#4c72b0",
    "weights, repacked copy (CPU_REPACK)": "#2a3f66",
    "KV cache": "#dd8452",
    "KV cache, SWA": "#937860",
    "recurrent state": "#8172b3",
    "output (logits)": "#55a868",
    "compute buffer": "#64b5cd",
    "activations": "#8c8c8c",
    "non-torch": "#ccb974",
    "CUDA graphs": "#da8bc3",
    "KV cache, one request": "#dd8452",
}
_SPARE = ("#4d4d4d", "#a6761d", "#1b9e77", "#7570b3", "#e7298a")
_LIMIT = "#c44e52"


def colour_of(component: str) -> str:
    """The component's colour; a component not in the table gets a spare one by its name."""
    found = COMPONENT_COLOURS.get(component)
    if found is not None:
        return found
    return _SPARE[sum(component.encode()) % len(_SPARE)]


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
        colors=[colour_of(name) for name, _ in rows],
        alpha=0.85,
    )
    label_box = {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85, "linewidth": 0}
    budget = dict(curve.budgets).get(device)
    if budget is not None:
        ax.axhline(budget / GIB, color="black", linestyle="--", linewidth=1.2)
        ax.annotate(
            f"budget {format_bytes(budget)}",
            xy=(x[0], budget / GIB),
            xytext=(4, 4),
            textcoords="offset points",
            fontsize=8,
            bbox=label_box,
        )
    train = curve.n_ctx_train
    if train and curve.max_context >= train and train <= x[-1]:
        _vertical(ax, train, f"trained context {train:,}: the limit, not memory", ":", label_box)
    elif curve.max_context and curve.max_context <= x[-1]:
        text = f"largest context that fits: {curve.max_context:,}"
        _vertical(ax, curve.max_context, text, "-", label_box)
    ax.set_xlim(x[0], x[-1])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("memory (GiB, 2^30 bytes)")
    ax.set_title(f"{device}: {curve.model} on {curve.engine}", fontsize=10)
    ax.grid(alpha=0.3)
    # below the axes, never over the data or the labels
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=2, fontsize=8, frameon=False)


def _vertical(ax: Axes, at: int, text: str, style: str, box: dict[str, object]) -> None:
    """A vertical limit at context ``at``, named along it on a white box."""
    ax.axvline(at, color=_LIMIT, linestyle=style, linewidth=1.4)
    ax.annotate(
        text,
        xy=(at, 0),
        xytext=(-4, 6),
        textcoords="offset points",
        rotation=90,
        ha="right",
        va="bottom",
        fontsize=8,
        color=_LIMIT,
        bbox=box,
    )


def _compare(ax: Axes, bars: tuple[CompareBar, ...], budget: int | None, title: str) -> None:
    names: list[str] = []
    for bar in bars:
        names.extend(name for name, _ in bar.parts if name not in names)
    bottoms = [0.0] * len(bars)
    for name in names:
        heights = [dict(b.parts).get(name, 0) / GIB for b in bars]
        ax.bar(
            [b.label for b in bars],
            heights,
            bottom=bottoms,
            label=name,
            color=colour_of(name),
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
    ax.margins(y=0.18)  # room above the tallest bar for its label, below the title
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.3), ncols=2, fontsize=7, frameon=False)


def figure(
    curve: MemoryCurve,
    bars: tuple[CompareBar, ...] = (),
    compare_title: str = "",
    ctx: int = 0,
) -> Figure:
    """The plot as a matplotlib figure (a panel per device, and the comparison)."""
    _matplotlib()
    from matplotlib.figure import Figure  # noqa: PLC0415 - the plot extra

    panels = len(curve.devices) + (1 if bars else 0)
    fig = Figure(figsize=(6.4 * panels, 5.6), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    for ax, device in zip(axes, curve.devices, strict=False):
        _curve(ax, curve, device)
    if bars:
        budget = dict(curve.budgets).get(curve.devices[0]) if len(curve.devices) == 1 else None
        at = f"at {ctx:,} tokens" if ctx else "at the model's trained context"
        _compare(axes[-1], bars, budget, f"{compare_title} {at}")
    return fig


def draw(
    curve: MemoryCurve,
    out: Path,
    bars: tuple[CompareBar, ...] = (),
    compare_title: str = "",
    ctx: int = 0,
) -> str:
    """Write the plot to ``out`` (.png or .svg) and return the format used."""
    fmt = _format(out)
    fig = figure(curve, bars, compare_title, ctx)
    try:
        fig.savefig(out, format=fmt, dpi=110)
    except OSError as e:
        raise MembudgetError(f"Cannot write plot {str(out)!r}: {e.strerror or e}.") from None
    return fmt
