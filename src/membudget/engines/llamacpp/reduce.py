"""A deep model's compute buffers from a short graph, where the short graph shows that the
whole one needs the same.

A worst-case graph is a prefix (inputs, embeddings), one subgraph per layer, and the output
layer. Layers of one *class* (:func:`~.layout.layer_classes`: same geometry, same stored
tensors, same place in the architecture's layer pattern; for a split, the same devices too)
build the same subgraph, fed by the previous layer's output. Deep models are long runs of
identical *periods* of layers (one layer, or Gemma 3's six, Llama 4's four).
:func:`kept_layers` keeps the first ``HEAD`` and the last ``TAIL`` periods of each run of
more than that; :func:`short_figures` walks ggml-alloc over the short graph (or over the
scheduler's copy of it) and accepts its buffers only where, for every run, two consecutive
stretches of the walk (one period each, or a cycle of ``r`` periods where ``r`` divides the
periods left out) show:

- the same nodes (op, type, shape, strides, flags, backend), reading the same long-lived
  tensors and, at the same positions, the previous stretch's tensors (the scheduler's copies
  and dependencies included); none of them placed before the walk (an input) or kept to its
  end (an output);
- ggml-alloc entering the second as it entered the first, shifted by one stretch: the same
  free blocks on every backend, the long-lived tensors at the same offsets, and the previous
  stretch's live tensors at the same positions, offsets, buffers and remaining uses.

For ggml-alloc this is a proof: every stretch left out starts from that same state and does
what the second did, at the same offsets, so the tail starts as it does here; long-lived
tensors are freed (or taken over in place) only by their last uses, which the two kept tail
periods and what follows hold in both graphs. So the short graph's buffers are the whole
graph's, to the byte. For the scheduler's split it rests on the scheduler's passes being
local to a node and its sources, or walks whose state is one backend (the spreads) or the
current split (its copies): a stretch that repeats its predecessor's output repeats its
state. Every split and one-backend figure a sweep of the catalogue computes was checked
against the whole graph (``tests/test_reduce.py`` keeps a sample). Where a proof fails, the
caller builds the whole graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

from membudget.engines.llamacpp.ggml import Graph, Snapshot, Tensor, replay

__all__ = [
    "HEAD",
    "HEAD_CYCLING",
    "PERIOD_MAX",
    "TAIL",
    "Run",
    "allocate_short",
    "kept_layers",
    "short_figures",
]

HEAD = 4
"""Leading periods kept of a run: the first meets the state the prefix left; two consecutive
ones of the others carry the proof (ggml-alloc may need a period more to settle)."""
HEAD_CYCLING = 9
"""Leading periods kept when ``HEAD`` proved nothing: enough for ggml-alloc to settle into a
cycle of up to three periods and show it twice."""
TAIL = 2
"""Trailing periods kept: a long-lived tensor's last uses (and the output rows of the last
layer) stay in the short graph."""
_CYCLES = 6
"""Cycles of one, two or three periods all divide this."""
PERIOD_MAX = 8
"""The longest layer pattern looked for (Gemma 3 repeats every six layers)."""


@dataclass(frozen=True, slots=True)
class Run:
    """``count`` periods of ``period`` layers from layer ``start`` that repeat one class
    pattern; the short graph keeps the first ``head`` and the last ``TAIL``."""

    start: int
    period: int
    count: int
    head: int
    """Leading periods kept; the short graph leaves out ``count - head - TAIL``."""

    @property
    def left_out(self) -> int:
        return self.count - self.head - TAIL

    def layers(self, k: int) -> range:
        """The layers of the ``k``-th period."""
        first = self.start + k * self.period
        return range(first, first + self.period)


def kept_layers(
    classes: Sequence[Hashable], head: int = HEAD
) -> tuple[tuple[int, ...], tuple[Run, ...]]:
    """The layers a short graph keeps, and the runs it shortens (the shortest period found
    first at each layer; a run needs more than ``head + TAIL`` periods)."""
    n = len(classes)
    keep: list[int] = []
    runs: list[Run] = []
    least = head + TAIL + 1
    i = 0
    while i < n:
        found = None
        for p in range(1, PERIOD_MAX + 1):
            if i + least * p > n:
                break
            pattern = classes[i : i + p]
            m = 1
            while i + (m + 1) * p <= n and classes[i + m * p : i + (m + 1) * p] == pattern:
                m += 1
            if m >= least:
                # a cycle of r periods proves only where r divides what is left out: keep a
                # few more periods so that 2 and 3 do (1 always does)
                extra = (m - head - TAIL) % _CYCLES if head > HEAD else 0
                if m - head - extra - TAIL < 1:
                    extra = 0
                found = Run(i, p, m, head + extra)
                break
        if found is None:
            keep.append(i)
            i += 1
            continue
        runs.append(found)
        keep.extend(range(i, i + found.head * found.period))
        keep.extend(range(i + (found.count - TAIL) * found.period, i + found.count * found.period))
        i += found.count * found.period
    return tuple(keep), tuple(runs)


def allocate_short(
    graph: Graph, runs: Sequence[Run], alignment: int, head: int = HEAD
) -> int | None:
    """ggml-alloc's buffer for the short ``graph`` (built with the layers
    ``kept_layers(classes, head)`` keeps) on one backend, or None where some run's periods
    cannot be shown to repeat (then the whole graph is needed)."""

    def walk(snapshots: dict[int, Snapshot | None]) -> list[int]:
        return replay(graph.leafs, graph.nodes, [alignment], snapshots=snapshots)

    found = short_figures(graph.nodes, runs, head, walk)
    return None if found is None else found[0]


def short_figures(
    nodes: Sequence[Tensor],
    runs: Sequence[Run],
    head: int,
    walk: Callable[[dict[int, Snapshot | None]], list[int]],
    sources: Mapping[Tensor, tuple[Tensor | None, ...]] | None = None,
    buffer_of: Mapping[Tensor, int] | None = None,
) -> list[int] | None:
    """Every buffer ``walk`` (ggml-alloc over ``nodes``, with ``sources`` for some nodes'
    sources and ``buffer_of`` their buffers: the scheduler's graph copy) reserves for a short
    graph, or None where some run's periods cannot be shown to repeat. ggml-alloc may take a
    period or two to settle and may then cycle through a few placements: a run is proved by
    two consecutive groups of ``r`` periods (``r`` from 1 to ``head // 3``, dividing what the
    short graph leaves out) entered in the same state."""
    # A period's stretch of the walk runs from its first node to the next period's first:
    # the walk may finish a layer's last nodes (a state written back) inside the next one's.
    first: dict[int, int] = {}
    for i, t in enumerate(nodes):
        first.setdefault(t.layer, i)
    periods = []  # per run: the node positions of each leading period
    for run in runs:
        starts = [
            min((first[la] for la in run.layers(k) if la in first), default=-1)
            for k in (*range(run.head), run.count - TAIL)
        ]
        if any(b <= a for a, b in itertools.pairwise(starts)) or starts[0] < 0:
            return None
        periods.append([list(range(a, b)) for a, b in itertools.pairwise(starts[: head + 1])])
    snapshots: dict[int, Snapshot | None] = {}
    for spans in periods:
        for span in spans[1:]:
            if span:
                snapshots[span[0]] = None
    sizes = walk(snapshots)
    shape = _Shape(sources or {}, buffer_of)
    for run, spans in zip(runs, periods, strict=True):
        proved = False
        for r in range(1, head // 3 + 1):
            if run.left_out % r:
                continue  # the tail would enter the cycle elsewhere than it does here
            groups = [
                [i for span in spans[g * r : (g + 1) * r] for i in span] for g in range(head // r)
            ]
            if any(
                _repeats(nodes, groups[j - 1 : j + 2], snapshots, shape)
                for j in range(1, len(groups) - 1)
            ):
                proved = True
                break
        if not proved:
            return None
    return sizes


@dataclass(frozen=True, slots=True)
class _Shape:
    """How the walk sees a node beyond the node itself: its sources as the scheduler rewired
    them (to its copies), and its buffer."""

    sources: Mapping[Tensor, tuple[Tensor | None, ...]]
    buffer_of: Mapping[Tensor, int] | None

    def src(self, t: Tensor) -> tuple[Tensor | None, ...]:
        return self.sources.get(t, t.src)

    def buffer(self, t: Tensor) -> int:
        return -1 if self.buffer_of is None else self.buffer_of.get(t, -1)


def _repeats(
    nodes: Sequence[Tensor],
    spans: list[list[int]],
    snapshots: dict[int, Snapshot | None],
    shape: _Shape,
) -> bool:
    """Whether two consecutive stretches of the walk (``spans[1]``, ``spans[2]``;
    ``spans[0]`` the one before them) build the same nodes over the same inputs, and
    ggml-alloc enters the second of them as it entered the first."""
    at_first, at_second, at_third = spans
    if not at_second or len(at_second) != len(at_third) or not at_first:
        return False
    before, after = snapshots.get(at_second[0]), snapshots.get(at_third[0])
    if before is None or after is None:
        return False
    first, second, third = ([nodes[i] for i in span] for span in spans)
    # a tensor of the previous period, of this one, or long-lived, by position
    place: dict[Tensor, tuple[int, int]] = {}
    for j, period in enumerate((first, second, third)):
        for q, t in enumerate(period):
            place[t] = (j, q)

    def role(t: Tensor | None, k: int) -> object:
        """``t`` as node ``k``'s period sees it: one of its own (by position), one of the
        period before (by position), a weight or cache (by layout: ggml-alloc never places
        them), or a long-lived tensor (itself)."""
        if t is None:
            return None
        at = place.get(t)
        if at is not None:
            if at[0] == k:
                return ("own", at[1])
            if at[0] == k - 1:
                return ("previous", at[1])
            return ("older", t)
        if t.external:
            return ("external", t.type, t.ne, t.nb, t.kind)
        return ("long-lived", t)

    for a, b in zip(second, third, strict=True):
        if (a.op, a.type, a.ne, a.nb, a.flags, a.external, a.kind, shape.buffer(a)) != (
            b.op,
            b.type,
            b.ne,
            b.nb,
            b.flags,
            b.external,
            b.kind,
            shape.buffer(b),
        ):
            return False
        if a.flags:  # allocated before the walk or kept to its end
            return False
        src_a, src_b = shape.src(a), shape.src(b)
        if len(src_a) != len(src_b) or role(a.view_src, 1) != role(b.view_src, 2):
            return False
        if any(role(x, 1) != role(y, 2) for x, y in zip(src_a, src_b, strict=True)):
            return False
    if before.blocks != after.blocks:
        return False
    # the live tensors, shifted by one period
    shifted, seen = _live(before, place, 0), _live(after, place, 1)
    return shifted is not None and shifted == seen


def _live(
    state: Snapshot, place: Mapping[Tensor, tuple[int, int]], previous: int
) -> dict[object, tuple[int, int, int, int]] | None:
    """The live tensors as a stretch's start sees them: long-lived ones by identity (offset and
    buffer; their remaining uses fall by one stretch's each time), the stretch ``previous``'s
    by position (everything); None if a tensor of any other stretch is live."""
    found: dict[object, tuple[int, int, int, int]] = {}
    for t, (offset, uses, views, buffer) in state.live.items():
        at = place.get(t)
        if at is None:
            found[("long-lived", t)] = (offset, -1, -1, buffer)
        elif at[0] == previous:
            found[("previous", at[1])] = (offset, uses, views, buffer)
        else:
            return None
    return found
