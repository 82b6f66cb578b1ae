"""Values computed once from one :class:`~membudget.model.ModelSpec` object: the tables and
keys the estimate, the placer and the graph builders read again and again."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from membudget.model import ModelSpec

__all__ = ["MEMO", "SpecMemo"]

_T = TypeVar("_T")


class SpecMemo:
    """Values computed from one :class:`ModelSpec` object, for the last ``size`` objects.

    Keyed by the object's id while a reference to it is kept here, so an id is never reused
    for another model while its entry lives."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._entries: OrderedDict[int, tuple[ModelSpec, dict[object, object]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: ModelSpec, key: object, make: Callable[[], _T]) -> _T:
        with self._lock:
            entry = self._entries.get(id(spec))
            if entry is not None and entry[0] is spec:
                self._entries.move_to_end(id(spec))
                if key in entry[1]:
                    return entry[1][key]  # type: ignore[return-value]
        value = make()
        with self._lock:
            entry = self._entries.get(id(spec))
            if entry is None or entry[0] is not spec:
                entry = (spec, {})
                self._entries[id(spec)] = entry
                while len(self._entries) > self._size:
                    self._entries.popitem(last=False)
            entry[1][key] = value
        return value


MEMO = SpecMemo()
"""The one memo every module of the engine shares."""
