"""``membudget estimate``: the reference estimator."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import EXIT_DOES_NOT_FIT, app, warn
from membudget.cli._output import Explain, Quiet, render
from membudget.cli._params import parse_count
from membudget.errors import InvalidArgumentError
from membudget.units import MIB, format_bytes, parse_size


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
    quiet: Quiet = False,
    explain: Explain = False,
) -> None:
    """The reference estimator: budget, largest FP16 context, and whether a context fits.

    Exit status: 0 when the asked context fits or none was asked, 1 when it does not fit,
    2 for bad input.
    """
    from membudget.budget import MemoryBudget
    from membudget.report import EstimateReport, Geometry

    memory_bytes = parse_size(memory)
    if memory_bytes % MIB and not quiet:
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
    render(result, as_json=as_json, quiet=quiet, explain=explain)
    if result.fits is False:
        raise typer.Exit(EXIT_DOES_NOT_FIT)
