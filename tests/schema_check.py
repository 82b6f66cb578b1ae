"""Validate a JSON document against the schema its ``"schema"`` field names."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from membudget.schemas import SCHEMA_IDS, load_schema


def _registry() -> Registry[Any]:
    resources = []
    for sid in SCHEMA_IDS:
        doc = load_schema(sid)
        resources.append((doc["$id"], Resource.from_contents(doc)))
    return Registry().with_resources(resources)


REGISTRY = _registry()


def check(data: dict[str, Any]) -> dict[str, Any]:
    """Raise ``jsonschema.ValidationError`` unless ``data`` matches its own schema."""
    schema = load_schema(data["schema"])
    Draft202012Validator.check_schema(schema)
    Draft202012Validator(schema, registry=REGISTRY).validate(data)
    return data
