"""Ranged GETs: the only way membudget reads a remote file.

Every request carries a ``Range`` header, follows at most :data:`MAX_REDIRECTS` redirects (the
Hub answers ``resolve`` with a redirect to its storage host), and reads at most the bytes it
asked for within :data:`DEADLINE_S`: a server that ignores the range, claims an absurd size or
sends forever is refused, never downloaded.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from membudget.errors import ModelFileError

if TYPE_CHECKING:
    import httpx2

__all__ = ["CONNECT_TIMEOUT_S", "DEADLINE_S", "MAX_REDIRECTS", "RangeClient", "RemoteError"]

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 30.0
DEADLINE_S = 120.0
"""The longest one ranged request may take, body included."""
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


class RemoteError(ModelFileError):
    """Raised when a remote model file or repository cannot be read; ``path`` names it as the
    user gave it (a repo id, a URL)."""

    kind = "remote model"


class RangeClient:
    """One HTTP client for a run: ranged GETs, bytes served counted in :attr:`served`."""

    def __init__(self, headers: Mapping[str, str] | None = None) -> None:
        import httpx2  # noqa: PLC0415 - the HTTP stack only for remote sources

        self._httpx = httpx2
        self.client: httpx2.Client = httpx2.Client(
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx2.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
            headers=dict(headers or {}),
        )
        self.served = 0
        self.requests = 0

    def close(self) -> None:
        self.client.close()

    def get_range(
        self,
        url: str,
        start: int,
        end: int,
        display: str,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[bytes, int]:
        """Bytes ``[start, end)`` of ``url`` (fewer at the end of the file) and the file's
        size, from a ``206 Partial Content`` answer."""
        httpx2 = self._httpx
        self.requests += 1
        wanted = end - start
        began = time.monotonic()
        try:
            with self.client.stream(
                "GET", url, headers={**(headers or {}), "Range": f"bytes={start}-{end - 1}"}
            ) as r:
                if r.status_code == 200:
                    raise RemoteError(
                        display,
                        "the server does not support byte ranges (it answered with the whole "
                        "file); membudget reads headers only and does not download the file",
                    )
                if r.status_code in (401, 403):
                    raise RemoteError(
                        display,
                        f"access denied (HTTP {r.status_code}); for a gated or private "
                        "repo log in (hf auth login) or set HF_TOKEN",
                    )
                if r.status_code == 404:
                    raise RemoteError(display, "not found (HTTP 404)")
                if r.status_code == 416:
                    raise RemoteError(
                        display, f"the file is shorter than its header says (no byte {start})"
                    )
                if r.status_code != 206:
                    raise RemoteError(display, f"the server answered HTTP {r.status_code}")
                found = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
                if found is None or int(found[1]) != start:
                    raise RemoteError(
                        display,
                        "the server answered a byte range without a matching Content-Range "
                        f"({r.headers.get('content-range')!r})",
                    )
                total = int(found[3])
                expected = min(wanted, int(found[2]) - start + 1)
                chunks: list[bytes] = []
                got = 0
                for chunk in r.iter_bytes():
                    got += len(chunk)
                    self.served += len(chunk)
                    if got > expected:
                        raise RemoteError(display, "the server sent more than the range asked")
                    chunks.append(chunk)
                    if time.monotonic() - began > DEADLINE_S:
                        raise RemoteError(
                            display, f"reading {wanted} bytes took over {DEADLINE_S:g} s"
                        )
        except httpx2.TooManyRedirects:
            raise RemoteError(display, f"more than {MAX_REDIRECTS} redirects") from None
        except httpx2.TimeoutException:
            raise RemoteError(display, "the server did not answer in time") from None
        except httpx2.HTTPError as e:
            raise RemoteError(display, f"cannot reach the server ({e})") from None
        if got != expected:
            raise RemoteError(display, f"the server sent {got} of the {expected} bytes asked")
        return b"".join(chunks), total
