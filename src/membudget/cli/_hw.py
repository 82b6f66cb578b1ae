"""``membudget hw``: what this machine has."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app
from membudget.cli._output import Quiet, render


@app.command()
def hw(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
    quiet: Quiet = False,
) -> None:
    """Show this machine's memory (container limits honoured), GPUs and CPU."""
    from membudget.hardware import detect
    from membudget.report import HardwareReport

    render(HardwareReport(detect()), as_json=as_json, quiet=quiet)
