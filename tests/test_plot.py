"""``membudget plot`` and the curves behind it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget.cli import main
from membudget.curves import compare, context_grid, memory_curve
from membudget.hardware import Hardware
from membudget.readers.catalog import catalog_spec
from membudget.report_plan import PlanReport
from membudget.request import PlanRequest, run_plan
from membudget.units import parse_size

pytest.importorskip("matplotlib")


def _no_probe() -> Hardware:
    raise AssertionError("an explicit budget needs no probing")


@given(st.integers(1, 1 << 21))
def test_context_grid_is_on_llama_cpps_grid(limit: int) -> None:
    """Every context is a positive multiple of 256, increasing, and the last reaches limit."""
    grid = context_grid(limit)
    assert all(c % 256 == 0 and c > 0 for c in grid)
    assert list(grid) == sorted(set(grid))
    assert grid[-1] >= limit
    assert len(grid) <= 48


def test_curve_agrees_with_the_plan() -> None:
    spec = catalog_spec("qwen3-8b")
    request = PlanRequest(engine="llama.cpp", memory_bytes=16 * 2**30)
    curve = memory_curve(spec, request, _no_probe)
    plan = run_plan(request, spec, _no_probe)
    assert isinstance(plan, PlanReport)
    assert curve.max_context == plan.plan.max_context
    i = curve.contexts.index(4096) if 4096 in curve.contexts else None
    if i is not None:
        assert curve.totals("CPU")[i] == plan.plan.estimate.resident_bytes
    totals = curve.totals("CPU")
    assert list(totals) == sorted(totals), "memory never shrinks as the context grows"


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["cache-types", "quants"]))
def test_compare_bars_fit_iff_within_budget(kind: str) -> None:
    spec = catalog_spec("llama-3.2-3b")
    request = PlanRequest(memory_bytes=6 * 2**30, ctx=8192)
    bars = compare(spec, request, _no_probe, "cache-types" if kind == "cache-types" else "quants")
    assert len(bars) == 7
    for b in bars:
        assert b.fits == (b.total_bytes <= 6 * 2**30)
        assert (b.max_context >= 8192) == b.fits or not b.fits


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_writes_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"mem{suffix}"
    code = main(
        ["plot", "gemma-3-4b", "--memory", "8GiB", "--out", str(out), "--compare", "quants"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out == ""
    assert f"wrote {out}" in captured.err
    head = out.read_bytes()[:64]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in out.read_bytes()[:4096]


def test_plot_marks_budgets_per_device_and_the_largest_context(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "mem.svg"
    code = main(
        ["plot", "qwen3-14b", "--memory", "32GiB", "--gpu", "8GiB", "--out", str(out), "--json"]
    )
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    devices = {d["device"]: d["budget_bytes"] for d in data["devices"]}
    assert devices["CPU"] == 32 * 2**30
    assert devices["CUDA0"] == 8 * 2**30
    svg = out.read_text()
    assert "largest context that fits" in svg or "trained context" in svg
    assert svg.count("budget") >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(["--out", "mem.jpg"], "must end in .png or .svg", id="format"),
        pytest.param(
            ["--out", "m.png", "--compare", "colours"], "cache-types or quants", id="compare"
        ),
        pytest.param(["--out", "m.png", "--engine", "reference"], "llama.cpp or vllm", id="engine"),
        pytest.param(["--out", "/nonexistent/dir/m.png"], "Cannot write plot", id="unwritable"),
    ],
)
def test_plot_errors_are_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code = main(["plot", "qwen3-0.6b", "--memory", "8GiB", *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def _figure(args: list[str], kind: str | None = None) -> Any:
    """The figure ``membudget plot`` draws for ``args`` (no file written)."""
    from membudget.hardware import detect
    from membudget.loader import load_model
    from membudget.plotting import figure

    model, memory, gpu, quant = args
    request = PlanRequest(
        engine="llama-server",
        memory_bytes=parse_size(memory),
        gpu_bytes=(parse_size(gpu),) if gpu else None,
        quant=quant or None,
    )
    spec = load_model(model)
    curve = memory_curve(spec, request, detect)
    bars = compare(spec, request, detect, kind) if kind else ()  # type: ignore[arg-type]
    return figure(curve, bars, "KV-cache types", 0)


FIGURES = {
    "two devices and a comparison": (["qwen3-8b", "12GiB", "6GiB", ""], "cache-types"),
    "trained context is the limit, repacked weights": (["qwen3-8b", "64GiB", "", "Q4_K_M"], None),
    "one device, quantisation presets": (["gemma-3-4b", "8GiB", "", ""], "quants"),
}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_labels_never_overlap(name: str) -> None:
    """The plot looked at: no two texts (titles, axis labels, tick labels, annotations, legend
    entries) overlap, and no legend sits on an axes' data area."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.legend import Legend
    from matplotlib.text import Text

    args, kind = FIGURES[name]
    fig = _figure(args, kind)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # type: ignore[no-untyped-call]
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1 :]:
            overlap = box_a.intersection(box_a, box_b)
            assert overlap is None or overlap.width * overlap.height < 4, f"{a!r} overlaps {b!r}"
    for legend in fig.findobj(Legend):
        frame = legend.get_window_extent(renderer)
        for ax in fig.axes:
            inside = frame.intersection(frame, ax.get_window_extent(renderer))
            assert inside is None or inside.height < 2, "a legend covers the data"


def test_each_component_keeps_its_colour() -> None:
    """The same component has the same colour in every panel, whatever else is drawn."""
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_hex

    from membudget.plotting import colour_of

    for args, kind in FIGURES.values():
        fig = _figure(args, kind)
        for ax in fig.axes:
            handles, labels = ax.get_legend_handles_labels()
            for handle, label in zip(handles, labels, strict=True):
                if label == "budget":
                    continue
                face: Any = (
                    handle.get_facecolor()[0]
                    if isinstance(handle, PolyCollection)
                    else handle.patches[0].get_facecolor()
                )
                assert to_hex(face, keep_alpha=False) == colour_of(label), (label, args)


def test_trained_limit_and_repack_are_drawn_and_named() -> None:
    args, _ = FIGURES["trained context is the limit, repacked weights"]
    fig = _figure(args)
    from matplotlib.text import Text

    texts = " | ".join(t.get_text() for t in fig.findobj(Text))
    assert "trained context 40,960: the limit, not memory" in texts
    assert "weights, repacked copy (CPU_REPACK)" in texts
    ax = fig.axes[0]
    assert ax.get_xlim()[1] > 40960, "the curve goes past the trained context"
