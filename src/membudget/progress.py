"""Progress for slow work (many shards, a slow disk), without tying the core to a terminal.

Readers call :func:`advance` after each file they read. An interface that wants a progress bar
installs a callback with :func:`reporting`; without one, :func:`advance` does nothing. The
callback lives in a context variable, so threads of a server do not see each other's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["ProgressCallback", "advance", "reporting"]

ProgressCallback = Callable[[int, int, str], None]
"""``callback(done, total, label)``: ``done`` of ``total`` steps, the last one ``label``."""

_CALLBACK: ContextVar[ProgressCallback | None] = ContextVar("membudget_progress", default=None)


def advance(done: int, total: int, label: str) -> None:
    """Say that ``done`` of ``total`` steps are finished (``label`` names the last one)."""
    callback = _CALLBACK.get()
    if callback is not None:
        callback(done, total, label)


@contextmanager
def reporting(callback: ProgressCallback) -> Iterator[None]:
    """Send progress to ``callback`` inside the ``with`` block."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)
