from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.metrics.partcache import ENTRY_OVERHEAD, PartCache, series_key
from monitoringserver.metrics.runs import Run


def _run(n: int) -> Run:
    return Run(
        np.array([1], np.uint64),
        np.array([n], np.int64),
        np.arange(n, dtype=np.int64),
        np.zeros(n),
    )


def _size(n: int) -> int:
    return ENTRY_OVERHEAD + 16 + 16 * n


def test_hits_misses_and_lru_bound() -> None:
    cache = PartCache(max_bytes=3 * _size(100))
    key = series_key(np.array([1, 2, 3], np.uint64))
    assert cache.get((1,), key) is None
    for fid in (1, 2, 3):
        cache.put((fid,), key, _run(100))
    assert cache.get((1,), key) is not None  # 1 is now the most recent
    cache.put((4,), key, _run(100))  # evicts 2, the least recently used
    assert cache.get((2,), key) is None
    assert all(cache.get((f,), key) is not None for f in (1, 3, 4))
    s = cache.stats()
    assert (s.hits, s.misses, s.evictions, s.entries) == (4, 2, 1, 3)
    assert s.bytes == 3 * _size(100)
    assert s.max_bytes == 3 * _size(100)


def test_entries_are_read_only_and_keyed_by_series_set() -> None:
    cache = PartCache(max_bytes=10 * _size(10))
    a = series_key(np.array([1, 2], np.uint64))
    b = series_key(np.array([1, 3], np.uint64))
    assert a != b
    assert len(a) == 16
    got = cache.put((1,), a, _run(10))
    with pytest.raises(ValueError, match="read-only"):
        got.values[0] = 1.0
    assert cache.get((1,), b) is None
    cols = {"ts": np.arange(3, dtype=np.int64)}
    cache.put((2,), a, cols)
    assert not cols["ts"].flags.writeable
    assert cache.get((2,), a) is cols


def test_oversized_entry_and_disabled_cache_keep_nothing() -> None:
    cache = PartCache(max_bytes=2 * _size(100))
    key = series_key(np.array([1], np.uint64))
    cache.put((1,), key, _run(200))  # more than half the bound
    assert cache.get((1,), key) is None
    off = PartCache(0)
    off.put((1,), key, _run(1))
    assert off.get((1,), key) is None
    assert off.stats().bytes == 0
    with pytest.raises(ValueError, match="cannot create part cache"):
        PartCache(-1)


def test_drop_files_forgets_every_entry_involving_them() -> None:
    cache = PartCache(max_bytes=10 * _size(10))
    key = series_key(np.array([1], np.uint64))
    cache.put((1,), key, _run(10))
    cache.put((2,), key, _run(10))
    cache.put((1, 2), key, _run(20))
    cache.drop_files([])
    cache.drop_files([1])
    assert cache.get((1,), key) is None
    assert cache.get((1, 2), key) is None
    assert cache.get((2,), key) is not None
    assert cache.stats().bytes == _size(10)
