"""What llama.cpp allocates, as per-slot tables: a placement's cost is then a sum, not a rebuild.

A model has ``n_layer + 1`` slots for placement: its repeating layers, then the output layer
(``llama_model::load_tensors``; see :mod:`.devices`). Everything llama.cpp allocates for
weights, KV cache and recurrent state belongs to one slot or to the input layer, which always
stays on the CPU. This module computes, once per model and settings:

- :class:`WeightTable`: each slot's weight bytes as the CPU backend stores them (padded to its
  alignment) and as CUDA stores them (:func:`~.devices.cuda_alloc_bytes`), with the
  routed experts apart, since ``--n-cpu-moe`` moves only them, and the bytes of each part that
  the CPU backend repacks;
- :class:`CacheTable`: each slot's KV (full and sliding-window) and recurrent-state bytes for
  the resolved context;
- the compute buffer, from :func:`~.graph.graph_compute_bytes`, whose graph depends on
  the model's shapes and the settings but never on the weights' types, so it is shared by every
  quantisation preset of one model.

:func:`~.llamacpp.estimate_llamacpp` builds its buffers from these tables, and the planner
(:mod:`membudget.placement`) searches placements over the same tables, so the two cannot differ.
Each table is kept for the last few models asked about.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from membudget.engines.llamacpp.devices import (
    CUDA_ALIGNMENT,
    HostPins,
    cuda_alloc_bytes,
    cuda_row_padding,
)
from membudget.engines.llamacpp.ggml import Graph, Tensor, allocate
from membudget.engines.llamacpp.graph import GraphSettings, build_graph, layer_phase, simulated
from membudget.engines.llamacpp.memo import MEMO as _MEMO
from membudget.engines.llamacpp.phases import compute_bytes
from membudget.engines.llamacpp.reduce import (
    HEAD,
    HEAD_CYCLING,
    allocate_short,
    kept_layers,
    short_figures,
)
from membudget.kv import cache_layers, cache_type, recurrent_state_dims, row_bytes
from membudget.model import ModelSpec, TensorSpec, block_index
from membudget.quant import GGMLType, ggml_type_by_name

__all__ = [
    "INPUT_TENSORS",
    "CacheTable",
    "Resolved",
    "WeightTable",
    "cache_table",
    "compute_for",
    "kept_layers",
    "pad",
    "repacks",
    "short_figures",
    "weight_table",
]

INPUT_TENSORS = ("token_embd", "token_types", "position_embd")
"""Tensors of the input layer, which llama.cpp always keeps on the CPU."""
_F32 = 4


def pad(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


_GRAPHS: OrderedDict[tuple[int, GraphSettings], int | None] = OrderedDict()
_GRAPHS_LOCK = threading.Lock()
_GRAPHS_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Resolved:
    """llama.cpp's own figures for a context request (``llama_context`` constructor)."""

    n_ctx: int
    n_ctx_seq: int
    n_seq: int
    n_stream: int
    n_batch: int
    n_ubatch: int
    kv_size: int
    swa_size: int
    flash_attn: bool
    n_outputs_max: int
    """``cparams.n_outputs_max``: the most logits rows one batch may ask for."""

    @property
    def n_tokens(self) -> int:
        """Tokens of the worst-case graph: ``min(n_ctx, n_ubatch)``."""
        return min(self.n_ctx, self.n_ubatch)

    @property
    def n_outputs(self) -> int:
        """Logits rows of the worst-case graph: ``min(n_tokens, n_outputs_max)``
        (``llama_context::sched_reserve``)."""
        return min(self.n_tokens, self.n_outputs_max)


@dataclass(frozen=True, slots=True)
class WeightTable:
    """Weight bytes per slot (``n_layer`` layers, then the output layer) and of the input layer.

    ``*_dense`` is a slot's tensors other than its routed experts, ``*_exps`` the experts.
    ``cpu_*`` are padded to the CPU buffer's alignment, ``gpu_*`` as CUDA allocates them,
    ``repack_*`` the part of ``cpu_*`` the CPU backend copies into CPU_REPACK buffers."""

    flat_bytes: int
    """A model with no tensor list: all its weights, in one CPU buffer."""
    input_bytes: int
    input_repack: int
    cpu_dense: tuple[int, ...]
    cpu_exps: tuple[int, ...]
    gpu_dense: tuple[int, ...]
    gpu_exps: tuple[int, ...]
    repack_dense: tuple[int, ...]
    repack_exps: tuple[int, ...]
    tied_output_gpu: int = 0
    """A model that reuses its token embedding as the output matrix (no ``output.weight``):
    the bytes of the copy llama.cpp loads onto the output layer's device when that is not the
    CPU (``llama_model_loader::create_tensor``, ``TENSOR_DUPLICATED``: a duplicate is created
    when the output's buffer context differs from the input's)."""
    tied_output_cpu: int = 0
    """The same copy on a device that allocates as the CPU backend does (a CPU RPC worker)."""

    @property
    def n_slots(self) -> int:
        return len(self.cpu_dense)


def repacks(t: TensorSpec, types: frozenset[str]) -> bool:
    """Matrix weights multiplied by activations (never ``token_embd``, read by row lookup)
    whose type repacks and whose row count is a multiple of 8 are copied to CPU_REPACK
    (``ggml-cpu/repack.cpp``, ``ggml_backend_cpu_repack_buffer_type`` support check)."""
    return (
        t.type_name in types
        and len(t.shape) in (2, 3)
        and t.shape[1] % 8 == 0
        and t.name != "token_embd.weight"
    )


def _build_weights(
    spec: ModelSpec, alignment: int, types: frozenset[str], pins: HostPins
) -> WeightTable:
    n_slots = spec.n_layer + 1
    if not spec.tensors:
        zeros = (0,) * n_slots
        return WeightTable(spec.weights.total, 0, 0, zeros, zeros, zeros, zeros, zeros, zeros)
    cpu_d, cpu_e, gpu_d, gpu_e, rep_d, rep_e = ([0] * n_slots for _ in range(6))
    input_bytes = input_repack = 0
    names = {t.name for t in spec.tensors}
    tied = tied_cpu = 0
    if "output.weight" not in names:
        embd = next((t for t in spec.tensors if t.name == "token_embd.weight"), None)
        tied = cuda_alloc_bytes(embd) if embd is not None else 0
        tied_cpu = pad(embd.n_bytes, alignment) if embd is not None else 0
    for t in spec.tensors:
        il = block_index(t.name)
        if spec.n_layer_mtp and il is not None and il >= spec.n_layer:
            continue  # llama.cpp skips the MTP blocks' tensors (TENSOR_SKIP) unless drafting
        cpu = pad(t.n_bytes, alignment)
        repack = cpu if repacks(t, types) else 0
        if (il is None and t.name.startswith(INPUT_TENSORS)) or (pins and pins(t.name)):
            # The input layer, and the tensors kept in host memory whatever their layer's
            # device, are the CPU's in every placement.
            input_bytes += cpu
            input_repack += repack
            continue
        slot = il if il is not None and il < spec.n_layer else n_slots - 1
        if il is not None and "_exps" in t.name:
            cpu_e[slot] += cpu
            gpu_e[slot] += cuda_alloc_bytes(t)
            rep_e[slot] += repack
        else:
            cpu_d[slot] += cpu
            gpu_d[slot] += cuda_alloc_bytes(t)
            rep_d[slot] += repack
    return WeightTable(
        0,
        input_bytes,
        input_repack,
        tuple(cpu_d),
        tuple(cpu_e),
        tuple(gpu_d),
        tuple(gpu_e),
        tuple(rep_d),
        tuple(rep_e),
        tied,
        tied_cpu,
    )


def weight_table(
    spec: ModelSpec,
    alignment: int,
    repack_types: frozenset[str],
    pins: HostPins = HostPins(),  # noqa: B008 - frozen
) -> WeightTable:
    """The weight table of ``spec`` (kept for the last few models)."""
    return _MEMO.get(
        spec,
        ("weights", alignment, repack_types, pins),
        lambda: _build_weights(spec, alignment, repack_types, pins),
    )


@dataclass(frozen=True, slots=True)
class CacheTable:
    """KV, sliding-window KV and recurrent-state bytes of each slot (the output slot has none),
    as the CPU backend allocates them and, ``*_gpu``, as CUDA does (its quantised rows padded
    to 512 values, tensors aligned to 128 bytes: ``ggml_backend_cuda_buffer_type_get_alloc_size``)."""

    kv: tuple[int, ...]
    swa: tuple[int, ...]
    recurrent: tuple[int, ...]
    kv_gpu: tuple[int, ...]
    swa_gpu: tuple[int, ...]
    recurrent_gpu: tuple[int, ...]

    def slot_bytes(self, i: int, gpu: bool = False) -> int:
        if gpu:
            return self.kv_gpu[i] + self.swa_gpu[i] + self.recurrent_gpu[i]
        return self.kv[i] + self.swa[i] + self.recurrent[i]


def _cuda_cache_bytes(qtype: GGMLType, n_embd: int, rows: int) -> int:
    size = row_bytes(qtype, n_embd) * rows + cuda_row_padding(qtype.name, n_embd)
    return pad(size, CUDA_ALIGNMENT)


def _build_cache(
    spec: ModelSpec, res: Resolved, type_k: str, type_v: str, alignment: int, mla_k_only: bool
) -> CacheTable:
    n_slots = spec.n_layer + 1
    kv, swa, rec = [0] * n_slots, [0] * n_slots, [0] * n_slots
    kv_g, swa_g, rec_g = [0] * n_slots, [0] * n_slots, [0] * n_slots
    if not spec.embedding_only:
        tk, tv = cache_type(type_k), cache_type(type_v)
        layers = cache_layers(spec)
        k_only = spec.mla is not None and spec.mla.compressed_cache and mla_k_only
        v_max = max((c.n_embd_v for c in layers), default=0)
        v_variable = len({c.n_embd_v for c in layers}) > 1
        for c in layers:
            cells = res.swa_size if c.sliding_window else res.kv_size
            rows = cells * res.n_stream
            k_bytes = pad(row_bytes(tk, c.n_embd_k) * rows, alignment)
            # Without flash attention V rows are padded to the widest layer when widths differ.
            v_width = v_max if (not res.flash_attn and v_variable) else c.n_embd_v
            v_bytes = 0 if k_only else pad(row_bytes(tv, v_width) * rows, alignment)
            target = swa if c.sliding_window else kv
            target[c.index] += k_bytes + v_bytes
            gpu = _cuda_cache_bytes(tk, c.n_embd_k, rows)
            gpu += 0 if k_only else _cuda_cache_bytes(tv, v_width, rows)
            (swa_g if c.sliding_window else kv_g)[c.index] += gpu
        if spec.n_recurrent_layers:
            conv, ssm = recurrent_state_dims(spec)
            rows = res.n_seq  # max(1, n_seq_max) states (llama-memory-recurrent.cpp)
            per_layer = pad(conv * _F32 * rows, alignment) + pad(ssm * _F32 * rows, alignment)
            per_gpu = pad(conv * _F32 * rows, CUDA_ALIGNMENT) + pad(
                ssm * _F32 * rows, CUDA_ALIGNMENT
            )
            for il, layer in enumerate(spec.layers):
                if layer.recurrent:
                    rec[il] += per_layer
                    rec_g[il] += per_gpu
    return CacheTable(tuple(kv), tuple(swa), tuple(rec), tuple(kv_g), tuple(swa_g), tuple(rec_g))


def cache_table(
    spec: ModelSpec, res: Resolved, type_k: str, type_v: str, alignment: int, mla_k_only: bool
) -> CacheTable:
    """The cache table of ``spec`` for a resolved context and cache types."""
    return _MEMO.get(
        spec,
        ("cache", res, type_k, type_v, alignment, mla_k_only),
        lambda: _build_cache(spec, res, type_k, type_v, alignment, mla_k_only),
    )


_SHAPES: dict[object, int] = {}
"""Each distinct model shape seen, numbered, so a graph is looked up by a small key."""


def _graph_key(spec: ModelSpec) -> int:
    """What the worst-case graph depends on: the model without its weights' types and bytes,
    so every preset of one model shares its graphs, nor its trained context and RoPE scaling
    (no shape depends on them), so models of one geometry share them too (a fine-tune, a
    longer-context release). Numbered once per model object."""

    def make() -> int:
        shape = (
            replace(
                spec,
                name="",
                source="",
                n_params=0,
                n_ctx_train=0,
                rope_scaling="",
                rope_factor=0.0,
                n_ctx_orig_yarn=0,
                weights=replace(
                    spec.weights, token_embd=0, output=0, layers=(), experts=(), other=0
                ),
                quant=replace(spec.quant, file_type="", tensor_types=()),
                tensors=(),
                notes=(),
                provenance=(),
            ),
            tuple((t.name, t.shape) for t in spec.tensors),
        )
        with _GRAPHS_LOCK:
            if len(_SHAPES) > _GRAPHS_SIZE:
                _SHAPES.clear()
                _GRAPHS.clear()
                _SPLITS.clear()
                _SHORT_SPLITS.clear()
            return _SHAPES.setdefault(shape, len(_SHAPES))

    return _MEMO.get(spec, "graph-key", make)


def graph_settings(
    res: Resolved, type_k: str, type_v: str, alignment: int, attn_rotation: bool
) -> GraphSettings:
    """The worst-case graph ``sched_reserve`` builds for ``res``."""
    return GraphSettings(
        # graph_reserve rounds the token count up to a multiple of the sequences
        n_tokens=pad(res.n_tokens, res.n_seq),
        n_outputs=res.n_outputs,
        n_seqs=res.n_seq,
        n_kv=res.kv_size,
        n_swa_kv=res.swa_size,
        n_stream=res.n_stream,
        flash_attn=res.flash_attn,
        cache_type_k=type_k,
        cache_type_v=type_v,
        alignment=alignment,
        attn_rotation=attn_rotation,
    )


def compute_for(
    spec: ModelSpec,
    res: Resolved,
    type_k: str,
    type_v: str,
    alignment: int,
    attn_rotation: bool,
    simulate: bool,
) -> tuple[int, bool]:
    """The compute buffer of one backend holding layers, and whether the graph was simulated
    (``False``: the phase model of :mod:`.phases`)."""
    n_tokens = res.n_tokens
    graph: int | None = None
    if simulate:
        gs = graph_settings(res, type_k, type_v, alignment, attn_rotation)
        key = (_graph_key(spec), gs)
        with _GRAPHS_LOCK:
            hit = key in _GRAPHS
            if hit:
                _GRAPHS.move_to_end(key)
                graph = _GRAPHS[key]
        if not hit:
            graph = _one_backend(spec, gs)
            with _GRAPHS_LOCK:
                _GRAPHS[key] = graph
                while len(_GRAPHS) > _GRAPHS_SIZE:
                    _GRAPHS.popitem(last=False)
    if graph is not None:
        return graph, True
    phase = compute_bytes(
        spec,
        n_tokens=n_tokens,
        n_kv=res.kv_size,
        n_swa_kv=res.swa_size,
        n_stream=res.n_stream,
        flash_attn=res.flash_attn,
        n_outputs=res.n_outputs,
    )
    return phase, False


def _one_backend(spec: ModelSpec, gs: GraphSettings) -> int | None:
    """ggml-alloc's buffer for the graph on one backend: from the short graph of
    :mod:`.reduce` where it proves the whole one needs the same, else from the whole."""
    classes = layer_classes(spec)
    for head in (HEAD, HEAD_CYCLING):
        keep, runs = kept_layers(classes, head)
        if not runs:
            break
        short = build_graph(spec, gs, frozenset(keep))
        if short is None:
            return None
        size = allocate_short(short, runs, gs.alignment, head)
        if size is not None:
            return size
    built = _built_graph(spec, gs)
    return None if built is None else allocate(built, gs.alignment)


_CLASSES: dict[object, int] = {}
"""Each distinct layer class seen, numbered (:func:`layer_classes`); never cleared, so a
number never changes its meaning."""


def layer_classes(spec: ModelSpec, typed: bool = False) -> tuple[int, ...]:
    """Each layer's class for :mod:`.reduce`: layers of one class build the same subgraph.
    A class is what the graph builders read of a layer: its
    :class:`~membudget.model.LayerSpec`, its stored tensors (name in the layer and shape:
    biases and widths are looked up by name; with ``typed``, their types too, which the
    scheduler's copies of weights keep), whether it is the last layer (which keeps only the
    output rows) and its :func:`~.graph.layer_phase`."""

    def make() -> tuple[int, ...]:
        n = spec.n_layer
        tensors: list[list[tuple[str, ...] | tuple[str, tuple[int, ...], str]]] = [
            [] for _ in range(n)
        ]
        for t in spec.tensors:
            il = block_index(t.name)
            if il is not None and 0 <= il < n:
                rest = t.name.split(".", 2)[2]
                tensors[il].append((rest, t.shape, t.type_name if typed else ""))
        out = []
        with _GRAPHS_LOCK:
            for il, layer in enumerate(spec.layers):
                key = (layer, tuple(sorted(tensors[il])), il == n - 1, layer_phase(spec, il))
                out.append(_CLASSES.setdefault(key, len(_CLASSES)))
        return tuple(out)

    return _MEMO.get(spec, ("layer-classes", typed), make)


_LAST_BUILT: list[tuple[tuple[int, GraphSettings], Graph | None]] = []


def _built_graph(spec: ModelSpec, gs: GraphSettings) -> Graph | None:
    """The graph of ``spec`` under ``gs``, kept for the next caller: the one-backend figure
    and the scheduler's split of one context both replay it."""
    key = (_graph_key(spec), gs)
    with _GRAPHS_LOCK:
        if _LAST_BUILT and _LAST_BUILT[0][0] == key:
            return _LAST_BUILT[0][1]
    g = build_graph(spec, gs)
    with _GRAPHS_LOCK:
        _LAST_BUILT[:] = [(key, g)]
    return g


_SHORT_SPLITS: OrderedDict[tuple[object, ...], tuple[int, ...]] = OrderedDict()
"""Splits proved from short graphs, by what their short graph is made of
(:func:`split_compute`)."""
_SPLITS: OrderedDict[tuple[object, ...], tuple[int, ...] | None] = OrderedDict()

_Dims4 = tuple[int, int, int, int]


def _dims4(shape: tuple[int, ...]) -> _Dims4:
    a, b, c, d = (*shape, 1, 1, 1, 1)[:4]
    return (a, b, c, d)


def _stored_weights(
    spec: ModelSpec,
) -> tuple[dict[tuple[int, _Dims4], tuple[TensorSpec, ...]], dict[str, TensorSpec]]:
    """The file's tensors by the graph slot that reads them and their shape (a layer's under
    its index, the model-level ones under -1), and by name."""

    def make() -> tuple[dict[tuple[int, _Dims4], tuple[TensorSpec, ...]], dict[str, TensorSpec]]:
        by_shape: dict[tuple[int, _Dims4], tuple[TensorSpec, ...]] = {}
        for t in spec.tensors:
            il = block_index(t.name)
            slot = il if il is not None and il < spec.n_layer else -1
            key = (slot, _dims4(t.shape))
            by_shape[key] = (*by_shape.get(key, ()), t)
        return by_shape, {t.name: t for t in spec.tensors}

    return _MEMO.get(spec, "stored-weights", make)


def stored_candidates(
    spec: ModelSpec, slot: int, ne: _Dims4, name: str = ""
) -> tuple[TensorSpec, ...]:
    """The stored tensors a graph weight of layer ``slot`` and shape ``ne`` may be: the one
    its builder named, if stored with that shape; else its layer's of that shape, else the
    model-level ones (the output layer, ``rope_freqs``). The graph's weights carry a slot
    and a shape, and a name only where their layer holds others of their shape."""
    by_shape, by_name = _stored_weights(spec)
    layer = 0 <= slot < spec.n_layer
    if name:
        stored = name if name.endswith(".bias") else f"{name}.weight"
        t = by_name.get(f"blk.{slot}.{stored}" if layer else stored)
        if t is not None and _dims4(t.shape) == ne:
            return (t,)
    found = by_shape.get((slot, ne), ()) if layer else ()
    return found or by_shape.get((-1, ne), ())


_TORCH_DTYPES = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
"""A checkpoint's dtypes (a catalogue entry, a safetensors model) as ggml types."""
_TYPES: dict[tuple[str, ...], int] = {}


def _types_key(spec: ModelSpec) -> int:
    """The weights' types, numbered: what a split copying weights (op offload) depends on
    beyond the graph's shapes."""

    def make() -> int:
        types = tuple(t.type_name for t in spec.tensors)
        with _GRAPHS_LOCK:
            if len(_TYPES) > _GRAPHS_SIZE:
                _TYPES.clear()
                _SPLITS.clear()
                _SHORT_SPLITS.clear()
            return _TYPES.setdefault(types, len(_TYPES))

    return _MEMO.get(spec, "types-key", make)


def _pinned_layers(spec: ModelSpec, pins: HostPins | None) -> tuple[tuple[str, ...], ...]:
    """Per layer, the names (within the layer) of its stored tensors ``pins`` keeps on the
    host."""
    n = spec.n_layer
    found: list[list[str]] = [[] for _ in range(n)]
    if pins:
        for t in spec.tensors:
            il = block_index(t.name)
            if il is not None and 0 <= il < n and pins(t.name):
                found[il].append(t.name.split(".", 2)[2])
    return tuple(tuple(sorted(x)) for x in found)


PIPELINE_COPIES = 4
"""ggml-backend.cpp ``GGML_SCHED_MAX_COPIES``: with pipeline parallelism the scheduler keeps
this many copies of every graph input and of every split's inputs."""


def _stored_type(spec: ModelSpec, t: Tensor) -> str | None:
    """The type the graph weight ``t`` is stored at (None: the tensors of its layer with its
    shape disagree, or a type ggml does not know)."""
    found = {c.type_name for c in stored_candidates(spec, t.slot, t.ne, t.name)}
    if len(found) > 1:
        return None
    if not found:
        return t.type
    name = found.pop()
    known = ggml_type_by_name(_TORCH_DTYPES.get(name.lower(), name))
    return None if known is None else known.name.upper()


def split_compute(
    spec: ModelSpec,
    res: Resolved,
    type_k: str,
    type_v: str,
    attn_rotation: bool,
    devices: tuple[tuple[str, bool], ...],
    slots: tuple[int, ...],
    n_cpu_moe: int = 0,
    pipeline: bool = False,
    pin_norms: bool = False,
    pins: HostPins | None = None,
) -> tuple[int, ...] | None:
    """The compute buffer of every backend (``devices`` in llama.cpp's order, then the CPU)
    as llama.cpp's scheduler splits the graph between them (:mod:`.sched`): each op where the
    weight it reads lives, the CPU keeping the graph inputs and the token rows it looks up,
    each backend a copy of what it reads from another (``PIPELINE_COPIES`` of them, kept for
    the whole graph, with ``pipeline``; each layer's norm on its layer's device with
    ``pin_norms``). ``devices``: each device's name and whether it
    allocates as the CPU backend does (a CPU RPC worker); ``slots``: the backend index of
    every layer and of the output layer (``len(devices)``: the CPU); the routed experts of the
    first ``n_cpu_moe`` layers, and the weights ``pins`` names, stay on the CPU. A CPU
    weight a GPU multiplies (op offload) is copied at its stored type. None for an
    architecture without a graph builder, and where a weight the split depends on cannot be
    told from the tensors of its layer with its shape."""
    from membudget.engines.llamacpp.devices import cuda_runs_ssm_scan  # noqa: PLC0415
    from membudget.engines.llamacpp.sched import (  # noqa: PLC0415
        Backend,
        UnknownWeightError,
        cuda_alloc_size,
        cuda_supports,
        schedule,
        split_graph,
    )

    gs = graph_settings(res, type_k, type_v, 32, attn_rotation)
    pin_key = (pins.patterns, pins.ssm_a) if pins else None
    n = spec.n_layer
    # what a split depends on besides each layer's class and device
    base = (
        _graph_key(spec),
        _types_key(spec),
        gs,
        devices,
        slots[n:],
        pipeline,
        pin_norms,
        pin_key,
    )
    key = (base, slots[:n], n_cpu_moe)
    with _GRAPHS_LOCK:
        if key in _SPLITS:
            _SPLITS.move_to_end(key)
            return _SPLITS[key]
    result: tuple[int, ...] | None = None
    if simulated(spec):
        scan_ok = cuda_runs_ssm_scan(spec)
        backends: list[Backend] = []
        for name, host_device in devices:
            if host_device:
                backends.append(Backend(name, 32))
            elif name.startswith("RPC"):
                # an RPC worker with a GPU allocates as its backend does; the scheduler takes
                # every op it is given (ggml-rpc.cpp: supports_op is true, no offload_op)
                backends.append(Backend(name, CUDA_ALIGNMENT, alloc_size=cuda_alloc_size))
            else:
                cuda = name.startswith("CUDA")
                backends.append(
                    Backend(
                        name,
                        CUDA_ALIGNMENT,
                        32 if cuda else 0,
                        cuda_supports(scan_ok),
                        cuda_alloc_size,
                        fuses_moe=cuda,
                    )
                )
        backends.append(Backend("CPU", 32))
        cpu = len(devices)
        # ssm_a stays on the host where CUDA has no kernel for the scan (.profile.host_pins)
        keeps_a = [scan_ok or not name.startswith("CUDA") for name, _ in devices]
        last = len(slots) - 1
        known: dict[Tensor, int] = {}

        names: dict[str, bool] = {}

        def pinned_name(name: str) -> bool:
            found = names.get(name)
            if found is None:
                found = names[name] = pins is not None and pins(name)
            return found

        def pinned(t: Tensor) -> bool:
            if not pins or not pins.patterns:
                return False
            found = {pinned_name(c.name) for c in stored_candidates(spec, t.slot, t.ne, t.name)}
            if len(found) != 1:
                raise UnknownWeightError
            return found.pop()

        def device_of(t: Tensor) -> int:
            dev = known.get(t)
            if dev is not None:
                return dev
            if t.slot < 0:
                dev = cpu
            else:
                dev = slots[min(t.slot, last)]
                on_host = (
                    dev == cpu
                    or (t.kind == "e" and t.slot < n_cpu_moe)
                    or (t.kind == "a" and not keeps_a[dev])
                    or (t.external and t.kind in ("w", "e") and pinned(t))
                )
                if on_host:
                    dev = cpu
            known[t] = dev
            return dev

        types: dict[tuple[int, tuple[int, ...], str, str], str | None] = _MEMO.get(
            spec, "stored-types", dict
        )

        def stored_type(t: Tensor) -> str:
            weight = (t.slot, t.ne, t.name, t.type)
            typ = types.get(weight, "")
            if typ == "":
                typ = types[weight] = _stored_type(spec, t)
            if typ is None:
                raise UnknownWeightError
            return typ

        copies = PIPELINE_COPIES if pipeline else 1

        def short(head: int) -> tuple[int, ...] | None:
            """The split from the short graph of :mod:`.reduce`, None unless proved. A
            placement whose short graph keeps layers of the same classes (and leaves out as
            many periods, up to the cycles the proof allows) has an isomorphic short graph:
            its proved split is shared."""
            keep, runs = kept_layers(classes, head)
            if not runs:
                return None
            shared = (
                base,
                head,
                tuple(classes[i] for i in keep),
                tuple((r.period, r.left_out % 6) for r in runs),
            )
            with _GRAPHS_LOCK:
                if shared in _SHORT_SPLITS:
                    _SHORT_SPLITS.move_to_end(shared)
                    return _SHORT_SPLITS[shared]
            built = build_graph(spec, gs, frozenset(keep))
            if built is None:
                return None
            known.clear()  # keyed by tensor: another graph's
            found = split_graph(built, backends, device_of, copies, pin_norms, stored_type)
            sizes = short_figures(
                found.nodes, runs, head, found.replay, found.sources, found.buffer_of
            )
            if sizes is None:
                return None
            with _GRAPHS_LOCK:
                _SHORT_SPLITS[shared] = tuple(sizes)
                while len(_SHORT_SPLITS) > _GRAPHS_SIZE:
                    _SHORT_SPLITS.popitem(last=False)
            return tuple(sizes)

        # each layer's class where it runs: its device, its experts' and its pinned weights'
        pinned_layers = _pinned_layers(spec, pins)
        classes = tuple(
            (c, slots[il], il < n_cpu_moe, pinned_layers[il])
            for il, c in enumerate(layer_classes(spec, typed=True))
        )
        try:
            result = short(HEAD)
            if result is None:
                result = short(HEAD_CYCLING)
            if result is None:
                whole = _built_graph(spec, gs)
                assert whole is not None
                known.clear()
                found = schedule(whole, backends, device_of, copies, pin_norms, stored_type)
                result = tuple(found)
        except UnknownWeightError:
            result = None
    with _GRAPHS_LOCK:
        _SPLITS[key] = result
        while len(_SPLITS) > _GRAPHS_SIZE:
            _SPLITS.popitem(last=False)
    return result
