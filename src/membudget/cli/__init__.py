"""The ``membudget`` command line. An interface only: it parses, calls the core, renders."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.console import Console

from membudget import __version__
from membudget.budget import MemoryBudget
from membudget.cli._errors import report
from membudget.cli._params import parse_count
from membudget.errors import InvalidArgumentError
from membudget.report import EstimateReport, Geometry
from membudget.units import MIB, format_bytes, parse_size

__all__ = ["app", "main"]

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


@app.command()
def estimate(
    memory: Annotated[str, typer.Option(help="Memory to use: 8GiB, 16GB, 8192MiB, or bytes.")],
    params: Annotated[str, typer.Option(help="Parameter count: 8e9, 8B, 270M, 8000000000.")],
    bits: Annotated[float, typer.Option(help="Bits per weight, e.g. 1.125 for Q1_0.")],
    layers: Annotated[int | None, typer.Option(help="Transformer layers.")] = None,
    heads: Annotated[
        int | None, typer.Option(help="Attention heads (the reference's KV heads).")
    ] = None,
    head_dim: Annotated[int | None, typer.Option(help="Dimension of one head.")] = None,
    context: Annotated[int | None, typer.Option(help="Context length to check, in tokens.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")] = False,
) -> None:
    """The reference estimator: budget, largest FP16 context, and whether a context fits.

    Exit status: 0 when the asked context fits or none was asked, 1 when it does not fit,
    2 for bad input.
    """
    memory_bytes = parse_size(memory)
    if memory_bytes % MIB:
        warn(
            f"--memory {memory} is not a whole number of MiB; the reference works in whole MiB, "
            f"so {format_bytes(memory_bytes // MIB * MIB)} is used."
        )
    count = parse_count("--params", params)
    geometry_args = {"--layers": layers, "--heads": heads, "--head-dim": head_dim}
    given = [name for name, value in geometry_args.items() if value is not None]
    if given and len(given) != len(geometry_args):
        missing = ", ".join(name for name, value in geometry_args.items() if value is None)
        raise typer.BadParameter(f"{', '.join(given)} also needs {missing}.")
    if context is not None and not given:
        raise typer.BadParameter("--context needs --layers, --heads and --head-dim.")
    if context is not None and context < 0:
        raise InvalidArgumentError("--context", context, "must be a non-negative integer")
    budget = MemoryBudget.estimate(memory_bytes // MIB, count, bits)
    geometry = None
    if layers is not None and heads is not None and head_dim is not None:
        geometry = Geometry(layers, heads, head_dim)
        MemoryBudget.kv_bytes_per_token(layers, heads, head_dim)  # validates the three counts
    result = EstimateReport(memory_bytes, count, bits, budget, geometry, context)
    if as_json:
        emit_json(result.to_dict())
    else:
        stdout_console().print(result)
    if result.fits is False:
        raise typer.Exit(EXIT_DOES_NOT_FIT)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; errors become one line on stderr and status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    try:
        command = typer.main.get_command(app)
        result = command.main(args=args, prog_name="membudget", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        sys.stderr.write("membudget: aborted\n")
        return 130
    except (Exception, MemoryError) as e:  # noqa: BLE001 - the one place exceptions become messages
        return report(e)
    if isinstance(result, int) and not isinstance(result, bool):
        return result  # typer returns the Exit code here when standalone_mode is off
    return EXIT_OK


def run() -> None:  # pragma: no cover - thin wrapper for ``python -m`` and the console script
    sys.exit(main())
