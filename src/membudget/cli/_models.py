"""``membudget models`` and ``membudget inspect``."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app
from membudget.cli._output import SOURCE_HELP, Explain, Quiet, Revision, load_with_progress, render
from membudget.presets import PRESETS


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """List the built-in catalogue (usable by name anywhere a model is asked for)."""
    from membudget.readers.catalog import catalog
    from membudget.report import CatalogReport

    render(CatalogReport(tuple(catalog().values())), as_json=as_json, quiet=quiet)


@app.command()
def inspect(
    source: Annotated[str, typer.Argument(help=SOURCE_HELP)],
    quant: Annotated[
        str | None,
        typer.Option(help=f"Requantise to a llama.cpp preset: {', '.join(PRESETS)}."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    quiet: Quiet = False,
    revision: Revision = "main",
    explain: Explain = False,
) -> None:
    """Show what membudget knows about a model: geometry, weights, quantisation.
    ``--explain`` names the GGUF key or config field behind each value."""
    from membudget.presets import apply_preset
    from membudget.report import ModelReport

    spec = load_with_progress(source, quiet=quiet, revision=revision)
    if quant is not None:
        spec = apply_preset(spec, quant)
    render(ModelReport(spec), as_json=as_json, quiet=quiet, explain=explain)
