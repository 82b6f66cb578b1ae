"""Which files the web server may read: only those inside directories named at start.

A path is resolved (``..`` collapsed, every symlink followed) before it is checked, so neither
traversal nor a symlink that points out of an allowed directory gets through. The resolved path
is what is then opened.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from membudget.errors import MembudgetError

__all__ = ["AllowedDirs", "PathRefusedError"]

_MAX_PATH = 4096
_MODEL_SUFFIXES = (".gguf", ".safetensors")
_LIST_LIMIT = 500
_LIST_DEPTH = 4


class PathRefusedError(MembudgetError):
    """A path the server will not read: outside the allowed directories, or malformed."""


class AllowedDirs:
    """The directories whose files the server may read."""

    def __init__(self, dirs: Iterable[str | os.PathLike[str]]) -> None:
        roots = []
        for d in dirs:
            real = Path(os.path.realpath(os.fspath(d)))
            if not real.is_dir():
                raise MembudgetError(f"Cannot serve {os.fspath(d)!r}: it is not a directory.")
            roots.append(real)
        self.roots: tuple[Path, ...] = tuple(dict.fromkeys(roots))

    def resolve(self, text: str) -> Path:
        """The real path of ``text`` if it lies inside an allowed directory; else refuse."""
        if not self.roots:
            raise PathRefusedError(
                "This server reads no local files; start it with --allow-dir DIR to allow some."
            )
        if not text or len(text) > _MAX_PATH or "\x00" in text:
            raise PathRefusedError(f"Refused path {text[:200]!r}: empty, too long or malformed.")
        candidate = Path(text).expanduser() if text.startswith("~") else Path(text)
        if not candidate.is_absolute():
            candidate = self.roots[0] / candidate
        real = Path(os.path.realpath(candidate))
        if not any(real == root or real.is_relative_to(root) for root in self.roots):
            raise PathRefusedError(
                f"Refused path {text[:200]!r}: it is outside the directories this server may read."
            )
        return real

    def list_models(self) -> list[str]:
        """Model files (GGUF, safetensors, config.json) under the allowed directories, bounded
        in count and depth; symlinks that leave the directories are left out."""
        found: list[str] = []
        for root in self.roots:
            for dirpath, dirnames, filenames in os.walk(root):
                depth = len(Path(dirpath).relative_to(root).parts)
                if depth >= _LIST_DEPTH:
                    dirnames.clear()
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if not (name.endswith(_MODEL_SUFFIXES) or name == "config.json"):
                        continue
                    path = Path(dirpath) / name
                    try:
                        self.resolve(str(path))
                    except PathRefusedError:
                        continue
                    found.append(str(path))
                    if len(found) >= _LIST_LIMIT:
                        return found
        return found
