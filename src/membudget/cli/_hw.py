"""``membudget hw``: what this machine has."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app, emit_json, stdout_console
from membudget.hardware import detect
from membudget.report import HardwareReport


@app.command()
def hw(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """Show this machine's memory (container limits honoured), GPUs and CPU."""
    result = HardwareReport(detect())
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
