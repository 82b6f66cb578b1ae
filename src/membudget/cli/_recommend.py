"""``membudget recommend``: settings to run a model with, and why."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app
from membudget.cli._output import SOURCE_HELP, Explain, Quiet, Revision, load_with_progress, render
from membudget.cli._plan import Gpu, Memory, Quant
from membudget.units import parse_size


@app.command()
def recommend(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    ctx: Annotated[
        int, typer.Option("--ctx", "-c", help="The context you want, in tokens (default: trained).")
    ] = 0,
    parallel: Annotated[int, typer.Option("--parallel", "-np", help="Parallel sequences.")] = 1,
    quant: Quant = None,
    memory: Memory = None,
    gpu: Gpu = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    quiet: Quiet = False,
    revision: Revision = "main",
    explain: Explain = False,
) -> None:
    """Recommend the KV-cache type, flash attention, prefix caching, batch size and threads for
    llama.cpp, each with the reason for the choice."""
    from membudget.engines.llamacpp import LlamaCppSettings
    from membudget.hardware import detect
    from membudget.plan import budget_for, offload
    from membudget.presets import apply_preset
    from membudget.recommend import recommend as _recommend
    from membudget.report_plan import RecommendReport

    spec = load_with_progress(source, quiet=quiet, revision=revision)
    if quant is not None:
        spec = apply_preset(spec, quant)
    hw = detect()
    budget = budget_for(
        parse_size(memory) if memory is not None else None,
        hw,
        None,
        tuple(parse_size(g) for g in gpu) if gpu else None,
    )
    settings = LlamaCppSettings(n_ctx=ctx or spec.n_ctx_train or 4096, n_parallel=parallel)
    if budget.gpus:
        settings = offload(spec, settings, budget)
    result = RecommendReport(spec.name, tuple(_recommend(spec, settings, budget, hw)))
    render(result, as_json=as_json, quiet=quiet, explain=explain)
