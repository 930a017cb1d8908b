"""The head: committed samples not yet in a Parquet part, held in memory.

Durability comes from the write-ahead log, not from here: a batch enters the head only
after its WAL records are written and its series rows committed to DuckDB, and the WAL
keeps every record after the last flushed batch (``head_lsn`` in ``metric_state``), so a
restart rebuilds the head by replaying them. The head therefore costs the ingest path
no database work per sample: a commit hands over numpy columns (usually views of the
writer's staging chunks, no copy).

:class:`MemHead` keeps the batches as they were committed (numbered, each with the WAL
position just past its last record) and, for readers, one sorted
:class:`~monitoringserver.metrics.runs.Run` of all of them with the newest write of each
``(series, ts)`` kept. That run is built lazily and incrementally: a read merges only
the batches added since the last one, and a flush drops its batches (inside the
manifest publication that adds their parts, so a reader retries instead of missing
rows) and the next read rebuilds the run from the batches left.

Thread-safety: :meth:`add` runs on the event loop and never waits for a merge (a short
lock guards the batch list); merges are serialised by a second lock and publish an
immutable state object, so a reader never sees a half-built run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics import blocks
from monitoringserver.metrics.runs import Run, merge_runs
from monitoringserver.storage import codec

__all__ = ["FlushView", "MemHead", "Piece"]


@dataclass(frozen=True, slots=True)
class _Batch:
    number: int
    lsn: int  # WAL position just past the batch's last record
    sids: NDArray[np.uint64]
    ts: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class _Merged:
    drops: int  # drops seen when it was built (a drop invalidates it)
    through: int  # highest batch number merged in (-1: none)
    run: Run


@dataclass(frozen=True, slots=True)
class _Sorted:
    """One batch in ``(series_id, ts)`` order without copying its rows: series
    ``sids[i]`` (ascending, unique) owns rows ``rows[offsets[i]:offsets[i + 1]]`` of the
    batch's columns (``rows`` is ``None`` when the batch is in that order already);
    rewrites of a key inside the batch are left out (the last one is kept)."""

    sids: NDArray[np.uint64]
    offsets: NDArray[np.int64]
    rows: NDArray[np.int32] | NDArray[np.intp] | None
    ts: NDArray[np.int64]
    values: NDArray[np.float64]
    ts_min: int
    ts_max: int

    def take(self, a: int, b: int) -> Run:
        """Series ``sids[a:b]`` and their rows as a run (copies only when reordered)."""
        lo, hi = int(self.offsets[a]), int(self.offsets[b])
        lengths = np.diff(self.offsets[a : b + 1])
        if self.rows is None:
            return Run(self.sids[a:b], lengths, self.ts[lo:hi], self.values[lo:hi])
        idx = self.rows[lo:hi]
        return Run(self.sids[a:b], lengths, self.ts[idx], self.values[idx])


def _sorted_of(batch: _Batch) -> _Sorted:
    """:class:`_Sorted` of ``batch``. Its sort order costs 4 bytes per row (8 above 2**31
    rows) where a sorted copy of the columns would cost 24."""
    sid, ts = batch.sids, batch.ts
    n = len(ts)
    order: NDArray[np.intp] | None = None
    if n > 1:
        same = sid[1:] == sid[:-1]
        if not bool(np.all((sid[1:] > sid[:-1]) | (same & (ts[1:] >= ts[:-1])))):
            t0 = int(ts.min())
            if int(sid.max()) < 2**26 and int(ts.max()) - t0 < 2**37:
                order = np.argsort((sid.astype(np.int64) << 37) | (ts - t0), kind="stable")
            else:
                order = np.lexsort((ts, sid))
    s_sid = sid if order is None else sid[order]
    s_ts = ts if order is None else ts[order]
    last = np.ones(n, dtype=np.bool_)
    if n > 1:
        last[:-1] = (s_sid[1:] != s_sid[:-1]) | (s_ts[1:] != s_ts[:-1])
    if not bool(last.all()):
        order = np.flatnonzero(last) if order is None else order[last]
        s_sid = s_sid[last]
    starts = codec.segment_starts(s_sid)
    offsets = np.append(starts, len(s_sid)).astype(np.int64)
    rows: NDArray[np.int32] | NDArray[np.intp] | None = order
    if order is not None and n < 2**31:
        rows = order.astype(np.int32)
    lo, hi = (int(ts.min()), int(ts.max())) if n else (0, -1)
    return _Sorted(s_sid[starts], offsets, rows, ts, batch.values, lo, hi)


Piece = Run | _Sorted


@dataclass(frozen=True, slots=True)
class FlushView:
    """What a flush writes: every head row of batches up to ``through``, and ``lsn``, the
    WAL position just past their last record. The rows stay in ``pieces`` (sorted,
    oldest first, not merged): a flush reads them a series range at a time with
    :meth:`rows`, so it never holds a merged copy of the whole head."""

    pieces: tuple[Piece, ...]
    through: int
    lsn: int

    def partitions(self, partition_ms: int) -> list[int]:
        """Starts of the ``partition_ms``-wide time partitions with rows, ascending."""
        found: set[int] = set()
        for p in self.pieces:
            if isinstance(p, Run):
                if len(p):
                    found.update(np.unique(p.ts - p.ts % partition_ms).tolist())
            elif p.ts_min - p.ts_min % partition_ms == p.ts_max - p.ts_max % partition_ms:
                found.add(p.ts_min - p.ts_min % partition_ms)
            else:
                found.update(np.unique(p.ts - p.ts % partition_ms).tolist())
        return sorted(found)

    def series_rows(
        self, start_ms: int, end_ms: int
    ) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
        """Series with rows in ``[start_ms, end_ms]`` (ascending) and their row counts
        summed over the pieces (a key rewritten by a newer piece counts twice)."""
        sids: list[NDArray[np.uint64]] = []
        counts: list[NDArray[np.int64]] = []
        for p in self.pieces:
            whole: Run
            if isinstance(p, _Sorted):
                if p.ts_min > end_ms or p.ts_max < start_ms:
                    continue
                if start_ms <= p.ts_min and p.ts_max <= end_ms:
                    sids.append(p.sids)
                    counts.append(np.diff(p.offsets))
                    continue
                whole = p.take(0, len(p.sids))  # a batch across the range's edge: a copy
            else:
                whole = p
            run = whole.in_time(start_ms, end_ms)
            sids.append(run.sids)
            counts.append(run.lengths)
        if not sids:
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        union, inverse = np.unique(np.concatenate(sids), return_inverse=True)
        total = np.bincount(inverse, weights=np.concatenate(counts), minlength=len(union))
        return union, total.astype(np.int64)

    def rows(self, lo: int, hi: int, start_ms: int, end_ms: int) -> Run:
        """Rows of series ``lo..hi`` (inclusive) with ``start_ms <= ts <= end_ms``,
        sorted by ``(series_id, ts)``, the newest write of each key kept."""
        runs: list[Run] = []
        for p in self.pieces:
            a, b = np.searchsorted(p.sids, [lo, hi + 1]).tolist()
            if a == b:
                continue
            if isinstance(p, Run):
                offsets = p.offsets()
                ra, rb = int(offsets[a]), int(offsets[b])
                run = Run(p.sids[a:b], p.lengths[a:b], p.ts[ra:rb], p.values[ra:rb])
            elif p.ts_min > end_ms or p.ts_max < start_ms:
                continue
            else:
                run = p.take(a, b)
            runs.append(run.in_time(start_ms, end_ms))
        return merge_runs(runs)


class MemHead:
    """In-memory head; see the module docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _batches, _rows, _drops, _flushed_lsn
        self._merge_lock = threading.Lock()  # serialises merges
        self._batches: list[_Batch] = []
        self._rows = 0
        self._drops = 0
        self._flushed_lsn = 0
        self._merged = _Merged(0, -1, Run.empty())  # replaced whole
        self._parts: tuple[int, int, int, frozenset[int]] | None = None  # (drops, top, pms, …)

    # -- writers -------------------------------------------------------------------------

    def add(
        self,
        number: int,
        lsn: int,
        sids: NDArray[np.uint64],
        ts: NDArray[np.int64],
        values: NDArray[np.float64],
    ) -> None:
        """Add committed batch ``number`` (higher than every batch added before; equal
        lengths; the arrays must not change afterwards). An empty batch still moves the
        WAL position a flush may release."""
        with self._lock:
            if self._batches and number <= self._batches[-1].number:
                raise ValueError(
                    f"cannot add head batch {number}: batch {self._batches[-1].number} "
                    "is already in"
                )
            self._batches.append(_Batch(number, lsn, sids, ts, values))
            self._rows += len(ts)

    def drop_through(self, through: int) -> None:
        """Forget batches up to ``through`` (their rows are in parts now)."""
        with self._lock:
            keep = [b for b in self._batches if b.number > through]
            gone = self._batches[: len(self._batches) - len(keep)]
            if not gone:
                return
            self._batches = keep
            self._rows -= sum(len(b.ts) for b in gone)
            self._flushed_lsn = max(self._flushed_lsn, gone[-1].lsn)
            self._drops += 1
            self._merged = _Merged(self._drops, through, Run.empty())

    # -- readers -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows held (before removing rewrites of the same key)."""
        return self._rows

    @property
    def flushed_lsn(self) -> int:
        """WAL position just past the newest record whose samples a flush released."""
        return self._flushed_lsn

    @property
    def last_batch(self) -> int:
        """Number of the newest batch held (0 when empty)."""
        with self._lock:
            return self._batches[-1].number if self._batches else 0

    def rows(self, ids: NDArray[np.uint64], start_ms: int, end_ms: int) -> Run:
        """Rows of series ``ids`` (sorted, unique) with ``start_ms <= ts <= end_ms``,
        sorted by ``(series_id, ts)``, the newest write of each key kept."""
        run = self._current().run
        if len(run) == 0:
            return run
        return _pick(run, ids).in_time(start_ms, end_ms)

    def flush_view(self) -> FlushView | None:
        """Every batch held, as sorted pieces (``None`` when no batch is held): the
        merged run readers built, if any is current, and each batch after it on its own
        (see :class:`FlushView`); no merge of the whole head."""
        merged = self._merged
        with self._lock:
            if not self._batches:
                return None
            batches = list(self._batches)
            fresh = merged.drops == self._drops
        base: list[Piece] = [merged.run] if fresh and len(merged.run) else []
        after = merged.through if fresh else -1
        pieces = [*base, *(_sorted_of(b) for b in batches if b.number > after and len(b.ts))]
        through = batches[-1].number
        return FlushView(tuple(pieces), through, self._lsn_of(through))

    def partitions(self, partition_ms: int) -> set[int]:
        """Starts of the ``partition_ms``-wide time partitions the head has rows in."""
        with self._lock:
            batches = list(self._batches)
            key = (self._drops, batches[-1].number if batches else 0, partition_ms)
        cached = self._parts
        if cached is not None and cached[:3] == key:
            return set(cached[3])
        found: set[int] = set()
        for b in batches:
            if len(b.ts):
                lo, hi = int(b.ts.min()), int(b.ts.max())
                if lo - lo % partition_ms == hi - hi % partition_ms:
                    found.add(lo - lo % partition_ms)
                else:
                    found.update(np.unique(b.ts - b.ts % partition_ms).tolist())
        self._parts = (*key, frozenset(found))
        return found

    # -- merging -------------------------------------------------------------------------

    def _lsn_of(self, number: int) -> int:
        """The WAL position every batch up to ``number`` is covered by."""
        with self._lock:
            return max((b.lsn for b in self._batches if b.number <= number), default=0)

    def _current(self) -> _Merged:
        """The merged state with every batch held now."""
        merged = self._merged
        with self._lock:
            pending = [b for b in self._batches if b.number > merged.through]
            fresh = merged.drops == self._drops
        if fresh and not pending:
            return merged
        with self._merge_lock:
            with self._lock:
                merged = self._merged
                drops = self._drops
                pending = [b for b in self._batches if b.number > merged.through]
            if not pending:
                return merged
            # A run per batch (each sorted on its own: small sorts, often none), then
            # one merge, which needs no sort while series' rows rise batch after batch.
            run = merge_runs([merged.run, *map(_run_of, pending)]).freeze()
            state = _Merged(drops, pending[-1].number, run)
            with self._lock:
                if self._drops == drops:  # a drop meanwhile: the next read rebuilds
                    self._merged = state
            return state


def _run_of(batch: _Batch) -> Run:
    """The sorted run of one batch, the newest write of a key kept."""
    cols: blocks.Columns = {"series_id": batch.sids, "ts": batch.ts, "value": batch.values}
    return Run.from_columns(blocks.dedup_last([cols]))


def _pick(run: Run, ids: NDArray[np.uint64]) -> Run:
    """The series ``ids`` of ``run`` (those it has)."""
    if len(run) == 0:
        return run
    pos = np.minimum(np.searchsorted(run.sids, ids), len(run.sids) - 1)
    found = pos[run.sids[pos] == ids]
    if len(found) == 0:
        return Run.empty()
    offsets = run.offsets()
    rows = codec.segment_gather(offsets[:-1].astype(np.intp), run.lengths, found)
    return Run(run.sids[found], run.lengths[found], run.ts[rows], run.values[rows])
