"""``load_model(source)``: one entry point for every kind of model source.

``source`` may be a GGUF file (or one part of a split model), a safetensors file or checkpoint
directory, a ``config.json``, a catalogue name, a Hugging Face repo (``OWNER/REPO``: the local
cache first, else its headers on the Hub; ``OWNER/REPO:QUANT``: a GGUF in it), an ``http(s)://``
URL of a GGUF or safetensors file, or ``ollama:NAME[:TAG]`` in Ollama's local store. Paths win
over catalogue names, and catalogue names over repos. Remote sources are read by their headers
only (:mod:`membudget.readers.remote`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from membudget.errors import ConfigError, ModelFileError, UnknownModelError
from membudget.model import ModelSpec, TensorSpec
from membudget.readers.catalog import catalog_spec, find_entry, suggest
from membudget.readers.hf_config import read_config, spec_from_config

if TYPE_CHECKING:
    from membudget.readers.safetensors import SafetensorsFile

__all__ = ["hf_cache_dirs", "load_model", "resolve_hf_cache"]

_GGUF_MAGIC = b"GGUF"


def hf_cache_dirs() -> list[Path]:
    """Where the Hugging Face hub cache may be, in huggingface_hub's order of precedence."""
    dirs: list[Path] = []
    if os.environ.get("HF_HUB_CACHE"):
        dirs.append(Path(os.environ["HF_HUB_CACHE"]))
    if os.environ.get("HF_HOME"):
        dirs.append(Path(os.environ["HF_HOME"]) / "hub")
    xdg = os.environ.get("XDG_CACHE_HOME")
    dirs.append((Path(xdg) if xdg else Path.home() / ".cache") / "huggingface" / "hub")
    return dirs


def resolve_hf_cache(repo_id: str) -> Path | None:
    """The snapshot directory of ``repo_id`` ("org/name") in the local cache, or ``None``.

    The revision ``refs/main`` points at is preferred; otherwise the newest snapshot.
    """
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(p in (".", "..") for p in parts):
        return None
    folder = f"models--{parts[0]}--{parts[1]}"
    for cache_dir in hf_cache_dirs():
        repo = cache_dir / folder
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        ref = repo / "refs" / "main"
        if ref.is_file():
            revision = ref.read_text(encoding="utf-8").strip()
            if revision and (snapshots / revision).is_dir():
                return snapshots / revision
        candidates = sorted(
            (p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime
        )
        if candidates:
            return candidates[-1]
    return None


def _looks_like_gguf(path: Path) -> bool:
    if path.suffix.lower() == ".gguf":
        return True
    try:
        with path.open("rb") as fh:
            return fh.read(4) == _GGUF_MAGIC
    except OSError:
        return False


def _from_checkpoint(config_path: Path, weights: SafetensorsFile | None, name: str) -> ModelSpec:
    return checkpoint_spec(
        read_config(config_path),
        config_path,
        weights,
        name,
        str(config_path.parent if weights is not None else config_path),
    )


def checkpoint_spec(
    cfg: dict[str, Any],
    config_path: Path,
    weights: SafetensorsFile | None,
    name: str,
    source: str,
) -> ModelSpec:
    """A model from its config and, when read, its safetensors headers (local or remote)."""
    quantised = "quantization_config" in cfg
    real = None
    n_params = None
    notes = [f"geometry from {config_path.name}"]
    if weights is not None:
        real = tuple(
            TensorSpec(t.name, t.dtype, tuple(reversed(t.shape)), t.n_bytes)
            for t in weights.tensors
        )
        notes.append(f"weight bytes from {len(weights.files)} safetensors file(s)")
        if not quantised:
            n_params = sum(t.n_elements for t in weights.tensors)
        else:
            notes.append("parameter count from the geometry (packed quantised tensors)")
    else:
        notes.append("no weights found: parameter count and bytes computed from the geometry")
    return spec_from_config(
        cfg,
        path=config_path,
        name=name,
        source=source,
        source_kind="safetensors" if weights is not None else "config",
        real_tensors=real,
        n_params=n_params,
        notes=tuple(notes),
    )


def _load_gguf(path: Path) -> ModelSpec:
    from membudget.readers.gguf_spec import load_gguf  # noqa: PLC0415 - numpy only for GGUFs

    return load_gguf(path)


def _from_directory(directory: Path, name: str) -> ModelSpec:
    from membudget.readers.safetensors import read_safetensors_dir  # noqa: PLC0415

    config = directory / "config.json"
    if config.is_file():
        return _from_checkpoint(config, read_safetensors_dir(directory), name)
    ggufs = sorted(directory.glob("*.gguf"))
    if len(ggufs) == 1 or (ggufs and "-00001-of-" in ggufs[0].name):
        return _load_gguf(ggufs[0])
    if ggufs:
        raise ModelFileError(directory, f"it holds {len(ggufs)} GGUF files; name the one to use")
    raise ModelFileError(directory, "it has no config.json, safetensors or GGUF file")


def load_model(source: str | os.PathLike[str], *, revision: str = "main") -> ModelSpec:
    """Describe the model ``source`` names. See the module docstring for what it accepts;
    ``revision`` is the Hub revision (branch, tag or commit) of a repo read remotely."""
    text = os.fspath(source)
    if text.startswith("ollama:"):
        from membudget.readers.remote.ollama import ollama_spec  # noqa: PLC0415

        return ollama_spec(text)
    if text.startswith(("http://", "https://")):
        from membudget.readers.remote.hub import url_spec  # noqa: PLC0415

        return url_spec(text)
    path = Path(text).expanduser()
    if path.is_dir():
        return _from_directory(path, path.name)
    if path.exists() or path.is_symlink():
        if path.name.endswith(".safetensors"):
            config = path.parent / "config.json"
            if not config.is_file():
                raise ConfigError(path, "a safetensors file needs the config.json beside it")
            from membudget.readers.safetensors import read_safetensors  # noqa: PLC0415

            return _from_checkpoint(config, read_safetensors(path), path.parent.name)
        if path.suffix == ".json":
            if path.name == "model.safetensors.index.json":
                return _from_directory(path.parent, path.parent.name)
            return _from_checkpoint(path, None, path.parent.name or path.stem)
        if path.is_file() and not _looks_like_gguf(path):
            raise ModelFileError(
                path, "it is not a GGUF, safetensors or config.json file (unknown format)"
            )
        return _load_gguf(path)
    if text.endswith((".gguf", ".safetensors", ".json")) or (
        os.sep in text and not _is_repo_id(text)
    ):
        raise ModelFileError(path, "no such file or directory")
    if find_entry(text) is not None:
        return catalog_spec(text)
    from membudget.readers.remote.hub import hub_source, hub_spec  # noqa: PLC0415

    hub = hub_source(text)
    if hub is not None:
        repo, tag = hub
        if tag is None and revision == "main":
            snapshot = resolve_hf_cache(repo)
            if snapshot is not None:
                return _from_directory(snapshot, text)
        return hub_spec(text, repo, tag, revision)
    raise UnknownModelError(text, suggest(text))


def _is_repo_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(p and p not in (".", "..") for p in parts)
