"""Models on the Hugging Face Hub (``OWNER/REPO``, ``OWNER/REPO:QUANT``) and at plain URLs.

huggingface_hub gives the endpoint (``HF_ENDPOINT``), the token (``HF_TOKEN`` or the stored
login), offline mode (``HF_HUB_OFFLINE``), the revision's commit and the repo's file list
(``HfApi.model_info``), and each file's ``resolve`` URL; the bytes come from ranged GETs
(:class:`.http.RangeClient`), which follow the Hub's redirect to its storage host. A file
already in the local Hugging Face cache is read from there. Headers read once are kept
(:class:`.cache.HubCache`).

``OWNER/REPO:QUANT`` picks a GGUF as the issue pins llama.cpp's ``-hf`` choice: the tag
matched case-insensitively in the path, after a separator or the start and before ``.`` or
``-``; ``mmproj``, ``imatrix`` and draft files skipped; a split set
(``NAME-00001-of-0000N.gguf``, in a subfolder too) read across every part. Without a tag a
repo with a safetensors checkpoint is read as one; otherwise one GGUF model is used and
several are refused with their tags.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from membudget.errors import GGUFError, ModelFileError, SafetensorsError
from membudget.readers._binary import SMALL_FILE_CAP, Source
from membudget.readers.remote.cache import HubCache, RepoListing
from membudget.readers.remote.http import RangeClient, RemoteError
from membudget.readers.remote.source import RemoteSource

if TYPE_CHECKING:
    from membudget.model import ModelSpec
    from membudget.readers.gguf import GGUFFile
    from membudget.readers.safetensors import SafetensorsFile

__all__ = ["choose_gguf", "gguf_tag", "hub_source", "hub_spec", "url_spec"]

_REPO = re.compile(r"^([A-Za-z0-9][\w.-]{0,95})/([A-Za-z0-9][\w.-]{0,95})(?::([\w.+-]{1,64}))?$")
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_SKIP = ("mmproj", "imatrix", "draft")
_TAG = re.compile(
    r"(?:^|[-._])((?:ud-)?(?:i?q\d[a-z0-9_]*|tq\d_\d|bf16|f16|fp16|f32|fp32|mxfp4[a-z0-9_]*))$",
    re.IGNORECASE,
)
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_source(text: str) -> tuple[str, str | None] | None:
    """``(repo, tag)`` when ``text`` reads as ``OWNER/REPO[:TAG]``, else None."""
    m = _REPO.match(text)
    if m is None or m[1] in (".", "..") or m[2] in (".", ".."):
        return None
    return f"{m[1]}/{m[2]}", m[3]


def endpoint() -> str:
    """The Hub's endpoint, read when called (``HF_ENDPOINT``, as huggingface_hub reads it)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) with huggingface_hub's truthy values,
    read when called: huggingface_hub's own ``constants.HF_HUB_OFFLINE`` is read at import."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.upper() in ("1", "ON", "YES", "TRUE")


def _is_gguf_model(path: str) -> bool:
    name = PurePosixPath(path).name.lower()
    return name.endswith(".gguf") and not any(k in name for k in _SKIP)


def gguf_sets(files: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each GGUF model of a listing (mmproj, imatrix and draft files left out) by its first
    file, with the parts of a split set in order."""
    out: dict[str, tuple[str, ...]] = {}
    for f in sorted(files):
        if not _is_gguf_model(f):
            continue
        m = _SPLIT.search(f)
        if m is None:
            out[f] = (f,)
        elif m[1] == "00001":
            count = int(m[2])
            stem = f[: m.start()]
            out[f] = tuple(f"{stem}-{i:05d}-of-{m[2]}.gguf" for i in range(1, count + 1))
    return out


def gguf_tag(path: str) -> str:
    """The quant tag a GGUF's name carries (``Q4_K_M``), or its stem when none is seen."""
    name = PurePosixPath(path).name
    stem = _SPLIT.sub("", name)
    stem = stem[:-5] if stem.lower().endswith(".gguf") else stem
    m = _TAG.search(stem)
    return m[1].upper() if m else stem


def choose_gguf(repo: str, files: tuple[str, ...], tag: str | None) -> tuple[str, ...]:
    """The files of the GGUF model ``tag`` names (every part of a split set)."""
    sets = gguf_sets(files)
    tags = sorted({gguf_tag(k) for k in sets})
    if tag is None:
        if len(sets) == 1:
            return next(iter(sets.values()))
        raise RemoteError(
            repo,
            f"it holds {len(sets)} GGUF models; name one as {repo}:TAG (tags: {', '.join(tags)})",
        )
    pattern = re.compile(rf"(?:^|[-._/]){re.escape(tag)}[.-]", re.IGNORECASE)
    found = [k for k in sets if pattern.search(k)]
    if not found:
        there = f"tags: {', '.join(tags)}" if tags else "it holds no GGUF model"
        raise RemoteError(repo, f"no GGUF matches the tag {tag!r} ({there})")
    if len(found) > 1:
        raise RemoteError(
            repo, f"the tag {tag!r} matches {len(found)} GGUF models: {', '.join(found)}"
        )
    return sets[found[0]]


class _Reader:
    """One run's reads of one repo revision: local Hugging Face cache first, then the header
    cache, then ranged GETs."""

    def __init__(self, repo: str, listing: RepoListing, client: RangeClient | None) -> None:
        self.repo = repo
        self.sha = listing.sha
        self.client = client
        self.cache = HubCache()

    def display(self, file: str) -> str:
        return f"{self.repo}/{file}"

    def source(self, file: str, error: type[ModelFileError]) -> Source:
        local = _hf_cached(self.repo, file, self.sha)
        if local is not None:
            return Source(local, error)
        cached = self.cache.header(self.repo, self.sha, file)
        fetch = self._fetch(file)
        if cached is not None:
            body, size = cached
            return RemoteSource(self.display(file), fetch, error, prefix=body, size=size)
        if fetch is None:
            raise RemoteError(
                self.display(file), "HF_HUB_OFFLINE is set and its header is not cached"
            )
        return RemoteSource(self.display(file), fetch, error)

    def _fetch(self, file: str) -> Callable[[int, int], tuple[bytes, int]] | None:
        client = self.client
        if client is None:
            return None
        from huggingface_hub import hf_hub_url  # noqa: PLC0415

        url = hf_hub_url(self.repo, file, revision=self.sha, endpoint=endpoint())
        display = self.display(file)
        return lambda start, end: client.get_range(url, start, end, display)

    def keep(self, file: str, src: Source) -> None:
        """Remember what was read of ``file`` for the next run."""
        if isinstance(src, RemoteSource) and src.fetched:
            self.cache.put_header(self.repo, self.sha, file, src.buf, src.size)

    def small(self, file: str, error: type[ModelFileError]) -> bytes:
        """The whole of a small file (a config, an index), at most 16 MiB."""
        src = self.source(file, error)
        try:
            if src.size > SMALL_FILE_CAP:
                raise error(
                    self.display(file),
                    f"it has {src.size} bytes; at most {SMALL_FILE_CAP} are expected",
                )
            src.need(0, src.size, "the whole file")
            data = bytes(src.buf[: src.size])
            self.keep(file, src)
            return data
        finally:
            src.close()

    def gguf(self, files: tuple[str, ...]) -> GGUFFile:
        from membudget.progress import advance  # noqa: PLC0415
        from membudget.readers.gguf import join_parts, parse_gguf  # noqa: PLC0415

        parsed = []
        for i, f in enumerate(files):
            src = self.source(f, GGUFError)
            try:
                parsed.append(parse_gguf(src, i))
                self.keep(f, src)
            finally:
                src.close()
            advance(i + 1, len(files), f)
        return join_parts(parsed, Path(self.display(files[0])))

    def safetensors(self, files: tuple[str, ...]) -> SafetensorsFile:
        from membudget.progress import advance  # noqa: PLC0415
        from membudget.readers.safetensors import join_shards, parse_safetensors  # noqa: PLC0415

        parsed = []
        for i, f in enumerate(files):
            src = self.source(f, SafetensorsError)
            try:
                parsed.append(parse_safetensors(src))
                self.keep(f, src)
            finally:
                src.close()
            advance(i + 1, len(files), f)
        return join_shards(parsed, Path(self.repo))


def _hf_cached(repo: str, file: str, sha: str) -> Path | None:
    """The file in the local Hugging Face cache at that commit, if it is there."""
    from huggingface_hub import try_to_load_from_cache  # noqa: PLC0415

    try:
        found = try_to_load_from_cache(repo, file, revision=sha)
    except (ValueError, OSError):
        return None
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _listing(repo: str, revision: str) -> RepoListing:
    """The revision's commit and files: from the Hub, or offline from the cache."""
    cache = HubCache()
    if offline():
        cached = cache.listing(repo, revision)
        if cached is None:
            raise RemoteError(
                repo, f"HF_HUB_OFFLINE is set and nothing is cached for revision {revision!r}"
            )
        return cached
    import httpx2  # noqa: PLC0415
    from huggingface_hub import HfApi  # noqa: PLC0415
    from huggingface_hub.errors import (  # noqa: PLC0415
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        info = HfApi(endpoint=endpoint()).model_info(repo, revision=revision, timeout=30)
    except GatedRepoError:
        raise RemoteError(
            repo,
            "it is a gated repo: accept its terms, then log in (hf auth login) or set HF_TOKEN",
        ) from None
    except RepositoryNotFoundError:
        raise RemoteError(
            repo,
            "no such repo on the Hub (or it is private: log in with hf auth login or set HF_TOKEN)",
        ) from None
    except RevisionNotFoundError:
        raise RemoteError(repo, f"the repo has no revision {revision!r}") from None
    except HfHubHTTPError as e:
        raise RemoteError(repo, f"the Hub answered: {str(e).splitlines()[0]}") from None
    except httpx2.HTTPError as e:
        raise RemoteError(repo, f"cannot reach the Hub at {endpoint()} ({e})") from None
    sha = info.sha or ""
    files = tuple(s.rfilename for s in info.siblings or ())
    listing = RepoListing(sha, files)
    if re.fullmatch(r"[0-9a-f]{40}", sha):
        cache.put_listing(repo, revision, listing)
    return listing


def _client() -> RangeClient | None:
    if offline():
        return None
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # noqa: PLC0415

    return RangeClient(build_hf_headers())


def hub_spec(text: str, repo: str, tag: str | None, revision: str = "main") -> ModelSpec:
    """The model ``OWNER/REPO[:TAG]`` names, read from its headers on the Hub."""
    from membudget.loader import checkpoint_spec  # noqa: PLC0415
    from membudget.readers.gguf_spec import spec_from_gguf  # noqa: PLC0415
    from membudget.readers.hf_config import parse_config  # noqa: PLC0415
    from membudget.readers.safetensors import index_shards  # noqa: PLC0415

    listing = _listing(repo, revision)
    client = _client()
    try:
        reader = _Reader(repo, listing, client)
        files = set(listing.files)
        shards: tuple[str, ...] = ()
        if "model.safetensors.index.json" in files:
            index = reader.small("model.safetensors.index.json", SafetensorsError)
            names = index_shards(index, Path(reader.display("model.safetensors.index.json")))
            shards = tuple(names)
        else:
            shards = tuple(sorted(f for f in files if "/" not in f and f.endswith(".safetensors")))
        if tag is None and "config.json" in files and shards:
            from membudget.errors import ConfigError  # noqa: PLC0415

            missing = [s for s in shards if s not in files]
            if missing:
                raise RemoteError(repo, f"the index names shards the repo lacks: {missing[:3]}")
            cfg = parse_config(
                reader.small("config.json", ConfigError), Path(reader.display("config.json"))
            )
            weights = reader.safetensors(shards)
            spec = checkpoint_spec(cfg, Path(reader.display("config.json")), weights, repo, text)
        else:
            if not gguf_sets(listing.files):
                raise RemoteError(
                    repo, "it holds no GGUF file and no safetensors checkpoint with a config.json"
                )
            spec = spec_from_gguf(reader.gguf(choose_gguf(repo, listing.files, tag)))
    finally:
        if client is not None:
            client.close()
    return replace(
        spec,
        source=text,
        notes=(*spec.notes, f"read from the Hub ({endpoint()}), revision {listing.sha[:12]}"),
    )


def url_spec(text: str) -> ModelSpec:
    """The model at a direct URL: a GGUF, or a safetensors file with its config.json beside
    it. Hugging Face credentials go only to the Hub's own host."""
    from membudget.loader import checkpoint_spec  # noqa: PLC0415
    from membudget.readers.gguf import parse_gguf  # noqa: PLC0415
    from membudget.readers.gguf_spec import spec_from_gguf  # noqa: PLC0415
    from membudget.readers.hf_config import parse_config  # noqa: PLC0415
    from membudget.readers.safetensors import parse_safetensors  # noqa: PLC0415

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RemoteError(text, "not an http(s) URL")
    name = PurePosixPath(parts.path).name
    if not name.lower().endswith((".gguf", ".safetensors")):
        raise RemoteError(text, "a URL must name a .gguf or .safetensors file")
    if offline():
        raise RemoteError(text, "HF_HUB_OFFLINE is set: no remote reads")
    headers: dict[str, str] = {}
    if parts.hostname == urlsplit(endpoint()).hostname:
        from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]  # noqa: PLC0415

        headers = build_hf_headers()
    client = RangeClient(headers)
    try:

        def fetch_of(url: str) -> Callable[[int, int], tuple[bytes, int]]:
            return lambda start, end: client.get_range(url, start, end, url)

        if name.lower().endswith(".gguf"):
            spec = spec_from_gguf(parse_gguf(RemoteSource(text, fetch_of(text), GGUFError)))
        else:
            from membudget.errors import ConfigError  # noqa: PLC0415

            config_url = text.rsplit("/", 1)[0] + "/config.json"
            config = RemoteSource(config_url, fetch_of(config_url), ConfigError)
            if config.size > SMALL_FILE_CAP:
                raise ConfigError(config_url, f"it has {config.size} bytes; too big for a config")
            config.need(0, config.size, "the whole file")
            cfg = parse_config(bytes(config.buf[: config.size]), Path(config_url))
            weights = parse_safetensors(RemoteSource(text, fetch_of(text), SafetensorsError))
            spec = checkpoint_spec(cfg, Path(config_url), weights, name, text)
    finally:
        client.close()
    return replace(spec, source=text)
