"""``membudget plot`` and the curves behind it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from membudget.cli import main
from membudget.curves import compare, context_grid, memory_curve
from membudget.hardware import Hardware
from membudget.readers.catalog import catalog_spec
from membudget.report_plan import PlanReport
from membudget.request import PlanRequest, run_plan

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
    assert "largest context that fits" in svg
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
