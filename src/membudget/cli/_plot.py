"""``membudget plot``: memory by component against context, as PNG or SVG."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Any

import typer

from membudget.cli._app import app, emit_json
from membudget.cli._output import Quiet, Revision, busy, load_with_progress
from membudget.cli._plan import (
    CTK,
    CTV,
    FA,
    Batch,
    Ctx,
    Parallel,
    Quant,
    Source,
    SwaFull,
    UBatch,
    Unified,
    flags_request,
)
from membudget.errors import InvalidArgumentError


@app.command()
def plot(
    source: Source,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write: mem.png or mem.svg.")],
    engine: Annotated[str, typer.Option(help="llama-server, llama.cpp or vllm.")] = "llama-server",
    ctx: Ctx = None,
    batch: Batch = 2048,
    ubatch: UBatch = 512,
    parallel: Parallel = None,
    kv_unified: Unified = False,
    cache_type_k: CTK = "f16",
    cache_type_v: CTV = "f16",
    flash_attn: FA = "auto",
    swa_full: SwaFull = False,
    quant: Quant = None,
    memory: Annotated[
        str | None, typer.Option(help="Memory budget (default: this machine's available RAM).")
    ] = None,
    margin: Annotated[str | None, typer.Option(help="Safety margin off the budget.")] = None,
    gpu: Annotated[list[str] | None, typer.Option(help="GPU memory, repeatable.")] = None,
    compare_by: Annotated[
        str | None,
        typer.Option(
            "--compare",
            help="Add a panel comparing the context under each KV-cache type (cache-types) "
            "or each llama.cpp quantisation preset (quants).",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the plotted numbers as JSON on stdout.")
    ] = False,
    quiet: Quiet = False,
    revision: Revision = "main",
) -> None:
    """Draw memory stacked by component against context length, with each device's budget
    and the largest context that fits. Needs the plot extra: pip install 'membudget[plot]'."""
    from membudget.curves import PLOT_SCHEMA, CompareKind, compare, memory_curve
    from membudget.hardware import detect
    from membudget.plotting import draw

    kind: CompareKind | None = None
    if compare_by is not None:
        if compare_by not in ("cache-types", "quants"):
            raise InvalidArgumentError("--compare", compare_by, "must be cache-types or quants")
        kind = "cache-types" if compare_by == "cache-types" else "quants"
    request = flags_request(
        source=source,
        engine=engine,
        ctx=ctx,
        batch=batch,
        ubatch=ubatch,
        parallel=parallel,
        kv_unified=kv_unified,
        cache_type_k=cache_type_k,
        cache_type_v=cache_type_v,
        flash_attn=flash_attn,
        swa_full=swa_full,
        quant=quant,
        memory=memory,
        margin=margin,
        gpu=gpu,
    )
    spec = load_with_progress(source, quiet=quiet, revision=revision)
    probe = cache(detect)
    with busy("computing the curve", quiet=quiet):
        curve = memory_curve(spec, request, probe)
        bars = compare(spec, request, probe, kind) if kind is not None else ()
    title = "KV-cache types" if kind == "cache-types" else "quantisation presets"
    fmt = draw(curve, out, bars, title, request.n_ctx)
    if as_json:
        data: dict[str, Any] = {
            "schema": PLOT_SCHEMA,
            "out": str(out),
            "format": fmt,
            **curve.to_dict(),
            "compare": None
            if kind is None
            else {"by": kind, "n_ctx": request.n_ctx, "bars": [b.to_dict() for b in bars]},
        }
        emit_json(data)
    elif not quiet:
        fits = f"largest context that fits: {curve.max_context:,} tokens"
        typer.echo(f"wrote {out} ({fmt}); {fits}", err=True)
