"""The cyclic garbage collector's pace while membudget builds graphs.

Planning builds and drops ggml graphs of thousands of tensors, and the placer's tables, all
freed by reference counting: they hold no reference cycles. At Python's default pace the
cyclic collector runs each time 700 more objects are held than freed, and walks those graphs
and every model loaded again and again, collecting nothing: a quarter of a plan's time, and
of a sweep's. :func:`paced` runs it only once a million objects are held, while the work
inside runs.
"""

from __future__ import annotations

import functools
import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

__all__ = ["THRESHOLD", "pace_here", "paced", "paced_call"]

THRESHOLD = 1_000_000
"""Objects held, net, between two runs of the cyclic collector while planning."""

_LOCK = threading.Lock()
_ACTIVE = [0]
_SAVED: list[tuple[int, int, int]] = []

_P = ParamSpec("_P")
_R = TypeVar("_R")


@contextmanager
def paced() -> Iterator[None]:
    """The collector at :data:`THRESHOLD` inside. Its pace is the process's: work in other
    threads shares it, and the last ``with`` to end restores the pace it found."""
    with _LOCK:
        if _ACTIVE[0] == 0:
            _SAVED[:] = [gc.get_threshold()]
            gc.set_threshold(THRESHOLD, *_SAVED[0][1:])
        _ACTIVE[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE[0] -= 1
            if _ACTIVE[0] == 0:
                gc.set_threshold(*_SAVED[0])


def paced_call(f: Callable[_P, _R]) -> Callable[_P, _R]:
    """``f`` run :func:`paced`."""

    @functools.wraps(f)
    def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with paced():
            return f(*args, **kwargs)

    return run


def pace_here() -> None:
    """The collector at :data:`THRESHOLD` for good: for a worker process that only plans."""
    gc.set_threshold(THRESHOLD, *gc.get_threshold()[1:])
