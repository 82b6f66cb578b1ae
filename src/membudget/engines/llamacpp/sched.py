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
  per split, a copy of every input that lives on another backend;
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

from membudget.engines.llamacpp.ggml import (
    _INPLACE_OPS,
    Graph,
    Tensor,
    _Allocator,
    _Info,
    type_size,
)

__all__ = ["Backend", "schedule"]

_VIEW_OPS = frozenset({"RESHAPE", "VIEW", "PERMUTE", "TRANSPOSE"})  # ggml_is_view_op
# ggml-cuda.cu, get_op_batch_size: the rows an op works on, for offload_op.
_BATCH_NE2 = frozenset({"MUL_MAT_ID", "ROPE", "ROPE_BACK"})


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


def _batch(t: Tensor) -> int:
    if t.op == "GET_ROWS":
        return 0
    if t.op == "MUL_MAT":
        return t.ne[1]
    if t.op in _BATCH_NE2:
        return t.ne[2]
    return t.ne[1] * t.ne[2] * t.ne[3]  # ggml_nrows


@dataclass(slots=True)
class _Copy:
    """A split input's copy on another backend (``ggml_dup_tensor_layout``)."""

    of: Tensor
    tensor: Tensor


def schedule(
    graph: Graph, backends: Sequence[Backend], device_of: Callable[[Tensor], int]
) -> list[int]:
    """Bytes of the compute buffer of every backend for ``graph``. ``device_of`` gives the
    backend index of a weight or cache (``Tensor.external``)."""
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
        root = node.view_src
        if root is not None and root.external:
            dev = device_of(root)
            if backends[dev].supports(node):
                where[node] = dev
                continue
        if "input" in node.flags:
            where[node] = cpu
            continue
        if node.op in ("ROPE", "FLASH_ATTN_EXT"):
            continue
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
    order: list[tuple[Tensor, int]] = []  # the graph copy's nodes with their backend
    sources: dict[Tensor, tuple[Tensor | None, ...]] = {}
    split: list[tuple[Tensor, int]] = []
    inputs: list[tuple[Tensor, Tensor]] = []
    cur = next((where[n] for n in graph.nodes if n.op not in _VIEW_OPS), cpu)

    def close() -> None:
        for original, copy in inputs:
            order.append((_dependency(original), backend_of(original)))
            order.append((copy, cur))
        order.extend(split)
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
        srcs = list(node.src)
        for j, src in enumerate(srcs):
            if src is None or backend_of(src) == cur:
                continue
            key = (src, cur)
            copy = copies.get(key)
            if copy is None:
                copy = copies[key] = Tensor(src.type, src.ne, src.nb, name=f"copy:{src.name}")
                inputs.append((src, copy))
            srcs[j] = copy
        sources[node] = tuple(srcs)
        split.append((node, dev))
    close()

    buffer: dict[Tensor, int] = dict(order)
    for leaf in graph.leafs:
        buffer.setdefault(leaf, where.get(leaf, cpu))
    return _allocate(graph.leafs, order, sources, buffer, backends)


def _dependency(original: Tensor) -> Tensor:
    """``ggml_view_tensor(input)`` with ``src[0] = input``: keeps the input until its copy."""
    return Tensor(original.type, original.ne, original.nb, src=(original,), view_src=original)


def _allocate(
    leafs: Sequence[Tensor],
    order: Sequence[tuple[Tensor, int]],
    sources: dict[Tensor, tuple[Tensor | None, ...]],
    buffer: dict[Tensor, int],
    backends: Sequence[Backend],
) -> list[int]:
    """``ggml_gallocr_alloc_graph_impl`` with one allocator per backend."""
    mems = [_Allocator(b.alignment) for b in backends]
    info: dict[Tensor, _Info] = {}
    at: dict[Tensor, int] = {}  # which buffer a tensor was placed in

    def src_of(t: Tensor) -> tuple[Tensor | None, ...]:
        return sources.get(t, t.src)

    def get(t: Tensor) -> _Info:
        i = info.get(t)
        if i is None:
            i = info[t] = _Info()
        return i

    def size(t: Tensor, b: int) -> int:
        return backends[b].alloc_size(t)

    def allocate_node(t: Tensor) -> None:
        hn = get(t)
        if t.external or hn.allocated or t.view_src is not None:
            return
        hn.allocated = True
        b = buffer.get(t, len(backends) - 1)
        if t.op in _INPLACE_OPS:
            for parent in src_of(t):
                if parent is None:
                    continue
                p = get(parent)
                if not p.allocated or "output" in parent.flags or parent.external:
                    continue
                if (parent.type, parent.ne, parent.nb) != (t.type, t.ne, t.nb):
                    continue
                if p.n_children == 1 and p.n_views == 0:
                    hn.offset = p.offset
                    at[t] = at[parent]
                    p.allocated = False
                    return
        at[t] = b
        hn.offset = mems[b].alloc(size(t, b))

    def free_node(t: Tensor) -> None:
        if "output" in t.flags:
            return
        hn = get(t)
        b = at[t]
        mems[b].free(hn.offset, size(t, b))
        hn.allocated = False

    nodes = [t for t, _ in order]
    for leaf in leafs:
        allocate_node(leaf)
    for node in nodes:
        if node.view_src is not None and node.op != "NONE":
            get(node.view_src).n_views += 1
        if "input" in node.flags:
            allocate_node(node)
        for src in src_of(node):
            if src is None:
                continue
            get(src).n_children += 1
            if "input" in src.flags:
                allocate_node(src)
    for node in nodes:
        for src in src_of(node):
            if src is not None:
                allocate_node(src)
        allocate_node(node)
        for src in src_of(node):
            if src is None:
                continue
            p = get(src)
            p.n_children -= 1
            if p.n_children or p.n_views:
                continue
            if src.view_src is not None:
                root = get(src.view_src)
                root.n_views -= 1
                if root.n_views == 0 and root.n_children == 0 and root.allocated:
                    free_node(src.view_src)
            elif p.allocated:
                free_node(src)
    return [m.max_size for m in mems]


# ggml-cuda/fattn.cu, ggml_cuda_get_best_fattn_kernel: head sizes with a kernel (K = V).
_CUDA_FA_SAME = frozenset({40, 64, 72, 80, 96, 112, 128, 256, 512})
_CUDA_FA_PAIRS = {192: 128, 320: 256, 576: 512}  # K head -> the V head it needs (GQA only)


def cuda_supports(spec_recurrent_ok: bool) -> Callable[[Tensor], bool]:
    """CUDA's ``supports_op`` for the ops membudget's graphs hold: everything but a state scan
    it has no kernel for (``spec_recurrent_ok``: :func:`.devices.cuda_runs_ssm_scan`) and
    flash attention over head sizes it has no kernel for."""

    def supports(t: Tensor) -> bool:
        if t.op == "SSM_SCAN":
            return spec_recurrent_ok
        if t.op == "FLASH_ATTN_EXT":
            q, k, v = t.src[0], t.src[1], t.src[2]
            if q is None or k is None or v is None:
                return True
            dk, dv = k.ne[0], v.ne[0]
            if dk in _CUDA_FA_SAME:
                return dv == dk
            gqa = q.ne[2] // max(k.ne[2], 1)
            return _CUDA_FA_PAIRS.get(dk) == dv and gqa >= 2
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
            size = _pad(size, 128) + k.n_elements * 2
        same = (
            v is not None and k is not None and v.view_src is not None and v.view_src is k.view_src
        )
        if v is not None and v.type != "F16" and not same:
            size = _pad(size, 128) + v.n_elements * 2
        return size
    block, type_bytes = type_size(t.type)
    if block > 1 and t.ne[0] % 512:
        size += (512 - t.ne[0] % 512) // block * type_bytes
    return size


def _pad(n: int, m: int) -> int:
    return -(-n // m) * m
