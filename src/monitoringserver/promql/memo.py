"""Per-label-set work remembered across queries, keyed by the identity of the label tuples.

Sorting or grouping tens of thousands of label sets costs tens of milliseconds of
Python, and a dashboard asks the same query again every few seconds. The store hands
out the same label tuple objects for the same series every time, so a list of series
is recognised by the identities of its tuples. An entry holds its tuples, so no
identity can be reused by another object while the entry exists. Bounded by entries
and by the total number of series (an entry costs a pointer per series besides its
value); thread-safe (queries run in worker threads).
"""

from __future__ import annotations

import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from monitoringserver.model.labels import Labels

__all__ = ["LabelsMemo"]

T = TypeVar("T")

#: Below this many series computing afresh is cheaper than building the key.
MIN_SERIES = 256


class LabelsMemo(Generic[T]):
    """Caches ``compute(labels)`` per (label list identity, ``extra`` key)."""

    def __init__(self, max_entries: int = 64, max_series: int = 1_000_000) -> None:
        self._max_entries = max_entries
        self._max_series = max_series
        self._series = 0
        self._entries: OrderedDict[tuple[Hashable, int, int], tuple[list[Labels], T]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, labels: list[Labels], extra: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for this exact list of label objects, else ``compute()``."""
        if len(labels) < MIN_SERIES:
            return compute()
        # The key holds a hash of the identities; a hit is confirmed object by object, so
        # an entry costs one pointer per series.
        key = (extra, len(labels), hash(tuple(map(id, labels))))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and all(map(operator.is_, hit[0], labels)):
                self._entries.move_to_end(key)
                return hit[1]
        value = compute()
        if len(labels) > self._max_series:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._series -= len(old[0])
            self._entries[key] = (list(labels), value)
            self._series += len(labels)
            while len(self._entries) > self._max_entries or self._series > self._max_series:
                _, (dropped, _) = self._entries.popitem(last=False)
                self._series -= len(dropped)
        return value
