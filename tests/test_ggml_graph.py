"""The shape-only ggml graph and the replay of ggml-alloc (membudget.engines.llamacpp.ggml)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget.engines.llamacpp.ggml import Graph, Placement, Tensor, allocate, place

MIB = 1 << 20


def test_expand_orders_sources_depth_first_and_separates_leafs() -> None:
    """ggml_build_forward_expand: sources left to right before the node; leafs apart."""
    g = Graph()
    a = g.input("F32", 4, name="a")
    w = g.external("F16", 4, 8, name="w")
    mm = g.mul_mat(w, a)
    mm.name = "mm"
    out = g.same("ADD", mm, a)
    out.name = "out"
    g.expand(out)
    g.expand(out)  # a second expand adds nothing
    assert [t.name for t in g.nodes] == ["mm", "out"]
    assert [t.name for t in g.leafs] == ["w", "a"]


def test_views_share_their_source_and_are_not_placed() -> None:
    g = Graph()
    x = g.input("F32", 64, 8)
    r = g.reshape(x, 8, 8, 8)
    p = g.permute(r, 0, 2, 1, 3)
    assert r.view_src is x  # the root, however deep the chain
    assert p.view_src is x
    assert p.ne == (8, 8, 8, 1)
    assert p.nb == (4, 256, 32, 2048)
    out = g.cont(p)
    g.expand(out)
    placed = place(g)
    assert r not in placed.offsets
    assert p not in placed.offsets
    assert x in placed.offsets
    assert out in placed.offsets


def test_n_bytes_follows_strides_and_blocks() -> None:
    g = Graph()
    assert g.new("F16", 10, 3).n_bytes == 60
    assert g.new("Q8_0", 64, 2).n_bytes == 2 * 68  # 34 bytes per block of 32
    t = g.new("F32", 8, 4)
    assert g.view(t, (4, 4), (32,)).n_bytes == 4 * 4 + 3 * 32
    assert g.new("F32", 0, 5).n_bytes == 0


def test_in_place_ops_reuse_a_sole_parent() -> None:
    """RMS_NORM -> MUL -> ADD on one tensor: one buffer's worth, each op in place."""
    g = Graph()
    x = g.input("F32", 256, 4)
    h = g.same("UNARY", g.same("MUL", g.same("RMS_NORM", g.f32("CONT", x.ne, x)), x))
    h.mark("output")
    g.expand(h)
    placed = place(g)
    assert len(placed.reused) == 3
    assert placed.n_bytes == 2 * 4096  # the input and one working tensor


def test_outputs_are_neither_reused_nor_freed() -> None:
    g = Graph()
    x = g.input("F32", 1024)
    y = g.f32("CONT", x.ne, x)
    y.mark("output")
    z = g.same("SCALE", y)  # would reuse y in place, but y is an output
    g.expand(z)
    placed = place(g)
    assert z not in placed.reused
    # z lands in the block the consumed input left, never on y
    assert placed.offsets[z] == placed.offsets[x] != placed.offsets[y]
    assert placed.n_bytes == 2 * 4096


def test_best_fit_prefers_the_smallest_free_block_that_fits() -> None:
    """Two holes (1 KiB, 4 KiB) below a live tensor: a 1 KiB tensor takes the small one."""
    g = Graph()
    small = g.input("F32", 256)
    big = g.input("F32", 1024)
    keep = g.input("F32", 64)
    used_small = g.f32("CONT", small.ne, small)
    used_big = g.f32("CONT", big.ne, big)
    later = g.f32("SUM_ROWS", (256,), used_small, used_big, keep)
    later.mark("output")
    g.expand(later)
    placed = place(g)
    # small, big and keep sit at 0, 1 KiB, 5 KiB; once the inputs are consumed, the two CONT
    # results moved out above them and the holes they left can hold `later`.
    assert placed.offsets[small] == 0
    assert placed.offsets[big] == 1024
    assert placed.n_bytes >= placed.offsets[later] + later.n_bytes


# -- random graphs -------------------------------------------------------------------------
_OPS = ("ADD", "MUL", "SCALE", "UNARY", "RMS_NORM", "SOFT_MAX", "CONT", "MUL_MAT", "GET_ROWS")


@st.composite
def graphs(draw: st.DrawFn) -> Graph:
    g = Graph()
    rows = draw(st.sampled_from([1, 3, 16]))
    pool: list[Tensor] = [
        g.input("F32", draw(st.sampled_from([8, 32, 96])), rows)
        for _ in range(draw(st.integers(1, 3)))
    ]
    n_ops = draw(st.integers(1, 25))
    last: Tensor = pool[0]
    for _ in range(n_ops):
        op = draw(st.sampled_from(_OPS))
        a = draw(st.sampled_from(pool))
        if op in ("ADD", "MUL"):
            b = draw(st.sampled_from([t for t in pool if t.ne == a.ne] or [a]))
            t = g.same(op, a, b)
        elif op == "MUL_MAT":
            t = g.mul_mat(g.external("F16", a.ne[0], draw(st.sampled_from([8, 64]))), a)
        elif op == "GET_ROWS":
            t = g.get_rows(a, g.input("I32", rows))
        elif op == "CONT" and draw(st.booleans()):
            t = g.cont(g.transpose(g.reshape(a, a.ne[0], a.ne[1])))
        else:
            t = g.same(op, a)
        if draw(st.integers(0, 9)) == 0:
            t.mark("output")
        pool.append(t)
        last = t
        if draw(st.booleans()):
            g.expand(t)
    g.expand(last)
    return g


def _live_sets(g: Graph, placed: Placement) -> list[set[Tensor]]:
    """Tensors that must coexist while each node runs: its placed sources and itself."""
    sets = []
    for node in g.nodes:
        group = {(s.view_src or s) for s in node.src if s is not None}
        group.add(node.view_src or node)
        group = {t for t in group if t in placed.offsets}
        parent = placed.reused.get(node)
        if parent is not None:  # the node is its parent's memory: one region
            group.discard(parent)
        sets.append(group)
    return sets


def _overlap(placed: Placement, a: Tensor, b: Tensor) -> bool:
    oa, ob = placed.offsets[a], placed.offsets[b]
    return oa < ob + b.n_bytes and ob < oa + a.n_bytes and a.n_bytes > 0 and b.n_bytes > 0


@settings(max_examples=300, deadline=None)
@given(graphs(), st.sampled_from([32, 64, 128]))
def test_coexisting_tensors_never_overlap(g: Graph, alignment: int) -> None:
    """Whatever the graph, the tensors one node reads and writes occupy disjoint bytes,
    graph inputs stay disjoint from each other, and everything lies inside the buffer."""
    placed = place(g, alignment)
    for group in _live_sets(g, placed):
        items = sorted(group, key=id)
        for i, a in enumerate(items):
            for b in items[i + 1 :]:
                assert not _overlap(placed, a, b), (a.op, b.op)
    inputs = [t for t in g.leafs if t in placed.offsets]
    for i, a in enumerate(inputs):
        for b in inputs[i + 1 :]:
            assert not _overlap(placed, a, b)
    for t, offset in placed.offsets.items():
        assert offset % alignment == 0
        assert offset + t.n_bytes <= placed.n_bytes


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_buffer_is_between_the_largest_tensor_and_the_sum_of_all(g: Graph) -> None:
    """The buffer holds the largest placed tensor and never needs more than all of them."""
    placed = place(g, 32)
    sizes = [-(-t.n_bytes // 32) * 32 for t in placed.offsets]
    assert max(sizes, default=0) <= placed.n_bytes <= sum(sizes)
    assert allocate(g, 32) == placed.n_bytes


@pytest.mark.parametrize("alignment", [32, 128])
def test_alignment_pads_every_tensor(alignment: int) -> None:
    g = Graph()
    a = g.input("F32", 3)  # 12 bytes
    b = g.input("F32", 5)
    out = g.same("ADD", g.f32("CONT", a.ne, a), g.f32("CONT", (3,), b))
    out.mark("output")
    g.expand(out)
    placed = place(g, alignment)
    assert placed.offsets[b] == alignment
    assert placed.n_bytes % alignment == 0
