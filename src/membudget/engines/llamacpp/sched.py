"""llama.cpp's scheduler over several backends: which backend runs each op of the worst-case
graph, the copies of each split's inputs, and the compute buffer ggml-alloc then reserves on
every backend.

Follows ggml 0c1e570 (the tree llama-cpp-python 0.3.36 vendors):

- ``ggml_backend_sched_split_graph`` (ggml-backend.cpp): pass 1 gives an op the backend of
  the weight it reads (a CPU weight's large-batch op goes to the first GPU whose ``offload_op``
  takes it), graph inputs to the CPU (the last backend) and views of a cache to the cache's
  device; pass 2 spreads GPU backends down and up over the unassigned ops, then any backend;
  pass 3 gives what is left to the backend that supports most of its inputs; pass 4 gives
  sources their consumer's backend; pass 5 cuts the nodes into splits of one backend and makes,
  per split, a copy of every input that lives on another backend; with pipeline parallelism
  (``n_copies`` 4) every such copy and every graph input four times over, flagged input and
  output so ggml-alloc allocates them first and never frees them (pass 6);
- ``llama_context::graph_get_cb``: with every layer offloaded, each layer's weighted norm is
  set to its layer's device before pass 1;
- the graph copy the scheduler allocates: per split, for each input a dependency on the
  original (keeping it until the copy) and the copy itself, then the split's nodes;
- ``ggml_gallocr_alloc_graph_impl`` (ggml-alloc.c) over that graph with one allocator per
  backend (``ggml_gallocr_new_n``): each tensor in its backend's buffer, at that buffer's
  alignment and with its ``get_alloc_size``.

The externals of the graph (weights and caches) carry their layer (``Tensor.slot``) and kind
(``Tensor.kind``: ``w`` weight, ``e`` routed expert, ``c`` cache); :func:`schedule` asks the
caller for their device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from membudget.engines.llamacpp.devices import (
    CUDA_ALIGNMENT,
    cuda_fa_kernel,
    cuda_row_padding,
)
from membudget.engines.llamacpp.ggml import (
    Flag,
    Graph,
    Snapshot,
    Tensor,
    contiguous_strides,
    replay,
)
from membudget.engines.llamacpp.layout import pad

__all__ = [
    "Backend",
    "Scheduled",
    "UnknownWeightError",
    "cuda_alloc_size",
    "cuda_supports",
    "schedule",
    "split_graph",
]

_VIEW_OPS = frozenset({"RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE"})  # ggml_is_view_op
# ggml-cuda.cu, get_op_batch_size: the rows an op works on, for offload_op.
_BATCH_NE2 = frozenset({"MUL_MAT_ID", "ROPE", "ROPE_BACK"})


class UnknownWeightError(Exception):
    """The split depends on a weight the caller cannot identify (its stored type or device)."""


@dataclass(frozen=True, slots=True)
class Backend:
    """One backend of the scheduler, in priority order (the CPU last)."""

    name: str
    alignment: int
    offload_min_batch: int = 0
    """``offload_op``: the least batch of a CPU weight's op this backend takes (CUDA: 32);
    0 takes none (the CPU, RPC, Metal)."""
    supports: Callable[[Tensor], bool] = lambda _t: True
    alloc_size: Callable[[Tensor], int] = lambda t: t.n_bytes
    fuses_moe: bool = False
    """CUDA's ``graph_optimize``: keeps the tensors of a fused expert routing and of a fused
    weighted sum of experts alive until the fusion's end (``add_alloc_dep``)."""


def _batch(t: Tensor) -> int:
    if t.op == "GET_ROWS":
        return 0
    if t.op == "MUL_MAT":
        return t.ne[1]
    if t.op in _BATCH_NE2:
        return t.ne[2]
    return t.ne[1] * t.ne[2] * t.ne[3]  # ggml_nrows


@dataclass(frozen=True, slots=True)
class Scheduled:
    """The graph copy the scheduler hands ggml-alloc: :func:`~.ggml.replay`'s arguments."""

    leafs: list[Tensor]
    nodes: list[Tensor]
    alignments: list[int]
    sources: dict[Tensor, tuple[Tensor | None, ...]]
    buffer_of: dict[Tensor, int]
    alloc_size: list[Callable[[Tensor], int]]
    kept: list[Tensor]

    def replay(self, snapshots: dict[int, Snapshot | None] | None = None) -> list[int]:
        """Every backend's compute buffer (ggml-alloc over the graph copy)."""
        return replay(
            self.leafs,
            self.nodes,
            self.alignments,
            sources=self.sources,
            buffer_of=self.buffer_of,
            alloc_size=self.alloc_size,
            kept=self.kept,
            snapshots=snapshots,
        )


def schedule(
    graph: Graph,
    backends: Sequence[Backend],
    device_of: Callable[[Tensor], int],
    n_copies: int = 1,
    pin_norms: bool = False,
    stored_type: Callable[[Tensor], str] | None = None,
) -> list[int]:
    """Bytes of the compute buffer of every backend for ``graph`` (:func:`split_graph`, then
    ggml-alloc over the graph copy)."""
    return split_graph(graph, backends, device_of, n_copies, pin_norms, stored_type).replay()


def split_graph(
    graph: Graph,
    backends: Sequence[Backend],
    device_of: Callable[[Tensor], int],
    n_copies: int = 1,
    pin_norms: bool = False,
    stored_type: Callable[[Tensor], str] | None = None,
) -> Scheduled:
    """The graph copy the scheduler allocates for ``graph``, its tensors on their backends.
    ``device_of`` gives the backend index of a weight or cache (``Tensor.external``). ``n_copies`` > 1 is pipeline
    parallelism: every copied input and every graph input has that many copies, allocated
    before the graph and never freed (pass 5's copies and pass 6, flagged input and output;
    the graph copy lists them as its first leafs). ``pin_norms``: each layer's weighted norm
    runs on its layer's device (``Tensor.kind`` ``n``), as llama.cpp sets it with every layer
    offloaded. ``stored_type``: the type a weight is stored at, which its copy keeps (the
    graph's weights are typed F16); a copy of a view of a weight must then keep the view's
    type too."""
    pipelined = n_copies > 1
    both: frozenset[Flag] = frozenset({"input", "output"}) if pipelined else frozenset()
    first_leafs: list[Tensor] = []  # the pipeline copies, allocated before the graph
    split_copies: list[Tensor] = []
    cpu = len(backends) - 1
    where: dict[Tensor, int] = {}

    def weight(t: Tensor | None) -> bool:
        return t is not None and t.external and t.kind != "c"

    def backend_of(t: Tensor) -> int:
        root = t.view_src or t
        if root.external:
            return device_of(root)
        return where.get(t, where.get(root, -1))

    # pass 1: pre-allocated tensors, graph inputs, ops on weights
    for leaf in graph.leafs:
        if leaf.external:
            where[leaf] = device_of(leaf)
        elif "input" in leaf.flags:
            where[leaf] = cpu
    for node in graph.nodes:
        if pin_norms and node.kind == "n":
            dev = device_of(node)
            if backends[dev].supports(node):
                where[node] = dev
                continue
        root = node.view_src
        if root is not None and root.external:
            dev = device_of(root)
            if backends[dev].supports(node):
                where[node] = dev
                continue
        if "input" in node.flags:
            where[node] = cpu
            continue
        if node.op == "ROPE":
            continue  # its rope_freqs are too small to choose a backend by
        for src in node.src:
            if not weight(src):
                continue
            assert src is not None
            dev = device_of(src)
            if not backends[dev].supports(node):
                # ggml_backend_sched_backend_from_buffer: no backend with that buffer runs it
                break
            if dev == cpu:
                for b in range(cpu):
                    take = backends[b].offload_min_batch
                    if take and backends[b].supports(node) and _batch(node) >= take:
                        dev = b
                        break
            where[node] = dev
            break

    # pass 2: spread the GPUs down and up, then any backend down and up
    ops = [n for n in graph.nodes if n.op not in _VIEW_OPS]

    def spread(order: Sequence[Tensor], skip_cpu: bool) -> None:
        cur = -1
        for node in order:
            dev = where.get(node, -1)
            if dev != -1:
                cur = -1 if (skip_cpu and dev == cpu) else dev
            elif cur != -1 and backends[cur].supports(node):
                where[node] = cur

    spread(ops, True)
    spread(ops[::-1], True)
    spread(ops, False)
    spread(ops[::-1], False)

    # pass 3: what is left goes where most of its inputs are
    for node in ops:
        if where.get(node, -1) != -1:
            continue
        best, best_n = -1, -1
        for b in range(len(backends)):
            if not backends[b].supports(node):
                continue
            n = sum(1 for s in node.src if s is not None and backend_of(s) == b)
            if n > best_n:
                best, best_n = b, n
        where[node] = best

    # pass 4: sources and views take their consumer's (or their source's) backend
    for node in graph.nodes:
        if node.view_src is not None and where.get(node, -1) == -1:
            where[node] = backend_of(node.view_src)
        for src in node.src:
            if src is None or src.external or where.get(src, -1) != -1:
                continue
            where[src] = backend_of(src.view_src) if src.view_src is not None else where[node]
        if where.get(node, -1) == -1:
            where[node] = next(b for b in range(len(backends)) if backends[b].supports(node))

    # pass 5: splits, and a copy of every input that lives on another backend
    copies: dict[tuple[Tensor, int], Tensor] = {}
    extra_backend: dict[Tensor, int] = {}
    order: list[tuple[Tensor, int]] = []  # the graph copy's nodes with their backend
    sources: dict[Tensor, tuple[Tensor | None, ...]] = {}
    split: list[tuple[Tensor, int]] = []
    inputs: list[tuple[Tensor, Tensor]] = []
    cur = next((where[n] for n in graph.nodes if n.op not in _VIEW_OPS), cpu)

    def close() -> None:
        for original, copy in inputs:
            dependency = _dependency(original)
            dependency.layer = copy.layer
            order.append((dependency, backend_of(original)))
            order.append((copy, cur))
            if pipelined:
                split_copies.append(copy)
                for c in range(1, n_copies):
                    extra = Tensor(
                        copy.type,
                        copy.ne,
                        copy.nb,
                        flags=both,
                        name=f"{copy.name}#{c}",
                        layer=copy.layer,
                    )
                    split_copies.append(extra)
                    extra_backend[extra] = cur
        keep = _moe_fusions([t for t, _ in split], sources) if backends[cur].fuses_moe else {}
        for node, dev in split:
            order.append((node, dev))
            kept = keep.get(node, ())
            for k in range(0, len(kept), _MAX_SRC):
                group = tuple(kept[k : k + _MAX_SRC])
                dep = Tensor(
                    group[0].type,
                    group[0].ne,
                    group[0].nb,
                    src=group,
                    view_src=group[0],
                    layer=node.layer,
                )
                order.append((dep, dev))
        split.clear()
        inputs.clear()

    for node in graph.nodes:
        if node.op in _VIEW_OPS:
            split.append((node, where[node]))
            continue
        dev = where[node]
        new = dev != cur
        if not new and inputs:
            new = any(weight(s) and device_of(s) != cur for s in node.src)  # type: ignore[arg-type]
        if new:
            close()
            cur = dev
        srcs: list[Tensor | None] | None = None
        for j, src in enumerate(node.src):
            if src is None:
                continue
            root = src.view_src or src
            if (device_of(root) if root.external else where.get(src, where.get(root, -1))) == cur:
                continue
            key = (src, cur)
            copy = copies.get(key)
            if copy is None:
                copy = copies[key] = _copy_of(src, both, stored_type)
                copy.layer = node.layer  # made for this node (see .reduce)
                inputs.append((src, copy))
            if srcs is None:
                srcs = list(node.src)
            srcs[j] = copy
        if srcs is not None:
            sources[node] = tuple(srcs)  # reads the copies
        split.append((node, dev))
    close()

    buffer: dict[Tensor, int] = dict(order)
    buffer.update(extra_backend)
    kept: list[Tensor] = []
    if pipelined:
        # pass 6: every graph input, with its copies on its backend
        for leaf in graph.leafs:
            if leaf.external or "input" not in leaf.flags:
                continue
            kept.append(leaf)
            first_leafs.append(leaf)
            for c in range(1, n_copies):
                extra = Tensor(leaf.type, leaf.ne, leaf.nb, flags=both, name=f"{leaf.name}#{c}")
                first_leafs.append(extra)
                buffer[extra] = where.get(leaf, cpu)
        first_leafs.extend(split_copies)
    for leaf in graph.leafs:
        buffer.setdefault(leaf, where.get(leaf, cpu))
    return Scheduled(
        [*first_leafs, *graph.leafs],
        [t for t, _ in order],
        [b.alignment for b in backends],
        sources,
        buffer,
        [b.alloc_size for b in backends],
        kept,
    )


_MAX_SRC = 10  # GGML_MAX_SRC
_MOE_REDUCTION_MAX = 15  # ggml-cuda.cu, MOE_WEIGHTED_REDUCTION_MAX_EXPERTS


def _moe_fusions(
    nodes: Sequence[Tensor], sources: dict[Tensor, tuple[Tensor | None, ...]]
) -> dict[Tensor, list[Tensor]]:
    """``ggml_backend_cuda_graph_optimize`` over one split: for each fusion it will run, the
    tensors to keep alive until a later node (``until -> kept``): a weighted sum of experts
    (``ggml_cuda_match_moe_weighted_reduction``: MUL of experts and router weights, a VIEW per
    chosen expert, the ADDs) keeps the experts and the weights until the last ADD; a top-k
    routing (``ggml_cuda_topk_moe_fusion``: SOFT_MAX or a sigmoid, RESHAPE, [bias ADD],
    ARGSORT, VIEW, GET_ROWS, [the renormalisation], [SCALE]) keeps every node of it and their
    sources until the node after it."""

    def src(t: Tensor, j: int) -> Tensor | None:
        found = sources.get(t, t.src)
        return found[j] if j < len(found) else None

    keep: dict[Tensor, list[Tensor]] = {}

    def add(tensor: Tensor | None, until: Tensor) -> None:
        if tensor is None:
            return
        kept = keep.setdefault(until, [])
        if all(tensor is not k for k in kept):
            kept.append(tensor)

    n = len(nodes)
    i = 0
    while i < n:
        node = nodes[i]
        if node.op == "MUL" and node.type == "F32":
            a, b = src(node, 0), src(node, 1)
            weights = b if b is not None and b.ne[0] == 1 else None
            used = node.ne[1]
            count = 2 * used
            if weights is not None and 2 <= used <= _MOE_REDUCTION_MAX and i + count <= n:
                group = nodes[i + 1 : i + count]
                views = [t for t in group if t.op == "VIEW"]
                adds = [t for t in group if t.op == "ADD"]
                if (
                    len(views) == used
                    and len(adds) == used - 1
                    and all(src(v, 0) is node for v in views)
                ):
                    add(a, nodes[i + count - 1])
                    add(weights, nodes[i + count - 1])
                    i += count - 1
        if node.op in ("SOFT_MAX", "UNARY") and i + 5 < n:
            length = _topk_length(nodes, i, src)
            if length and i + length < n:
                until = nodes[i + length]
                for t in nodes[i : i + length]:
                    add(t, until)
                    for s_ in sources.get(t, t.src):
                        add(s_, until)
                i += length - 1
        i += 1
    return keep


def _topk_length(
    nodes: Sequence[Tensor], i: int, src: Callable[[Tensor, int], Tensor | None]
) -> int:
    """How many nodes the top-k routing starting at ``i`` spans, 0 when none does."""
    n, start = len(nodes), i

    def at(k: int) -> Tensor | None:
        return nodes[k] if k < n else None

    gate = nodes[i]
    reshaped = at(i + 1)
    if reshaped is None or reshaped.op != "RESHAPE" or src(reshaped, 0) is not gate:
        return 0
    i += 2
    ranked = gate
    t = at(i)
    if t is not None and t.op == "ADD" and src(t, 0) is gate:
        ranked = t
        i += 1
    order = at(i)
    if order is None or order.op != "ARGSORT" or src(order, 0) is not ranked:
        return 0
    n_expert = order.ne[0]
    if ((n_expert & (n_expert - 1)) or n_expert > 512) and n_expert not in (288, 576):
        return 0
    view, rows = at(i + 1), at(i + 2)
    if view is None or view.op != "VIEW" or src(view, 0) is not order:
        return 0
    if rows is None or rows.op != "GET_ROWS" or src(rows, 0) is not reshaped:
        return 0
    if src(rows, 1) is not view:
        return 0
    i += 3
    ops = ("RESHAPE", "SUM_ROWS", "CLAMP")
    if all((t := at(i + k)) is not None and t.op == op for k, op in enumerate(ops)):
        div, last = at(i + 3), at(i + 4)
        if (
            div is not None
            and div.op == "DIV"
            and last is not None
            and last.op == "RESHAPE"
            and src(last, 0) is div
        ):
            i += 5
    t = at(i)
    if t is not None and t.op == "SCALE" and src(t, 0) is nodes[i - 1]:
        i += 1
    return i - start


def _copy_of(
    src: Tensor, flags: frozenset[Flag], stored_type: Callable[[Tensor], str] | None
) -> Tensor:
    """A split's copy of ``src`` on another backend (``ggml_dup_tensor_layout``); a weight's
    at the type it is stored at."""
    root = src.view_src or src
    if stored_type is None or not root.external or root.kind == "c":
        return Tensor(src.type, src.ne, src.nb, flags=flags, name=f"copy:{src.name}")
    typ = stored_type(root)
    if src is not root and typ != src.type:
        raise UnknownWeightError(f"a view of a {typ} weight is copied; its layout is not modelled")
    return Tensor(typ, src.ne, contiguous_strides(typ, src.ne), flags=flags, name="copy:weight")


def _dependency(original: Tensor) -> Tensor:
    """``ggml_view_tensor(input)`` with ``src[0] = input``: keeps the input until its copy."""
    return Tensor(original.type, original.ne, original.nb, src=(original,), view_src=original)


def cuda_supports(scan_ok: bool) -> Callable[[Tensor], bool]:
    """CUDA's ``supports_op`` for the ops membudget's graphs hold: everything but a state scan
    it has no kernel for (``scan_ok``: :func:`.devices.cuda_runs_ssm_scan`) and
    flash attention over head sizes it has no kernel for."""

    def supports(t: Tensor) -> bool:
        if t.op == "SSM_SCAN":
            return scan_ok
        if t.op == "FLASH_ATTN_EXT":
            q, k, v = t.src[0], t.src[1], t.src[2]
            if q is None or k is None or v is None:
                return True
            return cuda_fa_kernel(k.ne[0], v.ne[0], q.ne[2] // max(k.ne[2], 1))
        return True

    return supports


def cuda_alloc_size(t: Tensor) -> int:
    """``ggml_backend_cuda_buffer_type_get_alloc_size``: a quantised tensor's last row padded
    to 512 values; flash attention's result followed by F16 copies of a quantised K and V
    (the MMA and tile kernels a worst-case batch takes need them:
    ``ggml_cuda_flash_attn_ext_get_alloc_size``)."""
    size = t.n_bytes
    if t.op == "FLASH_ATTN_EXT":
        k, v = t.src[1], t.src[2]
        if k is not None and k.type != "F16":
            size = pad(size, CUDA_ALIGNMENT) + k.n_elements * 2
        same = (
            v is not None and k is not None and v.view_src is not None and v.view_src is k.view_src
        )
        if v is not None and v.type != "F16" and not same:
            size = pad(size, CUDA_ALIGNMENT) + v.n_elements * 2
        return size
    return size + cuda_row_padding(t.type, t.ne[0])
