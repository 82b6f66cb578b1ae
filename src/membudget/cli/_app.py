"""The Typer application and the helpers every command shares."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

from membudget import __version__

EXIT_OK = 0
EXIT_DOES_NOT_FIT = 1

app = typer.Typer(
    name="membudget",
    help="Will this LLM fit in my memory? Exact budgets and the engine flags to run it.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def stdout_console() -> Console:
    """The console for data. Colour follows rich's rules, which honour NO_COLOR."""
    from rich.console import Console

    return Console(soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    """A message for people, on stderr."""
    sys.stderr.write(f"membudget: {message}\n")


def emit_json(data: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"membudget {__version__}\n")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Will this LLM fit in my memory? Exact budgets and the engine flags to run it."""
