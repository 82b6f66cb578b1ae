"""JSON Schemas of every ``--json`` output (and of the web API's answers).

Each output carries ``"schema": "membudget/<name>/<version>"``; the file
``<name>.<version>.json`` here describes it. A version changes whenever a field changes meaning
or disappears; new fields may be added within a version.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from membudget.errors import InvalidArgumentError

__all__ = ["SCHEMA_IDS", "load_schema"]

SCHEMA_IDS = (
    "membudget/catalog/1",
    "membudget/estimate/1",
    "membudget/fit/1",
    "membudget/hardware/1",
    "membudget/model/1",
    "membudget/plan/2",
    "membudget/plot/1",
    "membudget/recommend/1",
    "membudget/schemas/1",
    "membudget/serve/1",
    "membudget/validate/1",
)


@cache
def _load(file_name: str) -> str:
    return resources.files(__name__).joinpath(file_name).read_text(encoding="utf-8")


def load_schema(schema_id: str) -> dict[str, Any]:
    """The JSON Schema (a fresh dict) for ``schema_id``, e.g. ``"membudget/plan/2"``."""
    if schema_id not in SCHEMA_IDS:
        raise InvalidArgumentError("schema", schema_id, f"must be one of {', '.join(SCHEMA_IDS)}")
    _, name, version = schema_id.split("/")
    data: dict[str, Any] = json.loads(_load(f"{name}.{version}.json"))
    return data
