"""Models in Ollama's local store (``ollama:NAME[:TAG]``), read offline.

The store is ``OLLAMA_MODELS``, else ``~/.ollama/models``. A manifest
``manifests/HOST/NAMESPACE/NAME/TAG`` (JSON) lists layers; the one of media type
``application/vnd.ollama.image.model`` is the GGUF, at ``blobs/sha256-HEX``, and a layer of
``application/vnd.ollama.image.params`` holds the model's default options (``num_ctx``). The
host defaults to ``registry.ollama.ai``, the namespace to ``library`` and the tag to
``latest``, so ``ollama:qwen3:8b`` and ``ollama:hf.co/owner/repo:Q4_K_M`` both resolve
(Ollama's ``types/model/name.go`` ``ParseName``).
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from membudget.errors import ModelFileError
from membudget.readers._binary import parse_json, read_small_file

if TYPE_CHECKING:
    from membudget.model import ModelSpec

__all__ = ["OllamaStoreError", "ollama_models_dir", "ollama_spec", "parse_ollama_name"]

PREFIX = "ollama:"
MODEL_MEDIA = "application/vnd.ollama.image.model"
PARAMS_MEDIA = "application/vnd.ollama.image.params"
_PART = re.compile(r"^[A-Za-z0-9][\w.+-]{0,127}$")
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_MANIFEST_CAP = 1 << 20


class OllamaStoreError(ModelFileError):
    """Raised when an ``ollama:`` name cannot be found or read in Ollama's store."""

    kind = "Ollama model"


def ollama_models_dir() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".ollama" / "models"


def parse_ollama_name(text: str) -> tuple[str, str, str, str]:
    """``(host, namespace, model, tag)`` of ``ollama:NAME[:TAG]``."""
    name = text.removeprefix(PREFIX)
    tag = "latest"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    parts = name.split("/")
    if len(parts) == 1:
        host, namespace, model = "registry.ollama.ai", "library", parts[0]
    elif len(parts) == 2:
        host, (namespace, model) = "registry.ollama.ai", parts
    elif len(parts) == 3:
        host, namespace, model = parts
    else:
        raise OllamaStoreError(text, "expected ollama:[HOST/][NAMESPACE/]NAME[:TAG]")
    for part in (host, namespace, model, tag):
        if not _PART.match(part):
            raise OllamaStoreError(text, f"{part!r} is not a valid name part")
    return host, namespace, model, tag


def _layers(manifest: Path, text: str) -> list[dict[str, Any]]:
    parsed = parse_json(
        read_small_file(manifest, OllamaStoreError, _MANIFEST_CAP),
        manifest,
        OllamaStoreError,
        "the manifest",
    )
    layers = parsed.get("layers") if isinstance(parsed, dict) else None
    if not isinstance(layers, list):
        raise OllamaStoreError(text, f"its manifest {str(manifest)!r} lists no layers")
    return [x for x in layers if isinstance(x, dict)]


def _blob(root: Path, layer: dict[str, Any], text: str) -> Path:
    digest = layer.get("digest")
    m = _DIGEST.match(digest) if isinstance(digest, str) else None
    if m is None:
        raise OllamaStoreError(text, f"a layer has the digest {digest!r}, not sha256:<hex>")
    blob = root / "blobs" / f"sha256-{m[1]}"
    if not blob.is_file():
        raise OllamaStoreError(text, f"its blob {str(blob)!r} is missing from the store")
    return blob


def ollama_spec(text: str) -> ModelSpec:
    """The model ``ollama:NAME[:TAG]`` names, read from its GGUF blob in the store."""
    from membudget.readers.gguf_spec import load_gguf  # noqa: PLC0415

    host, namespace, model, tag = parse_ollama_name(text)
    root = ollama_models_dir()
    manifest = root / "manifests" / host / namespace / model / tag
    if not manifest.is_file():
        raise OllamaStoreError(
            text,
            f"not in Ollama's store at {str(root)!r} (no manifest {host}/{namespace}/"
            f"{model}/{tag}); pull it with ollama pull, or set OLLAMA_MODELS",
        )
    layers = _layers(manifest, text)
    model_layer = next((x for x in layers if x.get("mediaType") == MODEL_MEDIA), None)
    if model_layer is None:
        raise OllamaStoreError(text, "its manifest has no model layer (a GGUF)")
    spec = load_gguf(_blob(root, model_layer, text))
    notes = [f"read from Ollama's store ({host}/{namespace}/{model}:{tag})"]
    params = next((x for x in layers if x.get("mediaType") == PARAMS_MEDIA), None)
    if params is not None:
        blob = _blob(root, params, text)
        values = parse_json(
            read_small_file(blob, OllamaStoreError, _MANIFEST_CAP), blob, OllamaStoreError, "params"
        )
        num_ctx = values.get("num_ctx") if isinstance(values, dict) else None
        if isinstance(num_ctx, int) and not isinstance(num_ctx, bool) and num_ctx > 0:
            notes.append(f"the model's Ollama parameters set num_ctx {num_ctx}")
    return replace(spec, source=text, notes=(*spec.notes, *notes))
