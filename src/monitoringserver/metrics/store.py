"""``EmbeddedMetricStore``: the :class:`MetricQuerier` over head, parts, blocks and rollups.

A query resolves matchers with the series index, then reads the in-memory head
(:class:`~monitoringserver.metrics.head.MemHead`) and every
manifest file whose series and time ranges overlap, merging them so that of equal
``(series, ts)`` keys the newest write wins (head over files, higher ``seq`` over lower).
A manifest generation check around the read retries when a flush or merge committed in
between (so rows moving from the head into a part are never missed).

Thread-safety: every method may run on any thread concurrently (own DuckDB cursor per
thread); nothing here writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.metrics import blocks
from monitoringserver.metrics.api import (
    PackedSeries,
    Resolution,
    ResolutionStats,
    RollupSeries,
    SeriesData,
    StoreStats,
)
from monitoringserver.metrics.filereader import FileReader
from monitoringserver.metrics.head import MemHead
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.metrics.manifest import FileEntry, Manifest, Snapshot
from monitoringserver.metrics.partcache import CacheStats, NotCached
from monitoringserver.metrics.runs import Run, merge_runs
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import StorageOptions

__all__ = ["EmbeddedMetricStore"]

_RAW_NAMES = ("series_id", "ts", "value")
_ROLLUP_NAMES = ("series_id", "ts", *blocks.ROLLUP_FIELDS)
_RETRIES = 5
_SETTLE_S = 10.0  # longest wait for a publication to finish before reading again
IdArray = NDArray[np.uint64]


class EmbeddedMetricStore:
    """Reads the embedded store. ``wal_bytes`` and ``compaction`` feed :meth:`stats`."""

    def __init__(
        self,
        db: Database,
        index: SeriesIndex,
        manifest: Manifest,
        head: MemHead,
        options: StorageOptions,
        *,
        wal_bytes: Callable[[], int] = lambda: 0,
        compaction: Callable[[], tuple[int | None, float | None]] = lambda: (None, None),
    ) -> None:
        self._db = db
        self._index = index
        self._manifest = manifest
        self._opt = options
        self._wal_bytes = wal_bytes
        self._compaction = compaction
        self._files = FileReader(manifest.root, index, options.read_cache_bytes)
        manifest.on_remove(self._files.forget)
        self._mem = head

    # -- raw ---------------------------------------------------------------------------

    def _head(
        self, ids: IdArray, start_ms: int, end_ms: int, cached_rows: int | None = None
    ) -> Run:
        """Head rows of ``ids`` in the range, sorted by ``(series_id, ts)``, the last
        write of each key kept (``cached_rows``: see :meth:`select_packed_cached`)."""
        if cached_rows is None:
            return self._mem.rows(ids, start_ms, end_ms)
        if len(self._mem) <= cached_rows:  # merging a head this small costs little
            run = self._mem.rows(ids, start_ms, end_ms)
        else:  # never merge a large head here: its merged state or nothing
            run = self._mem.rows(ids, start_ms, end_ms, merged_only=True)
        if len(run) > cached_rows:
            raise NotCached("cannot read head rows from memory: too many")
        return run

    def _read_raw(
        self, ids: IdArray, start_ms: int, end_ms: int, cached_rows: int | None = None
    ) -> tuple[Run, Snapshot]:
        """Merged raw rows of ``ids`` in the range, and the snapshot they came from
        (``cached_rows``: see :meth:`select_packed_cached`)."""
        cur = self._db.cursor() if cached_rows is None else None
        for attempt in range(_RETRIES):
            with self._manifest.snapshot() as snap:
                files = _overlapping(snap.of("raw"), ids, start_ms, end_ms)
                stored = self._files.raw(cur, files, ids, cached_rows=cached_rows)
                if not all(start_ms <= f.min_ts and f.max_ts <= end_ms for f in files):
                    stored = stored.in_time(start_ms, end_ms)
                head = self._head(ids, start_ms, end_ms, cached_rows)
                stable = snap.generation % 2 == 0
                if (stable and self._manifest.generation == snap.generation) or (
                    attempt == _RETRIES - 1
                ):
                    return merge_runs([stored, head]), snap
            if cached_rows is not None:  # never wait for a publication
                raise NotCached("cannot read raw rows from memory: a publication is running")
            # A flush or merge published meanwhile: read again once it has finished.
            self._manifest.wait_settled(_SETTLE_S)
        raise AssertionError("unreachable")  # pragma: no cover

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        return self.select_packed(matchers, start_ms, end_ms).series()

    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        """Raw samples of every matching series in ``[start_ms, end_ms]``, packed flat
        (see :class:`PackedSeries`); rollup ``last`` values stand in where raw aged out."""
        return self._packed(self._index.select(matchers), start_ms, end_ms, None)

    def select_packed_cached(
        self,
        matchers: Sequence[Matcher],
        start_ms: int,
        end_ms: int,
        *,
        max_series: int,
        max_rows: int,
    ) -> PackedSeries | None:
        """:meth:`select_packed` if it can be answered from memory at a small bounded
        cost, else ``None``: an equality matcher names at most ``max_series`` series,
        their rows are in the read cache, at most ``max_rows`` of them per file set and
        in the head, the head is merged already (or holds at most ``max_rows`` rows, so
        merging it costs little) and no flush or merge is being published. Never
        reads a file and never waits, so it may run on an event loop."""
        ids = self._index.select_few(matchers, max_series)
        if ids is None:
            return None
        try:
            return self._packed(ids, start_ms, end_ms, max_rows)
        except NotCached:
            return None

    def _packed(
        self, ids: IdArray, start_ms: int, end_ms: int, cached_rows: int | None
    ) -> PackedSeries:
        if len(ids) == 0 or start_ms > end_ms:
            return PackedSeries.empty()
        run, snap = self._read_raw(ids, start_ms, end_ms, cached_rows)
        raw_oldest = min((f.min_ts for f in snap.of("raw")), default=None)
        if raw_oldest is None or start_ms < raw_oldest:
            # Raw data aged out (or never was): the finest rollup's ``last`` stands in.
            cutoff = end_ms if raw_oldest is None else min(end_ms, raw_oldest - 1)
            fallback = self._rollup_last(ids, start_ms, cutoff, run, cached_rows)
            if fallback is not None:
                run = Run.from_columns(blocks.dedup_last([fallback, run.to_columns()]))
        return self._pack_raw(run)

    def _rollup_last(
        self, ids: IdArray, start_ms: int, end_ms: int, raw: Run, cached_rows: int | None
    ) -> blocks.Columns | None:
        pieces: list[blocks.Columns] = []
        upper = end_ms
        with self._manifest.snapshot() as snap:  # one view of both resolutions
            for res in (Resolution.M5, Resolution.H1):
                files = snap.of(res.value)
                if not files:
                    continue
                rows = self._rollup_files(files, ids, start_ms, upper, cached_rows)
                if len(rows["ts"]):
                    pieces.insert(
                        0,
                        {"series_id": rows["series_id"], "ts": rows["ts"], "value": rows["last"]},
                    )
                oldest = min(f.min_ts for f in files)
                if oldest <= start_ms:
                    break
                upper = oldest - 1
        if not pieces:
            return None
        merged = blocks.dedup_last(pieces)
        # Never let a rollup stand in where raw samples exist.
        top = int(merged["series_id"].max()) if len(merged["ts"]) else 0
        if len(raw):
            top = max(top, int(raw.sids[-1]))
        first_raw = np.full(top + 1, np.iinfo(np.int64).max)
        first_raw[raw.sids.astype(np.intp)] = raw.ts[raw.offsets()[:-1]]
        keep = merged["ts"] < first_raw[merged["series_id"].astype(np.intp)]
        return blocks.take(merged, keep)

    def _pack_raw(self, run: Run) -> PackedSeries:
        if len(run) == 0:
            return PackedSeries.empty()
        return PackedSeries(
            self._index.labels_many(run.sids.tolist()), run.offsets(), run.ts, run.values
        )

    # -- rollups -----------------------------------------------------------------------

    def _rollup_files(
        self,
        files: list[FileEntry],
        ids: IdArray,
        start_ms: int,
        end_ms: int,
        cached_rows: int | None = None,
    ) -> blocks.Columns:
        chosen = _overlapping(files, ids, start_ms, end_ms)  # sorted by seq
        if not chosen:
            return _empty_rollup()
        cur = self._db.cursor() if cached_rows is None else None
        got = self._files.rollups(cur, chosen, ids, cached_rows=cached_rows)
        parts = [_in_time(c, start_ms, end_ms) for c in got]
        if not parts:
            return _empty_rollup()
        return blocks.dedup_last(parts)

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        if resolution is Resolution.RAW:
            raise BadDataError("cannot select rollups: resolution raw has no rollups")
        ids = self._index.select(matchers)
        if len(ids) == 0 or start_ms > end_ms:
            return []
        step = resolution.step_ms
        first = start_ms - start_ms % step
        last_end = end_ms - end_ms % step + step - 1
        pms = self._opt.partition_ms("raw")
        with self._manifest.snapshot() as snap:
            raw_files = snap.of("raw")
            unrolled = {f.partition_start for f in raw_files if not f.rolled_up}
            unrolled |= self._mem.partitions(pms)
            stored = self._rollup_files(snap.of(resolution.value), ids, first, last_end)
        keep = ~np.isin(stored["ts"] - stored["ts"] % pms, list(unrolled))
        pieces = [blocks.take(stored, keep)]
        for p in sorted(unrolled):
            lo, hi = max(p, first), min(p + pms - 1, last_end)
            if lo > hi:
                continue
            raw, _ = self._read_raw(ids, lo, hi)
            pieces.append(blocks.compute_rollups(raw.to_columns(), step))
        cols = blocks.dedup_last(pieces)
        sid = np.asarray(cols["series_id"], dtype=np.uint64)
        bounds = _bounds(sid)
        labels = self._index.labels_many(int(sid[a]) for a, _ in bounds)
        return [
            RollupSeries(
                lbl,
                cols["ts"][a:b].astype(np.int64),
                cols["min"][a:b].astype(np.float64),
                cols["max"][a:b].astype(np.float64),
                cols["sum"][a:b].astype(np.float64),
                cols["count"][a:b].astype(np.int64),
                cols["last"][a:b].astype(np.float64),
            )
            for lbl, (a, b) in zip(labels, bounds, strict=True)
        ]

    # -- metadata ----------------------------------------------------------------------

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        ids = self._index.select(matchers, start_ms, end_ms)
        return self._index.labels_many(ids.tolist())

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        if not matchers:
            return self._index.label_names()
        return self._index.label_names(self._index.select(matchers, start_ms, end_ms))

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        if not matchers:
            return self._index.label_values(name)
        return self._index.label_values(name, self._index.select(matchers, start_ms, end_ms))

    def head_samples(self) -> int:
        return len(self._mem)

    def stats(self) -> StoreStats:
        files = self._manifest.files()
        resolutions: dict[str, ResolutionStats] = {}
        for res in ("raw", "5m", "1h"):
            mine = [f for f in files if f.resolution == res]
            resolutions[res] = ResolutionStats(
                samples=sum(f.rows for f in mine),
                bytes=sum(f.bytes for f in mine),
                files=len(mine),
                oldest_ms=min((f.min_ts for f in mine), default=None),
                newest_ms=max((f.max_ts for f in mine), default=None),
            )
        when, seconds = self._compaction()
        cache = self._files.stats()
        return StoreStats(
            series=len(self._index),
            head_samples=self.head_samples(),
            resolutions=resolutions,
            wal_bytes=self._wal_bytes(),
            last_compaction_ms=when,
            last_compaction_duration_s=seconds,
            read_cache_hits=cache.hits,
            read_cache_misses=cache.misses,
            read_cache_bytes=cache.bytes,
        )

    def cache_stats(self) -> CacheStats:
        """Hits, misses and size of the decoded-part cache (``read_cache_bytes``)."""
        return self._files.stats()

    @property
    def root(self) -> Path:
        return self._manifest.root


def _overlapping(
    files: list[FileEntry], ids: IdArray, start_ms: int, end_ms: int
) -> list[FileEntry]:
    lo, hi = int(ids[0]), int(ids[-1])
    out = []
    for f in sorted(files, key=lambda f: f.seq):
        if f.max_ts < start_ms or f.min_ts > end_ms or f.max_sid < lo or f.min_sid > hi:
            continue
        i = np.searchsorted(ids, f.min_sid)
        if i < len(ids) and ids[i] <= f.max_sid:
            out.append(f)
    return out


def _in_time(cols: blocks.Columns, start_ms: int, end_ms: int) -> blocks.Columns:
    """Rows of ``cols`` with ``start_ms <= ts <= end_ms`` (``cols`` itself when all are)."""
    ts = cols["ts"]
    keep = (ts >= start_ms) & (ts <= end_ms)
    return cols if bool(keep.all()) else blocks.take(cols, keep)


def _bounds(sid: NDArray[np.uint64]) -> list[tuple[int, int]]:
    if len(sid) == 0:
        return []
    starts = np.flatnonzero(np.concatenate(([True], sid[1:] != sid[:-1])))
    ends = np.append(starts[1:], len(sid))
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def _empty_rollup() -> blocks.Columns:
    return {
        "series_id": np.empty(0, np.uint64),
        "ts": np.empty(0, np.int64),
        **{f: np.empty(0, np.int64 if f == "count" else np.float64) for f in blocks.ROLLUP_FIELDS},
    }
