"""Per-label-set work remembered across queries, keyed by the identity of the label tuples.

Sorting or grouping tens of thousands of label sets costs tens of milliseconds of
Python, and a dashboard asks the same query again every few seconds. The store hands
out the same label tuple objects for the same series every time, so a list of series
is recognised by the identities of its tuples (an array of ``id``s, hashed for the key
and compared on a hit). An entry holds its tuples, so no identity can be reused by
another object while the entry exists. Bounded by entries and by the total number of
series (an entry costs 16 bytes per series besides its value); thread-safe (queries
run in worker threads).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.labels import Labels

__all__ = ["LabelsMemo"]

T = TypeVar("T")

#: Below this many series computing afresh is cheaper than building the key.
MIN_SERIES = 256


class LabelsMemo(Generic[T]):
    """Caches ``compute(labels)`` per (label list identity, ``extra`` key)."""

    def __init__(self, max_entries: int = 32, max_series: int = 250_000) -> None:
        self._max_entries = max_entries
        self._max_series = max_series
        self._series = 0
        self._entries: OrderedDict[
            tuple[Hashable, int, int], tuple[list[Labels], NDArray[np.uint64], T]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, labels: list[Labels], extra: Hashable, compute: Callable[[], T]) -> T:
        """The cached value for this exact list of label objects, else ``compute()``."""
        if len(labels) < MIN_SERIES:
            return compute()
        ids = np.fromiter(map(id, labels), dtype=np.uint64, count=len(labels))
        key = (extra, len(labels), hash(ids.tobytes()))
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and np.array_equal(hit[1], ids):
                self._entries.move_to_end(key)
                return hit[2]
        value = compute()
        if len(labels) > self._max_series:
            return value
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._series -= len(old[0])
            self._entries[key] = (list(labels), ids, value)
            self._series += len(labels)
            while len(self._entries) > self._max_entries or self._series > self._max_series:
                _, (dropped, _, _) = self._entries.popitem(last=False)
                self._series -= len(dropped)
        return value
