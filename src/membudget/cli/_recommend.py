"""``membudget recommend``: settings to run a model with, and why."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from membudget.cli._app import app, emit_json, stdout_console
from membudget.engines.llamacpp import LlamaCppSettings
from membudget.hardware import detect
from membudget.loader import load_model
from membudget.plan import budget_for, offload
from membudget.presets import apply_preset
from membudget.units import parse_size

RECOMMEND_SCHEMA = "membudget/recommend/1"


@app.command()
def recommend(
    source: Annotated[
        str, typer.Argument(help="GGUF, safetensors, config.json, HF repo id or catalogue name.")
    ],
    ctx: Annotated[
        int, typer.Option("--ctx", "-c", help="The context you want, in tokens (default: trained).")
    ] = 0,
    parallel: Annotated[int, typer.Option("--parallel", "-np", help="Parallel sequences.")] = 1,
    quant: Annotated[
        str | None, typer.Option(help="Requantise to a llama.cpp preset first.")
    ] = None,
    memory: Annotated[str | None, typer.Option(help="RAM budget (default: this machine).")] = None,
    gpu: Annotated[
        list[str] | None, typer.Option(help="GPU memory, repeatable (default: NVML).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Recommend the KV-cache type, flash attention, prefix caching, batch size and threads for
    llama.cpp, each with the reason for the choice."""
    from membudget.recommend import recommend as _recommend  # noqa: PLC0415

    spec = load_model(source)
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
    recs = _recommend(spec, settings, budget, hw)
    if as_json:
        data: dict[str, Any] = {
            "schema": RECOMMEND_SCHEMA,
            "model": spec.name,
            "recommendations": [
                {"setting": r.setting, "value": r.value, "flags": list(r.flags), "reason": r.reason}
                for r in recs
            ],
            "flags": [f for r in recs for f in r.flags],
        }
        emit_json(data)
        return
    from rich.table import Table  # noqa: PLC0415

    t = Table(title=f"Recommended llama.cpp settings for {spec.name}", title_justify="left")
    t.add_column("setting")
    t.add_column("value")
    t.add_column("flags")
    t.add_column("why")
    for r in recs:
        t.add_row(r.setting, r.value, " ".join(r.flags), r.reason)
    console = stdout_console()
    console.print(t)
    console.print("flags: " + " ".join(f for r in recs for f in r.flags))
