"""A bounded in-memory cache of decoded rows read from immutable Parquet files.

Parts and blocks never change once published and their ids are never reused while the
process runs, so an entry keyed by ``(file ids, series set)`` can never be stale: it is
dropped only to stay within the byte bound (least recently used first) or when one of
its files leaves the manifest (:meth:`PartCache.drop_files`). An entry holds exactly the
rows those files have for that series set, decoded (for several files: merged), over the
files' whole time range; callers filter by time themselves. Cached arrays are read-only,
so no caller can change an entry.

Thread-safety: every method may be called from any thread; two threads missing the same
key at once both read the file and the second insert replaces the first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics.blocks import Columns
from monitoringserver.metrics.runs import Run

__all__ = ["CacheStats", "Entry", "NotCached", "PartCache", "series_key"]

#: A cached value: raw rows as a :class:`Run`, rollup rows as columns.
Entry = Run | Columns

E = TypeVar("E", Run, Columns)

#: Bytes charged per entry on top of its arrays (key, dict, array headers).
ENTRY_OVERHEAD = 512


class NotCached(Exception):  # noqa: N818 - a signal to the caller, not an error
    """Raised by reads asked to answer from memory only (``cached_only``) when the
    answer is not at hand: a cache miss, a head merge pending, more rows than allowed.
    Callers catch it and do the full read elsewhere; it never reaches a client."""


def series_key(ids: NDArray[np.uint64]) -> bytes:
    """A 16-byte digest naming a sorted series-id set (collisions are negligible:
    BLAKE2b-128 over the ids' bytes)."""
    ids = np.ascontiguousarray(ids, dtype=np.uint64)
    return hashlib.blake2b(ids.tobytes(), digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters since start: lookups that found an entry, those that did not,
    entries evicted for space; and the current size."""

    hits: int
    misses: int
    evictions: int
    entries: int
    bytes: int
    max_bytes: int


def _size(entry: Entry) -> int:
    if isinstance(entry, Run):
        return ENTRY_OVERHEAD + entry.nbytes
    return ENTRY_OVERHEAD + sum(int(v.nbytes) for v in entry.values())


def _freeze(entry: Entry) -> None:
    if isinstance(entry, Run):
        entry.freeze()
    else:
        for v in entry.values():
            v.flags.writeable = False


class PartCache:
    """LRU map ``(file ids, series key) → Columns`` bounded by ``max_bytes`` (0 disables
    it: every lookup misses and nothing is kept). An entry larger than half the bound is
    not kept, so one huge read cannot flush everything else."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("cannot create part cache: max_bytes must be >= 0")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # Guarded by _lock:
        self._entries: OrderedDict[tuple[tuple[int, ...], bytes], tuple[Entry, int]] = OrderedDict()
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    def get(self, files: tuple[int, ...], key: bytes) -> Entry | None:
        with self._lock:
            found = self._entries.get((files, key))
            if found is None:
                self._misses += 1
                return None
            self._entries.move_to_end((files, key))
            self._hits += 1
            return found[0]

    def put(self, files: tuple[int, ...], key: bytes, entry: E) -> E:
        """Keep ``entry`` (made read-only) under the key if it fits; return it."""
        _freeze(entry)
        size = _size(entry)
        if size > self.max_bytes // 2:
            return entry
        with self._lock:
            old = self._entries.pop((files, key), None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[(files, key)] = (entry, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped
                self._evictions += 1
        return entry

    def drop_files(self, file_ids: Iterable[int]) -> None:
        """Forget every entry involving these files (they left the manifest)."""
        doomed = set(file_ids)
        if not doomed:
            return
        with self._lock:
            for k in [k for k in self._entries if not doomed.isdisjoint(k[0])]:
                self._bytes -= self._entries.pop(k)[1]

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self._hits,
                self._misses,
                self._evictions,
                len(self._entries),
                self._bytes,
                self.max_bytes,
            )
