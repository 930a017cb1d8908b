"""The head table mirrored in numpy, so a select does not query DuckDB for it.

The head only grows between flushes, by committed batches with rising ``batch``
numbers, and shrinks only when a flush deletes its oldest batches (inside a manifest
publication that moves ``Manifest.head_epoch`` before and after its commit).
:class:`HeadMirror` therefore keeps the head's rows as one
:class:`~monitoringserver.metrics.runs.Run` (sorted, the newest write of each key kept)
and, after a database commit, fetches only the rows of batches it has not seen; after a
flush it reads the head again from scratch. A select then takes its series out of the
mirror with a binary search, at a cost proportional to the rows it returns.

The mirror is bounded (``max_rows``): while the head holds more rows, :meth:`rows`
returns ``None`` and the caller queries DuckDB as before.

Thread-safety: refreshes are serialised by a lock; readers use an immutable state
object, so a select never sees a half-built mirror.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics import blocks
from monitoringserver.metrics.runs import Run, merge_runs
from monitoringserver.storage import codec

__all__ = ["HeadMirror"]


@dataclass(frozen=True, slots=True)
class _State:
    commits: int  # database commits when it was read (every commit up to it is in)
    epoch: int  # ``Manifest.head_epoch`` it was read at
    last_batch: int  # highest batch number mirrored (-1: none)
    run: Run | None  # None: the head is over the bound


class HeadMirror:
    """Head rows in memory; see the module docstring."""

    def __init__(self, commits: Callable[[], int], epoch: Callable[[], int], max_rows: int) -> None:
        self._commits = commits
        self._epoch = epoch
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._state: _State | None = None  # replaced whole under _lock

    def rows(
        self,
        cur: duckdb.DuckDBPyConnection,
        ids: NDArray[np.uint64],
        start_ms: int,
        end_ms: int,
    ) -> Run | None:
        """Head rows of ``ids`` (sorted, unique) with ``start_ms <= ts <= end_ms``,
        newest write of each key; ``None`` when the head is over the bound."""
        state = self._current(cur)
        if state.run is None:
            return None
        return _pick(state.run, ids).in_time(start_ms, end_ms)

    def _current(self, cur: duckdb.DuckDBPyConnection) -> _State:
        commits, epoch = self._commits(), self._epoch()
        state = self._state
        if state is not None and (state.commits, state.epoch) == (commits, epoch):
            return state
        with self._lock:
            state = self._state
            if state is not None and (state.commits, state.epoch) == (commits, epoch):
                return state
            if state is None or state.epoch != epoch or state.run is None:
                state = _State(commits, epoch, -1, Run.empty())
            state = self._refresh(cur, state, commits)
            self._state = state
            return state

    def _refresh(self, cur: duckdb.DuckDBPyConnection, state: _State, commits: int) -> _State:
        """``state`` plus the head rows of batches after ``state.last_batch``."""
        assert state.run is not None
        count, top = cur.execute(
            "SELECT count(*), max(batch) FROM metric_head WHERE batch > ?", [state.last_batch]
        ).fetchall()[0]
        if not count:
            return _State(commits, state.epoch, state.last_batch, state.run)
        if len(state.run) + int(count) > self.max_rows:
            return _State(commits, state.epoch, state.last_batch, None)
        got = cur.execute(
            "SELECT series_id, ts, bits, batch FROM metric_head WHERE batch > ? AND batch <= ?",
            [state.last_batch, int(top)],
        ).fetchnumpy()
        cols = blocks.head_columns(got)
        order = np.argsort(cols.pop("batch"), kind="stable")
        new = Run.from_columns(blocks.dedup_last([blocks.take(cols, order)]))
        run = merge_runs([state.run, new]).freeze()
        return _State(commits, state.epoch, int(top), run)


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
