"""Reading raw and rollup rows of a series set out of Parquet files, through the cache.

:class:`FileReader` is the store's only way into its files. Raw rows come back as one
merged :class:`~monitoringserver.metrics.runs.Run` per file set; rollup rows as decoded
columns per file. Both go through a :class:`~monitoringserver.metrics.partcache.PartCache`
(files are immutable, so entries never go stale) and read every file still missing with
one DuckDB query per layout: metric-clustered raw files
(:mod:`monitoringserver.metrics.layout`) or files written before that layout.

Thread-safety: every method may be called from any thread with that thread's cursor.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics import blocks, layout
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.metrics.manifest import FileEntry
from monitoringserver.metrics.partcache import CacheStats, NotCached, PartCache, series_key
from monitoringserver.metrics.runs import Run, merge_runs

__all__ = ["FileReader"]

#: Up to this many series a clustered read also filters by metric hash (computing the
#: hashes of more costs more than the row groups they would prune).
_HASHED_IDS = 200_000
_MIN_MS, _MAX_MS = -(2**63), 2**63 - 1
IdArray = NDArray[np.uint64]


class FileReader:
    """Decoded rows of series sets in the files under ``root``."""

    def __init__(self, root: Path, index: SeriesIndex, cache_bytes: int) -> None:
        self._root = root
        self.cache = PartCache(cache_bytes)
        self._hashes = layout.MetricHasher(index)
        self._clustered: dict[int, bool] = {}  # file id → has the ``mh`` column

    def forget(self, file_ids: list[int]) -> None:
        """The files left the manifest: drop what is kept about them."""
        self.cache.drop_files(file_ids)
        for fid in file_ids:
            self._clustered.pop(fid, None)

    def stats(self) -> CacheStats:
        return self.cache.stats()

    def raw(
        self,
        cur: duckdb.DuckDBPyConnection | None,
        files: list[FileEntry],
        ids: IdArray,
        *,
        cached_rows: int | None = None,
    ) -> Run:
        """Merged rows of ``ids`` (sorted, unique) in raw ``files`` (sorted by ``seq``)
        over the files' whole time range: the cached merge of this file set, else the
        cached rows of each file, reading the files still missing. ``cached_rows``:
        answer from the cache alone with at most that many rows, else raise
        :class:`NotCached` (``cur`` is then not used)."""
        key = series_key(ids)
        if len(files) > 1:
            merged = self.cache.get(tuple(f.id for f in files), key)
            if isinstance(merged, Run):
                return _within(merged, cached_rows)
        out: list[Run | None] = []
        for f in files:
            got = self.cache.get((f.id,), key)
            out.append(got if isinstance(got, Run) else None)
        missing = [i for i, c in enumerate(out) if c is None]
        if cached_rows is not None and (
            missing or sum(len(c) for c in out if c is not None) > cached_rows
        ):
            raise NotCached("cannot read raw rows from memory: not cached or too many")
        if missing:
            assert cur is not None, "a read that may miss the cache needs a cursor"
            for i, cols in self._read_raw(cur, [files[i] for i in missing], missing, ids):
                out[i] = self.cache.put((files[i].id,), key, Run.from_columns(cols))
        runs = [c for c in out if c is not None]
        if len(runs) <= 1:
            return runs[0] if runs else Run.empty()
        return self.cache.put(tuple(f.id for f in files), key, merge_runs(runs))

    def _read_raw(
        self,
        cur: duckdb.DuckDBPyConnection,
        files: list[FileEntry],
        tags: list[int],
        ids: IdArray,
    ) -> list[tuple[int, blocks.Columns]]:
        """Decoded rows of ``ids`` in each raw file, paired with its tag: one query for
        the metric-clustered files, one for files of the older layout."""
        clustered = [self._is_clustered(cur, f) for f in files]
        new = [(t, f) for t, f, c in zip(tags, files, clustered, strict=True) if c]
        old = [(t, f) for t, f, c in zip(tags, files, clustered, strict=True) if not c]
        out: list[tuple[int, blocks.Columns]] = []
        if new:
            hashes = self._hashes(ids).tolist() if len(ids) <= _HASHED_IDS else []
            got = layout.read_clustered(cur, [self._root / f.path for _, f in new], ids, hashes)
            out += zip([t for t, _ in new], got, strict=True)
        if old:
            got = blocks.read_raw_many(cur, [self._root / f.path for _, f in old], ids)
            out += zip([t for t, _ in old], got, strict=True)
        return out

    def _is_clustered(self, cur: duckdb.DuckDBPyConnection, f: FileEntry) -> bool:
        known = self._clustered.get(f.id)
        if known is None:
            known = self._clustered[f.id] = layout.has_metric_column(cur, self._root / f.path)
        return known

    def rollups(
        self,
        cur: duckdb.DuckDBPyConnection | None,
        files: list[FileEntry],
        ids: IdArray,
        *,
        cached_rows: int | None = None,
    ) -> list[blocks.Columns]:
        """Decoded rollup rows of ``ids`` in each of ``files`` (same order), every
        bucket of the file; callers filter by time. ``cached_rows`` as for :meth:`raw`."""
        key = series_key(ids)
        got: list[blocks.Columns | None] = []
        for f in files:
            entry = self.cache.get((f.id,), key)
            got.append(entry if isinstance(entry, dict) else None)
        missing = [i for i, c in enumerate(got) if c is None]
        if cached_rows is not None and (
            missing or sum(len(c["ts"]) for c in got if c is not None) > cached_rows
        ):
            raise NotCached("cannot read rollup rows from memory: not cached or too many")
        if missing:
            assert cur is not None, "a read that may miss the cache needs a cursor"
            read = blocks.read_rollup_many(
                cur,
                [self._root / files[i].path for i in missing],
                ids,
                start_ms=_MIN_MS,
                end_ms=_MAX_MS,
            )
            for i, cols in zip(missing, read, strict=True):
                got[i] = self.cache.put((files[i].id,), key, cols)
        return [c for c in got if c is not None]


def _within(run: Run, cached_rows: int | None) -> Run:
    if cached_rows is not None and len(run) > cached_rows:
        raise NotCached("cannot read raw rows from memory: too many")
    return run
