"""A shape-only model of a ggml compute graph and of ggml's graph allocator.

llama.cpp sizes its compute buffer by running ggml-alloc (``ggml/src/ggml-alloc.c``) over the
worst-case graph: every tensor the graph computes gets an offset in one buffer, is freed after its
last use, and the buffer is as large as the highest offset reached. The figure therefore depends on
the graph's node order and on where each freed block lands, not only on the largest tensors. This
module reproduces that process without any data:

- :class:`Graph` holds tensors (type, shape, strides, sources, view source, input/output flags)
  and orders them as ``ggml_build_forward_expand`` does: a depth-first walk over sources, left to
  right, that appends leafs (tensors without an op) and nodes separately.
- :func:`allocate` replays ``ggml_gallocr_alloc_graph_impl`` and ``ggml_dyn_tallocr``: leafs
  first, best fit among the free blocks other than the last, the last block grown otherwise;
  in-place reuse of a sole-consumer parent for the ops ``ggml_op_can_inplace`` lists; a parent is
  freed after its last consumer; graph outputs are never freed or reused.

Rules read from llama.cpp 0c1e570 (the llama.cpp inside llama-cpp-python 0.3.36).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from typing import Literal

from membudget._gguf import GGML_QUANT_SIZES, GGMLQuantizationType

__all__ = [
    "Graph",
    "Placement",
    "Snapshot",
    "Tensor",
    "allocate",
    "place",
    "replay",
    "type_size",
]

Dims = tuple[int, int, int, int]
Flag = Literal["input", "output"]

# ggml_op_can_inplace (ggml-alloc.c): ops whose result may take over a parent's memory.
_INPLACE_OPS = frozenset(
    {
        "FILL",
        "SCALE",
        "DIAG_MASK_ZERO",
        "DIAG_MASK_INF",
        "ADD",
        "ADD_ID",
        "ADD1",
        "SUB",
        "MUL",
        "DIV",
        "SQR",
        "SQRT",
        "LOG",
        "UNARY",
        "ROPE",
        "ROPE_BACK",
        "SILU_BACK",
        "RMS_NORM",
        "RMS_NORM_BACK",
        "CLAMP",
        "SOFT_MAX",
        "SOFT_MAX_BACK",
    }
)


@cache
def type_size(type_name: str) -> tuple[int, int]:
    """(block size, bytes per block) of a ggml type, from gguf-py's table."""
    return GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]]


def contiguous_strides(type_name: str, ne: Dims) -> Dims:
    block, size = type_size(type_name)
    nb0 = size
    nb1 = nb0 * (ne[0] // block)
    nb2 = nb1 * ne[1]
    return (nb0, nb1, nb2, nb2 * ne[2])


@dataclass(eq=False, slots=True)
class Tensor:
    """One tensor of the graph: what ggml-alloc needs to know about it."""

    type: str
    ne: Dims
    nb: Dims
    op: str = "NONE"
    src: tuple[Tensor | None, ...] = ()
    view_src: Tensor | None = None
    external: bool = False  # weights and caches: allocated elsewhere
    flags: frozenset[Flag] = frozenset()
    """``input`` / ``output``; replaced, never changed in place (see :meth:`mark`)."""
    name: str = ""
    slot: int = -1
    """An external's layer (``n_layer``: the output layer; -1: the input layer)."""
    kind: str = ""
    """An external's kind: ``w`` weight, ``e`` routed expert, ``a`` a Mamba scan's ``ssm_a``,
    ``c`` cache; or ``n``, a layer's weighted norm (the node llama.cpp may pin to its layer's
    device, see ``ops.GraphBuilder._named_norm``)."""
    layer: int = -1
    """The layer being built when the tensor was made (-1: before the first; ``n_layer``:
    the output layer), for :mod:`.reduce`."""
    _size: int = field(init=False, default=-1, repr=False)

    @property
    def n_bytes(self) -> int:
        """``ggml_nbytes``: the last element's end, through the strides (computed when first
        asked: most tensors of a graph, weights and views, are never placed)."""
        size = self._size
        if size < 0:
            block, unit = type_size(self.type)
            ne0, ne1, ne2, ne3 = self.ne
            nb0, nb1, nb2, nb3 = self.nb
            if not (ne0 and ne1 and ne2 and ne3):
                size = 0
            else:
                rest = (ne1 - 1) * nb1 + (ne2 - 1) * nb2 + (ne3 - 1) * nb3
                first = unit + (ne0 - 1) * nb0 if block == 1 else ne0 * nb0 // block
                size = first + rest
            self._size = size
        return size

    def mark(self, flag: Flag) -> None:
        """Flag this tensor (``ggml_set_output``, ``ggml_set_input``)."""
        self.flags = self.flags | {flag}

    @property
    def is_view(self) -> bool:
        return self.view_src is not None

    @property
    def n_elements(self) -> int:
        return self.ne[0] * self.ne[1] * self.ne[2] * self.ne[3]

    def is_contiguous(self) -> bool:
        return self.nb == contiguous_strides(self.type, self.ne)


def _dims(*ne: int) -> Dims:
    padded = (*ne, 1, 1, 1, 1)
    return (padded[0], padded[1], padded[2], padded[3])


class Graph:
    """A ggml graph under construction: ops create tensors, ``expand`` orders them."""

    def __init__(self) -> None:
        self.nodes: list[Tensor] = []
        self.leafs: list[Tensor] = []
        self._seen: set[Tensor] = set()
        self.layer = -1
        """The layer being built: externals created now belong to it."""

    # -- ordering ---------------------------------------------------------------------------
    def expand(self, t: Tensor) -> None:
        """``ggml_build_forward_expand``: depth-first over sources, post-order."""
        seen = self._seen
        if t in seen:
            return
        seen.add(t)
        nodes, leafs = self.nodes, self.leafs
        stack = [t]
        pending = [iter(t.src)]
        while stack:
            for s in pending[-1]:
                if s is not None and s not in seen:
                    seen.add(s)
                    stack.append(s)
                    pending.append(iter(s.src))
                    break
            else:
                node = stack.pop()
                pending.pop()
                (leafs if node.op == "NONE" else nodes).append(node)

    # -- tensors ----------------------------------------------------------------------------
    def new(self, type_name: str, *ne: int, name: str = "", flags: tuple[Flag, ...] = ()) -> Tensor:
        d = _dims(*ne)
        return Tensor(
            type_name,
            d,
            contiguous_strides(type_name, d),
            flags=frozenset(flags),
            name=name,
            layer=self.layer,
        )

    def input(self, type_name: str, *ne: int, name: str = "") -> Tensor:
        return self.new(type_name, *ne, name=name, flags=("input",))

    def external(self, type_name: str, *ne: int, name: str = "", kind: str = "w") -> Tensor:
        """A weight (``w``), routed expert (``e``) or cache (``c``) of the current layer."""
        t = self.new(type_name, *ne, name=name)
        t.external = True
        t.slot = self.layer
        t.kind = kind
        return t

    def op(self, op: str, type_name: str, ne: tuple[int, ...], *src: Tensor | None) -> Tensor:
        """A new contiguous result of ``op`` (``ggml_new_tensor``)."""
        d = _dims(*ne)
        return Tensor(
            type_name, d, contiguous_strides(type_name, d), op=op, src=src, layer=self.layer
        )

    def _view(self, op: str, a: Tensor, ne: Dims, nb: Dims, *src: Tensor | None) -> Tensor:
        root = a.view_src or a
        return Tensor(a.type, ne, nb, op=op, src=src or (a,), view_src=root, layer=self.layer)

    # views
    def reshape(self, a: Tensor, *ne: int) -> Tensor:
        d = _dims(*ne)
        return self._view("RESHAPE", a, d, contiguous_strides(a.type, d))

    def view(self, a: Tensor, ne: tuple[int, ...], nb: tuple[int, ...]) -> Tensor:
        """``ggml_view_Nd``: ``nb`` lists strides 1..N-1; the rest follow contiguously."""
        d = _dims(*ne)
        strides = [type_size(a.type)[1], *nb]
        while len(strides) < 4:
            strides.append(strides[-1] * d[len(strides) - 1])
        return self._view("VIEW", a, d, (strides[0], strides[1], strides[2], strides[3]))

    def permute(self, a: Tensor, *axes: int) -> Tensor:
        ne = [0, 0, 0, 0]
        nb = [0, 0, 0, 0]
        for i, ax in enumerate(axes):
            ne[ax] = a.ne[i]
            nb[ax] = a.nb[i]
        return self._view("PERMUTE", a, _dims(*ne), (nb[0], nb[1], nb[2], nb[3]))

    def transpose(self, a: Tensor) -> Tensor:
        ne = (a.ne[1], a.ne[0], a.ne[2], a.ne[3])
        nb = (a.nb[1], a.nb[0], a.nb[2], a.nb[3])
        return self._view("TRANSPOSE", a, ne, nb)

    def set_rows(self, dst: Tensor, rows: Tensor, idxs: Tensor) -> Tensor:
        return self._view("SET_ROWS", dst, dst.ne, dst.nb, dst, rows, idxs)

    def copy_into(self, a: Tensor, b: Tensor) -> Tensor:
        """``ggml_cpy``: the result is a view of the destination ``b``."""
        return self._view("CPY", b, b.ne, b.nb, a, b)

    def inplace(self, op: str, a: Tensor) -> Tensor:
        """``ggml_<op>_inplace``: the result is a view of ``a``."""
        return self._view(op, a, a.ne, a.nb, a)

    # computations
    def same(self, op: str, a: Tensor, *src: Tensor | None) -> Tensor:
        """An op whose result has ``a``'s type and shape (``ggml_dup_tensor``)."""
        return self.op(op, a.type, a.ne, a, *src)

    def f32(self, op: str, ne: tuple[int, ...], *src: Tensor | None) -> Tensor:
        return self.op(op, "F32", ne, *src)

    def mul_mat(self, a: Tensor, b: Tensor) -> Tensor:
        return self.f32("MUL_MAT", (a.ne[1], b.ne[1], b.ne[2], b.ne[3]), a, b)

    def get_rows(self, a: Tensor, idx: Tensor) -> Tensor:
        out = "I32" if a.type == "I32" else "F32"
        return self.op("GET_ROWS", out, (a.ne[0], idx.ne[0], idx.ne[1], idx.ne[2]), a, idx)

    def cont(self, a: Tensor, *ne: int) -> Tensor:
        return self.op("CONT", a.type, ne or a.ne, a)


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


class _Allocator:
    """``ggml_dyn_tallocr`` with one chunk: free blocks sorted by offset, the last one open."""

    def __init__(self, alignment: int) -> None:
        self.alignment = alignment
        self.blocks: list[list[int]] = [[0, 1 << 62]]  # [offset, size]
        self.max_size = 0

    def alloc(self, size: int) -> int:
        size = _align(size, self.alignment)
        best = -1
        best_size = 1 << 63
        for i, (_, bsize) in enumerate(self.blocks[:-1]):
            if bsize >= size and bsize <= best_size:
                best, best_size = i, bsize
        if best == -1:
            best = len(self.blocks) - 1
        block = self.blocks[best]
        offset = block[0]
        block[0] += size
        block[1] -= size
        if block[1] == 0:
            del self.blocks[best]
        self.max_size = max(self.max_size, offset + size)
        return offset

    def free(self, offset: int, size: int) -> None:
        size = _align(size, self.alignment)
        blocks = self.blocks
        for i, block in enumerate(blocks):
            if block[0] + block[1] == offset:
                block[1] += size
                if i + 1 < len(blocks) and block[0] + block[1] == blocks[i + 1][0]:
                    block[1] += blocks[i + 1][1]
                    del blocks[i + 1]
                return
            if offset + size == block[0]:
                block[0] = offset
                block[1] += size
                if i > 0 and blocks[i - 1][0] + blocks[i - 1][1] == block[0]:
                    blocks[i - 1][1] += block[1]
                    del blocks[i]
                return
        pos = 0
        while pos < len(blocks) and blocks[pos][0] < offset:
            pos += 1
        blocks.insert(pos, [offset, size])


@dataclass(slots=True)
class _Info:
    n_children: int = 0
    n_views: int = 0
    allocated: bool = False
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """ggml-alloc's state at one point of the walk (:func:`replay`'s ``snapshots``)."""

    blocks: tuple[tuple[tuple[int, int], ...], ...]
    """Each buffer's free blocks, (offset, size) by offset, the open last one included."""
    live: dict[Tensor, tuple[int, int, int, int]]
    """Every tensor placed and not yet freed: its offset, uses left, views left and buffer."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where ggml-alloc put each tensor it owns, and the buffer that needs."""

    n_bytes: int
    offsets: dict[Tensor, int]
    """Offset of every tensor ggml-alloc placed (not views, not external tensors)."""
    reused: dict[Tensor, Tensor]
    """Tensors that took over a parent's memory in place: tensor -> parent."""


def allocate(graph: Graph, alignment: int = 32) -> int:
    """Bytes of the buffer ggml-alloc reserves for ``graph`` (one backend, one chunk)."""
    return place(graph, alignment).n_bytes


def place(graph: Graph, alignment: int = 32) -> Placement:
    """Replay ``ggml_gallocr_alloc_graph_impl`` over ``graph``."""
    offsets: dict[Tensor, int] = {}
    reused: dict[Tensor, Tensor] = {}
    (size,) = replay(graph.leafs, graph.nodes, [alignment], offsets=offsets, reused=reused)
    return Placement(size, offsets, reused)


def replay(
    leafs: Sequence[Tensor],
    nodes: Sequence[Tensor],
    alignments: Sequence[int],
    *,
    sources: Mapping[Tensor, tuple[Tensor | None, ...]] | None = None,
    buffer_of: Mapping[Tensor, int] | None = None,
    alloc_size: Sequence[Callable[[Tensor], int]] | None = None,
    offsets: dict[Tensor, int] | None = None,
    reused: dict[Tensor, Tensor] | None = None,
    kept: Collection[Tensor] = (),
    snapshots: dict[int, Snapshot | None] | None = None,
) -> list[int]:
    """``ggml_gallocr_alloc_graph_impl`` with one allocator per buffer (``ggml_gallocr_new_n``):
    leafs first; per node, its sources, then itself (in place over a sole-consumer parent for
    the ops ``ggml_op_can_inplace`` lists), then the parents it was the last consumer of. A
    tensor goes to buffer ``buffer_of[t]`` (the last when not given) at that buffer's alignment
    and ``alloc_size``; ``sources`` overrides a node's sources (the scheduler's copies);
    ``kept`` tensors count as flagged input and output (the scheduler's pipeline copies).
    Returns each buffer's size; fills ``offsets`` and ``reused`` when given, and
    ``snapshots`` (keyed by positions in ``nodes``) with the allocator's state as the walk
    reaches each of those nodes."""
    mems = [_Allocator(a) for a in alignments]
    last = len(mems) - 1
    kept = frozenset(kept)
    # Every tensor the walk meets gets an index; its facts and its state live in lists.
    tensors = list(dict.fromkeys(chain(leafs, nodes)))
    index = {t: i for i, t in enumerate(tensors)}
    n_base = len(tensors)
    ig = index.get

    def number(t: Tensor) -> int:
        i = ig(t)
        if i is None:
            i = index[t] = len(tensors)
            tensors.append(t)
        return i

    leaf_ix = [index[t] for t in leafs]
    node_ix = [index[t] for t in nodes]
    # each node's sources, once, without the empty ones
    node_srcs: list[tuple[int, ...]] = []
    for t in nodes:
        found = t.src if sources is None else sources.get(t, t.src)
        ss = tuple([ig(x, -1) for x in found if x is not None])
        if -1 in ss:
            ss = tuple([number(x) for x in found if x is not None])
        node_srcs.append(ss)
    srcs_of: list[tuple[int, ...]] = [()] * n_base
    for i, ss in zip(node_ix, node_srcs, strict=True):
        srcs_of[i] = ss
    roots = [-1 if (v := t.view_src) is None else ig(v, -1) for t in tensors]
    # What only a source or a view led to (a graph's own tensors are all leafs or nodes):
    # numbered too, with their own sources (for an in-place op) and roots.
    k = 0
    while k < len(tensors):
        t = tensors[k]
        if k >= len(roots):
            roots.append(-1)
        if k >= n_base:
            found = t.src if sources is None else sources.get(t, t.src)
            srcs_of.append(tuple([number(x) for x in found if x is not None]))
        if roots[k] < 0 and t.view_src is not None:
            roots[k] = number(t.view_src)
        k += 1
    n = len(tensors)
    # facts: not ggml-alloc's to place (external or a view), may take a parent's memory,
    # flagged output, flagged input
    owned = [not (t.external or t.view_src is not None) for t in tensors]
    inplace = [t.op in _INPLACE_OPS for t in tensors]
    is_out = [("output" in t.flags) or (t in kept) for t in tensors]
    is_in = [("input" in t.flags) or (t in kept) for t in tensors]
    # state
    n_children = [0] * n
    n_views = [0] * n
    allocated = [False] * n
    offset = [0] * n
    at = [0] * n
    sizes: list[int] = [-1] * n

    def size_of(i: int, b: int) -> int:
        got = sizes[i]
        if got < 0:
            t = tensors[i]
            got = sizes[i] = t.n_bytes if alloc_size is None else alloc_size[b](t)
        return got

    def allocate_node(i: int) -> None:
        # the caller has checked owned[i] and not allocated[i]
        allocated[i] = True
        t = tensors[i]
        if inplace[i]:
            for j in srcs_of[i]:
                # only a tensor ggml-alloc owns can be reused; a view never is one
                if not allocated[j] or is_out[j]:
                    continue
                parent = tensors[j]
                if (parent.type, parent.ne, parent.nb) != (t.type, t.ne, t.nb):
                    continue
                # same layout means same size: no spare tail to give back (free_extra_space)
                if n_children[j] == 1 and n_views[j] == 0:
                    offset[i] = offset[j]
                    at[i] = at[j]
                    if offsets is not None:
                        offsets[t] = offset[j]
                    if reused is not None:
                        reused[t] = parent
                    allocated[j] = False  # the child frees it
                    return
        b = last if buffer_of is None else buffer_of.get(t, last)
        at[i] = b
        offset[i] = mems[b].alloc(size_of(i, b))
        if offsets is not None:
            offsets[t] = offset[i]

    def free_node(i: int) -> None:
        if is_out[i]:
            return
        b = at[i]
        mems[b].free(offset[i], size_of(i, b))
        allocated[i] = False

    for i in leaf_ix:
        if owned[i] and not allocated[i]:
            allocate_node(i)
    for i, ss in zip(node_ix, node_srcs, strict=True):
        r = roots[i]
        if r >= 0 and tensors[i].op != "NONE":
            n_views[r] += 1
        if is_in[i] and owned[i] and not allocated[i]:
            allocate_node(i)
        for j in ss:
            n_children[j] += 1
            if is_in[j] and owned[j] and not allocated[j]:
                allocate_node(j)
    for pos, (i, ss) in enumerate(zip(node_ix, node_srcs, strict=True)):
        if snapshots is not None and pos in snapshots:
            snapshots[pos] = Snapshot(
                tuple(tuple((b[0], b[1]) for b in m.blocks) for m in mems),
                {
                    tensors[x]: (offset[x], n_children[x], n_views[x], at[x])
                    for x in range(n)
                    if allocated[x]
                },
            )
        for j in ss:
            if owned[j] and not allocated[j]:
                allocate_node(j)
        if owned[i] and not allocated[i]:
            allocate_node(i)
        for j in ss:
            n_children[j] -= 1
            if n_children[j] or n_views[j]:
                continue
            r = roots[j]
            if r >= 0:
                n_views[r] -= 1
                if n_views[r] == 0 and n_children[r] == 0 and allocated[r]:
                    free_node(r)
            elif allocated[j]:
                free_node(j)
    return [m.max_size for m in mems]
