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

A flush does not merge the whole head: it replaces each batch by its sorted run (16
bytes per row where the staged columns took 24, and the staging chunks are freed once
no batch uses them) and reads those runs a series range at a time (:class:`FlushView`).

Thread-safety: :meth:`add` runs on the event loop and never waits for a merge (a short
lock guards the batch list); merges are serialised by a second lock and publish an
immutable state object, so a reader never sees a half-built run.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics import blocks
from monitoringserver.metrics.partcache import NotCached
from monitoringserver.metrics.runs import Run, merge_runs
from monitoringserver.storage import codec

__all__ = ["FlushView", "MemHead"]


@dataclass(frozen=True, slots=True)
class _Batch:
    number: int
    lsn: int  # WAL position just past the batch's last record
    rows: int  # rows added (before rewrites inside the batch are removed)
    sids: NDArray[np.uint64]  # per row as added; per series once sorted (see ``run``)
    ts: NDArray[np.int64]
    values: NDArray[np.float64]
    lengths: NDArray[np.int64] | None = None  # set once sorted: the batch is a Run

    def sorted_run(self) -> Run | None:
        """The batch as a sorted run when it has been replaced by one, else ``None``."""
        if self.lengths is None:
            return None
        return Run(self.sids, self.lengths, self.ts, self.values)


@dataclass(frozen=True, slots=True)
class _Merged:
    drops: int  # drops seen when it was built (a drop invalidates it)
    through: int  # highest batch number merged in (-1: none)
    run: Run
    #: Each series' first row in ``run``: built once per merge, not once per read.
    starts: NDArray[np.intp] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts = np.zeros(len(self.run.lengths), dtype=np.intp)
        np.cumsum(self.run.lengths[:-1], out=starts[1:])
        starts.flags.writeable = False
        object.__setattr__(self, "starts", starts)


@dataclass(frozen=True, slots=True)
class FlushView:
    """What a flush writes: every head row of batches up to ``through``, and ``lsn``, the
    WAL position just past their last record. The rows stay in ``runs`` (each sorted,
    oldest first, not merged with each other): a flush reads them a series range at a
    time with :meth:`rows`, so it never holds a merged copy of the whole head."""

    runs: tuple[Run, ...]
    through: int
    lsn: int

    def partitions(self, partition_ms: int) -> list[int]:
        """Starts of the ``partition_ms``-wide time partitions with rows, ascending."""
        return sorted(_partitions_of([r.ts for r in self.runs], partition_ms))

    def series_rows(
        self, start_ms: int, end_ms: int
    ) -> tuple[NDArray[np.uint64], NDArray[np.int64]]:
        """Series with rows in ``[start_ms, end_ms]`` (ascending) and their row counts
        summed over the runs (a key rewritten by a newer run counts twice)."""
        picked = [r.in_time(start_ms, end_ms) for r in self.runs]
        picked = [r for r in picked if len(r)]
        if not picked:
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        union, inverse = np.unique(np.concatenate([r.sids for r in picked]), return_inverse=True)
        weights = np.concatenate([r.lengths for r in picked])
        total = np.bincount(inverse, weights=weights, minlength=len(union))
        return union, total.astype(np.int64)

    def rows(self, lo: int, hi: int, start_ms: int, end_ms: int) -> Run:
        """Rows of series ``lo..hi`` (inclusive) with ``start_ms <= ts <= end_ms``,
        sorted by ``(series_id, ts)``, the newest write of each key kept."""
        parts: list[Run] = []
        for r in self.runs:
            a, b = np.searchsorted(r.sids, [lo, hi + 1]).tolist()
            if a == b:
                continue
            offsets = r.offsets()
            ra, rb = int(offsets[a]), int(offsets[b])
            part = Run(r.sids[a:b], r.lengths[a:b], r.ts[ra:rb], r.values[ra:rb])
            parts.append(part.in_time(start_ms, end_ms))
        return merge_runs(parts)


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
            self._batches.append(_Batch(number, lsn, len(ts), sids, ts, values))
            self._rows += len(ts)

    def drop_through(self, through: int) -> None:
        """Forget batches up to ``through`` (their rows are in parts now)."""
        with self._lock:
            keep = [b for b in self._batches if b.number > through]
            gone = self._batches[: len(self._batches) - len(keep)]
            if not gone:
                return
            self._batches = keep
            self._rows -= sum(b.rows for b in gone)
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

    def rows(
        self, ids: NDArray[np.uint64], start_ms: int, end_ms: int, *, merged_only: bool = False
    ) -> Run:
        """Rows of series ``ids`` (sorted, unique) with ``start_ms <= ts <= end_ms``,
        sorted by ``(series_id, ts)``, the newest write of each key kept.
        ``merged_only``: raise :class:`NotCached` rather than first merge the batches
        added since the last merge (which costs time in proportion to the head), so the
        read costs time in proportion to ``ids`` and their rows only."""
        state = self._merged_state() if merged_only else self._current()
        if len(state.run) == 0:
            return state.run
        return _pick(state.run, ids, state.starts).in_time(start_ms, end_ms)

    def flush_view(self) -> FlushView | None:
        """Every batch held, as sorted runs (``None`` when no batch is held): the merged
        run readers built, if one is current, and each batch after it, which is replaced
        by its sorted run for good (see :class:`FlushView`); no merge of the whole head."""
        merged = self._merged
        with self._lock:
            if not self._batches:
                return None
            batches = list(self._batches)
            fresh = merged.drops == self._drops
        runs: list[Run] = [merged.run] if fresh and len(merged.run) else []
        after = merged.through if fresh else -1
        through = batches[-1].number
        todo = [b for b in reversed(batches) if b.number > after and b.rows]
        del batches  # each batch's staged columns may go as soon as it is sorted
        while todo:
            runs.append(self._sort(todo.pop()))
        return FlushView(tuple(runs), through, self._lsn_of(through))

    def _sort(self, batch: _Batch) -> Run:
        """``batch``'s sorted run; the head keeps that run in the batch's place, so the
        staged columns it viewed can be freed (a batch is immutable: it is swapped)."""
        done = batch.sorted_run()
        if done is not None:
            return done
        run = _run_of(batch)
        compact = dataclasses.replace(
            batch, sids=run.sids, ts=run.ts, values=run.values, lengths=run.lengths
        )
        with self._lock:
            for i, b in enumerate(self._batches):
                if b is batch:
                    self._batches[i] = compact
                    break
        return run

    def partitions(self, partition_ms: int) -> set[int]:
        """Starts of the ``partition_ms``-wide time partitions the head has rows in."""
        with self._lock:
            batches = list(self._batches)
            key = (self._drops, batches[-1].number if batches else 0, partition_ms)
        cached = self._parts
        if cached is not None and cached[:3] == key:
            return set(cached[3])
        found = _partitions_of([b.ts for b in batches], partition_ms)
        self._parts = (*key, frozenset(found))
        return found

    # -- merging -------------------------------------------------------------------------

    def _lsn_of(self, number: int) -> int:
        """The WAL position every batch up to ``number`` is covered by."""
        with self._lock:
            return max((b.lsn for b in self._batches if b.number <= number), default=0)

    def _merged_state(self) -> _Merged:
        """The merged state if it holds every batch held now, else :class:`NotCached`."""
        merged = self._merged
        with self._lock:
            current = merged.drops == self._drops and (
                not self._batches or self._batches[-1].number <= merged.through
            )
        if not current:
            raise NotCached("cannot read head rows from memory: a merge is pending")
        return merged

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


def _partitions_of(columns: list[NDArray[np.int64]], partition_ms: int) -> set[int]:
    """Starts of the ``partition_ms``-wide time partitions the timestamps fall in (one
    comparison for a column inside a single partition, the common case)."""
    found: set[int] = set()
    for ts in columns:
        if not len(ts):
            continue
        lo, hi = int(ts.min()), int(ts.max())
        if lo - lo % partition_ms == hi - hi % partition_ms:
            found.add(lo - lo % partition_ms)
        else:
            found.update(np.unique(ts - ts % partition_ms).tolist())
    return found


def _run_of(batch: _Batch) -> Run:
    """The sorted run of one batch, the newest write of a key kept."""
    done = batch.sorted_run()
    if done is not None:
        return done
    cols: blocks.Columns = {"series_id": batch.sids, "ts": batch.ts, "value": batch.values}
    return Run.from_columns(blocks.dedup_last([cols]))


def _pick(run: Run, ids: NDArray[np.uint64], starts: NDArray[np.intp] | None = None) -> Run:
    """The series ``ids`` of ``run`` (those it has); ``starts``: each series' first row
    (computed when not given)."""
    if len(run) == 0:
        return run
    pos = np.minimum(run.sids.searchsorted(ids), len(run.sids) - 1)
    found = pos[run.sids[pos] == ids]
    if len(found) == 0:
        return Run.empty()
    if starts is None:
        starts = run.offsets()[:-1].astype(np.intp)
    rows = codec.segment_gather(starts, run.lengths, found)
    return Run(run.sids[found], run.lengths[found], run.ts[rows], run.values[rows])
