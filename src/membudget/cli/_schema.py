"""``membudget schema``: the JSON Schema of a ``--json`` output."""

from __future__ import annotations

from typing import Annotated, Any

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
        bool,
        typer.Option("--json", help="Print the schema itself (JSON), or the list of ids as JSON."),
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
    if as_json:
        emit_json(loaded)
        return
    if quiet:
        typer.echo(f"{full}: {loaded.get('title', '')}")
        return
    _print_fields(full, loaded)


def _type_of(node: dict[str, Any]) -> str:
    if "const" in node:
        return repr(node["const"])
    if "enum" in node:
        return " | ".join(repr(v) for v in node["enum"])
    kind = node.get("type", "")
    return " | ".join(kind) if isinstance(kind, list) else str(kind or "object")


def fields(node: dict[str, Any], path: str = "") -> list[tuple[str, str, str]]:
    """(field path, type, description) of every property of a schema, depth first; array
    items as ``[]``, the variants of ``oneOf``/``anyOf`` in turn."""
    out: list[tuple[str, str, str]] = []
    for key, child in (node.get("properties") or {}).items():
        if not isinstance(child, dict):
            continue
        here = f"{path}.{key}" if path else key
        out.append((here, _type_of(child), str(child.get("description", ""))))
        out += fields(child, here)
    items = node.get("items")
    if isinstance(items, dict):
        out += fields(items, f"{path}[]")
    for variant in (node.get("oneOf") or []) + (node.get("anyOf") or []):
        if isinstance(variant, dict):
            out += fields(variant, path)
    return out


def _print_fields(schema_id: str, schema: dict[str, Any]) -> None:
    from rich.table import Table

    from membudget.cli._app import stdout_console

    table = Table(title=f"{schema_id}: {schema.get('description', '')}", title_justify="left")
    for col in ("field", "type", "what it is"):
        table.add_column(col, overflow="fold")
    seen: set[tuple[str, str]] = set()
    for path, kind, text in fields(schema):
        if (path, text) in seen:  # a field both variants of a oneOf share
            continue
        seen.add((path, text))
        table.add_row(path, kind, text)
    stdout_console().print(table)
    stdout_console().print("membudget schema ID --json prints the JSON Schema itself.")
