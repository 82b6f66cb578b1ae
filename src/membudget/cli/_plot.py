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
    Apple,
    Batch,
    CpuMoe,
    Ctx,
    Gpu,
    GpuMemoryUtilization,
    KvCacheDtype,
    Margin,
    MaxModelLen,
    Memory,
    NCpuMoe,
    NGpuLayers,
    Nodes,
    Parallel,
    PipelineParallel,
    Quant,
    Ram,
    RpcNode,
    Source,
    SwaFull,
    TensorParallel,
    TensorSplit,
    UBatch,
    Unified,
    WiredLimitMb,
    flags_request,
    given_fields,
    machine_args,
)
from membudget.errors import InvalidArgumentError


@app.command()
def plot(
    ctx_: typer.Context,
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
    memory: Memory = None,
    margin: Margin = None,
    gpu: Gpu = None,
    ram: Ram = None,
    rpc_node: RpcNode = None,
    apple: Apple = None,
    wired_limit_mb: WiredLimitMb = None,
    n_gpu_layers: NGpuLayers = None,
    tensor_split: TensorSplit = None,
    n_cpu_moe: NCpuMoe = None,
    cpu_moe: CpuMoe = False,
    tensor_parallel: TensorParallel = 1,
    pipeline_parallel: PipelineParallel = 1,
    nodes: Nodes = 1,
    max_model_len: MaxModelLen = 0,
    kv_cache_dtype: KvCacheDtype = "auto",
    gpu_memory_utilization: GpuMemoryUtilization = 0.92,
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
        given=given_fields(ctx_),
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
        **machine_args(
            source=source,
            memory=memory,
            ram=ram,
            margin=margin,
            gpu=gpu,
            rpc_node=rpc_node,
            apple=apple,
            wired_limit_mb=wired_limit_mb,
            n_gpu_layers=n_gpu_layers,
            tensor_split=tensor_split,
            n_cpu_moe=n_cpu_moe,
            cpu_moe=cpu_moe,
        ),
        tensor_parallel=tensor_parallel,
        pipeline_parallel=pipeline_parallel,
        nodes=nodes,
        max_model_len=max_model_len,
        kv_cache_dtype=kv_cache_dtype,
        gpu_memory_utilization=gpu_memory_utilization,
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
