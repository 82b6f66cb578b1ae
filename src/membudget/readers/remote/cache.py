"""Headers already read, so that a second run of the same source makes no data request.

Kept in the user cache directory (``platformdirs``' ``user_cache_path("membudget")``, which
honours ``XDG_CACHE_HOME``; ``MEMBUDGET_CACHE`` overrides it):

- ``hub/OWNER--REPO/refs/REVISION.json``: the commit a revision resolved to and the repo's file
  list, so that ``HF_HUB_OFFLINE=1`` still answers;
- ``hub/OWNER--REPO/headers/SHA/PATH``: the bytes of a file's header as far as the parser read
  them (and the file's size), keyed by the commit, so they never go stale.

The parsers read the cached bytes as they read a remote file: the same code, no request.
"""

from __future__ import annotations

import json
import os
import re
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["HubCache", "RepoListing", "cache_root"]

_MAGIC = b"MBH1"
_SIZE = struct.Struct("<Q")
_SHA = re.compile(r"^[0-9a-f]{40}$")


def cache_root() -> Path:
    """``MEMBUDGET_CACHE``, else the platform's user cache directory for membudget."""
    env = os.environ.get("MEMBUDGET_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs  # noqa: PLC0415 - only where a remote source is read

    return platformdirs.user_cache_path("membudget")


@dataclass(frozen=True, slots=True)
class RepoListing:
    """A revision of a Hub repo: its commit and the files it holds."""

    sha: str
    files: tuple[str, ...]


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class HubCache:
    """Repo listings and header bytes of Hub files, under :func:`cache_root`."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cache_root()

    def _repo(self, repo: str) -> Path:
        return self.root / "hub" / repo.replace("/", "--")

    def listing(self, repo: str, revision: str) -> RepoListing | None:
        path = self._repo(repo) / "refs" / f"{quote(revision, safe='')}.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        sha, files = raw.get("sha"), raw.get("files")
        if not isinstance(sha, str) or not _SHA.match(sha) or not isinstance(files, list):
            return None
        return RepoListing(sha, tuple(str(f) for f in files))

    def put_listing(self, repo: str, revision: str, listing: RepoListing) -> None:
        path = self._repo(repo) / "refs" / f"{quote(revision, safe='')}.json"
        data = {"sha": listing.sha, "files": list(listing.files)}
        _write(path, json.dumps(data).encode())

    def _header_path(self, repo: str, sha: str, file: str) -> Path:
        return self._repo(repo) / "headers" / sha / quote(file, safe="")

    def header(self, repo: str, sha: str, file: str) -> tuple[bytes, int] | None:
        """The cached bytes of ``file``'s header and the file's size, if any."""
        try:
            data = self._header_path(repo, sha, file).read_bytes()
        except OSError:
            return None
        if len(data) < 12 or data[:4] != _MAGIC:
            return None
        (size,) = _SIZE.unpack_from(data, 4)
        body = data[12:]
        return (body, size) if len(body) <= size else None

    def put_header(self, repo: str, sha: str, file: str, body: bytes, size: int) -> None:
        _write(self._header_path(repo, sha, file), _MAGIC + _SIZE.pack(size) + body)
