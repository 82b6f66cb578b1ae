"""``membudget models`` and ``membudget inspect``."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app, emit_json, stdout_console
from membudget.loader import load_model
from membudget.presets import PRESETS, apply_preset
from membudget.readers.catalog import catalog
from membudget.report import CatalogReport, ModelReport


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """List the built-in catalogue (usable by name anywhere a model is asked for)."""
    result = CatalogReport(tuple(catalog().values()))
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)


@app.command()
def inspect(
    source: Annotated[
        str,
        typer.Argument(
            help="A GGUF file, safetensors file or directory, config.json, cached HF repo id, "
            "or catalogue name."
        ),
    ],
    quant: Annotated[
        str | None,
        typer.Option(help=f"Requantise to a llama.cpp preset: {', '.join(PRESETS)}."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show what membudget knows about a model: geometry, weights, quantisation."""
    spec = load_model(source)
    if quant is not None:
        spec = apply_preset(spec, quant)
    result = ModelReport(spec)
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
