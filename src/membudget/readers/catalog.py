"""The built-in catalogue: widely deployed models, described by their own config.json fields.

The data lives in ``data/catalog.json``; every entry cites where its numbers came from. A
catalogue model has no weights on disk, so its parameter count is computed from the geometry
(the tests check it against the count each entry cites).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

from membudget.errors import UnknownModelError
from membudget.model import ModelSpec
from membudget.readers.hf_config import StorageScheme, spec_from_config, storage_scheme

__all__ = ["CatalogEntry", "catalog", "catalog_spec", "find_entry", "hf_repo", "suggest"]


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    display: str
    family: str
    n_params: int
    params_tolerance: float
    source: str
    storage: str
    config: dict[str, Any]


@cache
def catalog() -> dict[str, CatalogEntry]:
    """Every catalogue entry by name, in file order."""
    text = files("membudget.readers").joinpath("data/catalog.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {
        m["name"]: CatalogEntry(
            name=m["name"],
            display=m["display"],
            family=m["family"],
            n_params=int(m["n_params"]),
            params_tolerance=float(m["params_tolerance"]),
            source=m["source"],
            storage=m.get("storage", ""),
            config=m["config"],
        )
        for m in data["models"]
    }


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


def suggest(name: str, n: int = 3) -> list[str]:
    """The catalogue names closest to ``name``."""
    names = list(catalog())
    wanted = _normalise(name)
    close = difflib.get_close_matches(wanted, names, n=n, cutoff=0.5)
    if not close:
        close = [c for c in names if wanted and (wanted in c or c in wanted)][:n]
    return close


def find_entry(name: str) -> CatalogEntry | None:
    return catalog().get(_normalise(name))


def catalog_spec(name: str) -> ModelSpec:
    """The ModelSpec of a catalogue model; unknown names get the nearest names suggested."""
    entry = find_entry(name)
    if entry is None:
        raise UnknownModelError(name, suggest(name))
    path = Path(f"catalogue:{entry.name}")
    scheme: StorageScheme
    if entry.storage.startswith("ggml:"):
        scheme = StorageScheme(entry.storage[5:], 16, entry.storage)
    else:
        scheme = storage_scheme(entry.config, path)
    return spec_from_config(
        entry.config,
        path=path,
        name=entry.display,
        source=f"catalogue:{entry.name}",
        source_kind="catalogue",
        scheme=scheme,
        notes=(f"catalogue entry {entry.name!r}: {entry.source}",),
        origin=f"catalogue entry {entry.name!r} (config of {entry.source})",
    )


def hf_repo(name: str) -> str | None:
    """The Hugging Face repo id a catalogue entry cites first (``org/name``), if any."""
    entry = find_entry(name)
    if entry is None:
        return None
    marker = "https://huggingface.co/"
    at = entry.source.find(marker)
    if at < 0:
        return None
    parts = entry.source[at + len(marker) :].split("/")
    return f"{parts[0]}/{parts[1]}" if len(parts) >= 2 else None
