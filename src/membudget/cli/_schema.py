"""``membudget schema``: the JSON Schema of a ``--json`` output."""

from __future__ import annotations

from typing import Annotated

import typer

from membudget.cli._app import app, emit_json
from membudget.cli._output import Quiet


@app.command()
def schema(
    schema_id: Annotated[
        str | None,
        typer.Argument(help="A schema id such as membudget/plan/2 (or plan/2); none lists them."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="List the ids as JSON (the schema itself is JSON).")
    ] = False,
    quiet: Quiet = False,
) -> None:
    """Print the JSON Schema that an output's "schema" field names, or list them all."""
    from membudget.schemas import SCHEMA_IDS, load_schema

    if schema_id is None:
        if quiet and not as_json:
            typer.echo(f"{len(SCHEMA_IDS)} schemas")
            return
        if as_json:
            emit_json({"schema": "membudget/schemas/1", "schemas": list(SCHEMA_IDS)})
        else:
            typer.echo("\n".join(SCHEMA_IDS))
        return
    full = schema_id if schema_id.startswith("membudget/") else f"membudget/{schema_id}"
    loaded = load_schema(full)
    if quiet and not as_json:
        typer.echo(f"{full}: {loaded.get('title', '')}")
        return
    emit_json(loaded)
