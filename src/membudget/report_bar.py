"""The memory breakdown drawn as one bar against the budget, for terminals.

Each part gets its own fill character as well as its own colour, so the bar still reads when
colour is off (``NO_COLOR``). The bar is scaled to the larger of the total and the budget; a
``|`` marks where the budget ends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from membudget.units import format_bytes

if TYPE_CHECKING:
    from rich.text import Text

__all__ = ["budget_bar"]

_STYLES = (
    ("█", "blue"),
    ("▓", "magenta"),
    ("▒", "cyan"),
    ("░", "yellow"),
    ("▚", "green"),
    ("▞", "red"),
    ("▪", "white"),
)


def budget_bar(parts: list[tuple[str, int]], budget_bytes: int | None, width: int = 60) -> Text:
    """A bar of ``parts`` (label, bytes) against ``budget_bytes``, with a legend below it."""
    from rich.text import Text  # noqa: PLC0415 - rich only when a console renders

    parts = [(label, n) for label, n in parts if n > 0]
    total = sum(n for _, n in parts)
    scale = max(total, budget_bytes or 0, 1)
    cells: list[tuple[str, str]] = []
    acc = 0
    for i, (_, n) in enumerate(parts):
        char, style = _STYLES[i % len(_STYLES)]
        start = acc * width // scale
        acc += n
        end = max(acc * width // scale, start + 1)
        cells.extend((char, style) for _ in range(end - start))
    mark = min(width, budget_bytes * width // scale) if budget_bytes is not None else None
    bar = Text("[")
    for pos in range(max(width, len(cells))):
        if mark is not None and pos == mark:
            bar.append("|", style="bold")
        char, style = cells[pos] if pos < len(cells) else (" ", "")
        bar.append(char, style=style)
    if mark is not None and mark >= max(width, len(cells)):
        bar.append("|", style="bold")
    bar.append("]")
    if budget_bytes is not None:
        bar.append(f" {format_bytes(total)} of {format_bytes(budget_bytes)} budget (| marks it)")
    legend = Text()
    for i, (label, n) in enumerate(parts):
        char, style = _STYLES[i % len(_STYLES)]
        legend.append(f"  {char}", style=style)
        legend.append(f" {label} {format_bytes(n)}")
    bar.append("\n")
    bar.append_text(legend)
    return bar
