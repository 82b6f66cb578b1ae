"""A remote file as the parsers' :class:`~membudget.readers._binary.Source`.

The buffer holds the file's bytes from offset 0 as far as the parser has asked. Each time it
asks past them, the next range is fetched: the gap up to what it asked, and at least a chunk
that starts at 64 KiB and doubles up to :data:`CHUNK_MAX`. A header is therefore read in
growing ranges, never twice, and never more than one chunk past what the parser needed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from membudget.errors import ModelFileError
from membudget.progress import advance
from membudget.readers._binary import Source

__all__ = ["CHUNK_FIRST", "CHUNK_MAX", "HEADER_MAX", "RemoteSource"]

CHUNK_FIRST = 64 * 1024
CHUNK_MAX = 1024 * 1024
HEADER_MAX = 256 * 1024 * 1024
"""The most of a file a header may take (a 262,144-token vocabulary takes about 6 MiB)."""

Fetch = Callable[[int, int], tuple[bytes, int]]
"""``fetch(start, end)``: bytes ``[start, end)`` and the file's size."""


class RemoteSource(Source):
    """Bytes of a remote file, fetched in growing ranges as the parser asks for them."""

    window_max = 1 << 19  # scans ask for at most 512 KiB past what they need

    def __init__(
        self,
        display: str,
        fetch: Fetch | None,
        error: type[ModelFileError],
        *,
        prefix: bytes = b"",
        size: int | None = None,
    ) -> None:
        """``prefix`` and ``size``: bytes already known (a cached header); ``fetch`` None:
        offline, only those."""
        self.path = Path(display)
        self.error = error
        self._fetch = fetch
        self._chunk = CHUNK_FIRST
        self.buf: bytes = prefix
        self.fetched = False
        """Whether any byte came from the network (then the cache is worth updating)."""
        if size is None:
            if fetch is None:
                raise error(display, "nothing is cached for it and the Hub is offline")
            self.buf, size = fetch(0, CHUNK_FIRST)
            self.fetched = True
        self.size = size
        if self.size == 0:
            raise error(display, "the file is empty")

    def ensure(self, end: int) -> None:
        end = min(end, self.size)
        have = len(self.buf)
        if end <= have:
            return
        if end > HEADER_MAX:
            raise self.error(
                self.path,
                f"its header would take more than {HEADER_MAX // (1 << 20)} MiB: not a model "
                "header, or a corrupt one",
            )
        if self._fetch is None:
            raise self.error(
                self.path, "the cached header is incomplete and the Hub is offline (HF_HUB_OFFLINE)"
            )
        self._chunk = min(self._chunk * 2, CHUNK_MAX)
        want = min(self.size, max(end, have + self._chunk))
        data, _ = self._fetch(have, want)
        self.buf = self.buf + data
        self.fetched = True
        advance(len(self.buf) >> 10, self.size >> 10, f"{self.path.name}: KiB of its header read")

    def close(self) -> None:
        """Nothing to release: the bytes are Python objects."""
