"""Deep models' compute buffers from short graphs (membudget.engines.llamacpp.reduce): the
short graph's figure stands only with a proof, and it always equals the whole graph's."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from membudget.cli import main
from membudget.engines.llamacpp import layout
from membudget.engines.llamacpp.ggml import Graph, allocate
from membudget.engines.llamacpp.graph import build_graph
from membudget.engines.llamacpp.layout import layer_classes
from membudget.engines.llamacpp.ops import GraphSettings
from membudget.engines.llamacpp.profile import LlamaCppSettings, estimate_llamacpp
from membudget.engines.llamacpp.reduce import (
    HEAD,
    HEAD_CYCLING,
    TAIL,
    Run,
    allocate_short,
    kept_layers,
)
from membudget.readers.catalog import catalog, catalog_spec

_RESERVE = GraphSettings(
    n_tokens=512,
    n_outputs=512,
    n_seqs=1,
    n_kv=4096,
    n_swa_kv=4096,
    n_stream=1,
    flash_attn=True,
    cache_type_k="f16",
    cache_type_v="f16",
    alignment=32,
    attn_rotation=False,
)
SETTINGS = [
    _RESERVE,
    replace(_RESERVE, n_seqs=4, n_kv=65536, n_swa_kv=4608, flash_attn=False, cache_type_k="q8_0"),
    replace(
        _RESERVE,
        n_tokens=256,
        n_outputs=256,
        n_kv=256,
        n_swa_kv=256,
        cache_type_k="q4_0",
        cache_type_v="q4_0",
    ),
]


def _short(spec: object, gs: GraphSettings) -> tuple[int | None, int]:
    """(the short graph's figure or None, the head it was proved with or 0)."""
    classes = layer_classes(spec)  # type: ignore[arg-type]
    for head in (HEAD, HEAD_CYCLING):
        keep, runs = kept_layers(classes, head)
        if not runs:
            return None, 0
        g = build_graph(spec, gs, frozenset(keep))  # type: ignore[arg-type]
        assert g is not None
        found = allocate_short(g, runs, gs.alignment, head)
        if found is not None:
            return found, head
    return None, 0


def test_every_proved_short_graph_equals_the_whole_graph() -> None:
    """Every catalogue model under three reserve settings: where the short graph's figure is
    proved, it is the whole graph's to the byte; and the proof holds for most of them."""
    proved = tried = 0
    for name in catalog():
        spec = catalog_spec(name)
        for gs in SETTINGS:
            whole = build_graph(spec, gs)
            if whole is None:
                break
            if not kept_layers(layer_classes(spec))[1]:
                break  # too shallow to shorten
            tried += 1
            found, _ = _short(spec, gs)
            if found is not None:
                proved += 1
                assert found == allocate(whole, gs.alignment), (name, gs)
    assert tried > 150
    assert proved >= 0.85 * tried


@pytest.mark.parametrize(("name", "head"), [("llama-3.1-70b", HEAD), ("phi-4", HEAD_CYCLING)])
def test_a_deep_model_is_proved_short(name: str, head: int) -> None:
    """A uniform stack settles at once; Phi-4's buffer cycles through three placements, which
    the longer head shows twice."""
    spec = catalog_spec(name)
    found, used = _short(spec, SETTINGS[0])
    assert used == head
    whole = build_graph(spec, SETTINGS[0])
    assert whole is not None
    assert found == allocate(whole, 32)


def test_a_cycle_proves_nothing_when_it_does_not_divide_what_is_left_out() -> None:
    """Phi-4's three-period cycle, with 28 periods left out: the tail would meet the cycle
    elsewhere than in the short graph (whose figure is then wrong), so no proof."""
    spec = catalog_spec("phi-4")
    run = Run(0, 1, spec.n_layer - 1, HEAD_CYCLING)
    assert run.left_out % 3
    keep = [*range(HEAD_CYCLING), *range(run.count - TAIL, spec.n_layer)]
    g = build_graph(spec, SETTINGS[0], frozenset(keep))
    assert g is not None
    assert allocate_short(g, [run], 32, HEAD_CYCLING) is None


def _chain(keep: Sequence[int], n: int, *, leak: bool = False) -> Graph:
    """A stack of ``n`` identical layers (those in ``keep``), each a product and a residual
    add; ``leak``: each layer also keeps a tensor to the end (an output)."""
    g = Graph()
    x = g.input("F32", 256, 32)
    for il in keep:
        g.layer = il
        y = g.mul_mat(g.external("F16", 256, 1024), x)
        if leak:
            y.mark("output")
        z = g.mul_mat(g.external("F16", 1024, 256), y)
        x = g.same("ADD", z, x)
    g.layer = n
    g.expand(g.mul_mat(g.external("F16", 256, 512), x))
    return g


def test_a_settled_stack_is_proved_and_a_leaking_one_is_not() -> None:
    n = 24
    whole = allocate(_chain(range(n), n), 32)
    keep, runs = kept_layers([0] * n, HEAD_CYCLING)
    assert len(runs) == 1
    assert runs[0].left_out % 6 == 0
    # the residual takes turns between two places: a cycle of two periods, shown twice
    assert allocate_short(_chain(keep, n), runs, 32, HEAD_CYCLING) == whole
    # memory that grows with every layer never repeats: the whole graph is needed
    assert allocate_short(_chain(keep, n, leak=True), runs, 32, HEAD_CYCLING) is None
    assert allocate(_chain(range(n), n, leak=True), 32) > allocate(_chain(keep, n, leak=True), 32)


def test_kept_layers_finds_patterns_and_leaves_short_runs_alone() -> None:
    assert kept_layers([0, 1, 2]) == ((0, 1, 2), ())
    # a six-layer pattern (Gemma 3's five local layers and a global one) repeated eight times
    pattern = [0, 0, 0, 0, 0, 1]
    keep, runs = kept_layers(pattern * 8 + [2])
    assert runs == (Run(0, 6, 8, HEAD),)
    assert keep == (*range(HEAD * 6), *range((8 - TAIL) * 6, 49))
    # the longer head keeps a few more periods, so that cycles of 2 and 3 divide the rest
    _, (run,) = kept_layers([0] * 40, HEAD_CYCLING)
    assert run.left_out % 6 == 0


def _compute(spec: object, settings: LlamaCppSettings) -> dict[str, int]:
    e = estimate_llamacpp(spec, settings)  # type: ignore[arg-type]
    out: dict[str, int] = {}
    for b in e.buffers:
        if b.kind == "compute":
            out[b.device] = out.get(b.device, 0) + b.n_bytes
    return out


@pytest.mark.parametrize(
    ("name", "placements"),
    [
        ("llama-3.1-70b", [(0, 0), (20, 0), (40, 0), (78, 0), (81, 0)]),
        ("qwen3-30b-a3b", [(49, 10), (49, 30), (49, 47), (10, 0), (30, 48)]),
        ("gemma-3-27b", [(0, 0), (31, 0), (63, 0)]),
        ("qwen3.5-35b-a3b", [(41, 0), (41, 1), (0, 0)]),
        ("phi-4", [(12, 0), (33, 0), (41, 0)]),
    ],
)
def test_short_splits_equal_the_whole_graphs(
    name: str, placements: list[tuple[int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scheduler's split over a CUDA device and the CPU, layers offloaded or experts
    kept on the CPU: every backend's compute buffer from the short graph (where proved) equals
    the whole graph's."""
    spec = catalog_spec(name)
    proved = 0
    for ngl, n_cpu_moe in placements:
        settings = LlamaCppSettings(
            n_ctx=16384, gpus=("CUDA0",), n_gpu_layers=ngl, n_cpu_moe=n_cpu_moe
        )
        layout._SPLITS.clear()
        counted: list[bool] = []
        real = layout.short_figures

        def counting(*args: Any, real: Any = real, counted: list[bool] = counted) -> Any:
            found = real(*args)
            counted.append(found is not None)
            return found

        with monkeypatch.context() as m:
            m.setattr(layout, "short_figures", counting)
            short = _compute(spec, settings)
        proved += any(counted)
        layout._SPLITS.clear()
        with monkeypatch.context() as m:
            m.setattr(layout, "kept_layers", lambda classes, head=HEAD: ((), ()))
            whole = _compute(spec, settings)
        layout._SPLITS.clear()
        assert short == whole, (ngl, n_cpu_moe)
    assert proved, "no split was proved short"


def _clear_caches() -> None:
    for cache in (layout._GRAPHS, layout._SPLITS, layout._SHORT_SPLITS):
        cache.clear()


def test_fit_rows_are_the_same_without_short_graphs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep over deep models of every kind (dense, MoE, a Gemma 3 pattern, Mamba, a hybrid,
    Phi-4's cycling buffer) on a 24 GiB GPU with offload: the same rows whether or not short
    graphs are used."""
    models = [
        "llama-3.1-70b",
        "qwen3-30b-a3b",
        "gemma-3-27b",
        "mamba-2.8b",
        "qwen3.5-35b-a3b",
        "phi-4",
    ]
    args = ["fit", "--memory", "64GiB", "--gpu", "24GiB", "--jobs", "1", "--json"]
    args += [a for m in models for a in ("--source", m)]
    _clear_caches()
    assert main(args) == 0
    short = json.loads(capsys.readouterr().out)
    _clear_caches()
    with monkeypatch.context() as m:
        m.setattr(layout, "kept_layers", lambda classes, head=HEAD: ((), ()))
        assert main(args) == 0
        whole = json.loads(capsys.readouterr().out)
    _clear_caches()
    assert short == whole
    assert len(short["rows"]) == len(models)
