"""Sorted runs of raw samples in a compact form, and merging them without sorting.

A :class:`Run` holds rows sorted by ``(series_id, ts)`` with unique keys, with the
series ids once per series (``sids`` and per-series ``lengths``) instead of once per row,
so it costs 16 bytes per sample and hands out series offsets for free.

A query reads one run per file plus the head, oldest first. In the common case a
series' rows in a newer run are all later than its rows in older runs (data arrives in
time order), so the merge is a per-series concatenation: :func:`merge_runs` computes each
row's destination from the per-series lengths and scatters the columns in one pass per
run. When some series' runs interleave or repeat a timestamp it falls back to
:func:`monitoringserver.metrics.blocks.dedup_last` (sort; the newest row of a key wins),
so the result always equals that function's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics.blocks import Columns, dedup_last
from monitoringserver.storage.codec import segment_starts

__all__ = ["Run", "merge_runs"]


@dataclass(frozen=True, slots=True)
class Run:
    """Series ``sids[i]`` (ascending, unique, each with ``lengths[i] > 0`` rows) owns
    the next ``lengths[i]`` entries of ``ts`` (ms, ascending) and ``values``."""

    sids: NDArray[np.uint64]
    lengths: NDArray[np.int64]
    ts: NDArray[np.int64]
    values: NDArray[np.float64]

    @staticmethod
    def empty() -> Run:
        return Run(
            np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0)
        )

    @staticmethod
    def from_columns(cols: Columns) -> Run:
        """From ``series_id, ts, value`` columns sorted by ``(series_id, ts)``, unique."""
        sid = np.asarray(cols["series_id"], dtype=np.uint64)
        starts = segment_starts(sid)
        return Run(
            sid[starts],
            np.diff(np.append(starts, len(sid))).astype(np.int64),
            np.asarray(cols["ts"], dtype=np.int64),
            np.asarray(cols["value"], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.ts)

    @property
    def nbytes(self) -> int:
        return int(self.sids.nbytes + self.lengths.nbytes + self.ts.nbytes + self.values.nbytes)

    def offsets(self) -> NDArray[np.int64]:
        """``len(sids) + 1`` row offsets: series ``i`` is rows ``[o[i], o[i + 1])``."""
        out = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=out[1:])
        return out

    def series_ids(self) -> NDArray[np.uint64]:
        """The series id of every row."""
        return np.repeat(self.sids, self.lengths)

    def to_columns(self) -> Columns:
        return {"series_id": self.series_ids(), "ts": self.ts, "value": self.values}

    def freeze(self) -> Run:
        """Make the arrays read-only (for sharing through a cache); return ``self``."""
        for a in (self.sids, self.lengths, self.ts, self.values):
            a.flags.writeable = False
        return self

    def in_time(self, start_ms: int, end_ms: int) -> Run:
        """Rows with ``start_ms <= ts <= end_ms`` (``self`` when that is every row)."""
        keep = (self.ts >= start_ms) & (self.ts <= end_ms)
        if bool(keep.all()):
            return self
        offsets = self.offsets()
        counts = np.add.reduceat(keep.astype(np.int64), offsets[:-1])
        alive = counts > 0
        return Run(self.sids[alive], counts[alive], self.ts[keep], self.values[keep])


def merge_runs(runs: Sequence[Run]) -> Run:
    """Merge runs (oldest first) into one; of equal keys the newest run's row wins."""
    nonempty = [r for r in runs if len(r)]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else Run.empty()
    merged = _concat_by_series(nonempty)
    if merged is not None:
        return merged
    return Run.from_columns(dedup_last([r.to_columns() for r in nonempty]))


def _concat_by_series(runs: Sequence[Run]) -> Run | None:
    """Per-series concatenation of ``runs``, or ``None`` when that is not sorted."""
    same = all(np.array_equal(r.sids, runs[0].sids) for r in runs[1:])
    if same and all(bool(np.all(r.lengths == r.lengths[0])) for r in runs):
        return _concat_grid(runs)
    if same:
        union = runs[0].sids
        slots = [np.arange(len(union))] * len(runs)
    else:
        union = np.unique(np.concatenate([r.sids for r in runs]))
        slots = [np.searchsorted(union, r.sids) for r in runs]
    totals = np.zeros(len(union), dtype=np.int64)
    for run, slot in zip(runs, slots, strict=True):
        totals[slot] += run.lengths  # slots are unique within a run
    cursor = np.zeros(len(union), dtype=np.int64)
    np.cumsum(totals[:-1], out=cursor[1:])
    n = int(totals.sum())
    ts = np.empty(n, dtype=np.int64)
    values = np.empty(n, dtype=np.float64)
    for run, slot in zip(runs, slots, strict=True):
        first = cursor[slot]
        cursor[slot] += run.lengths
        shift = first - (np.cumsum(run.lengths) - run.lengths)
        dest = np.repeat(shift, run.lengths) + np.arange(len(run), dtype=np.int64)
        ts[dest] = run.ts
        values[dest] = run.values
    # Sorted iff time rises within every series (series boundaries may go either way).
    rising = ts[1:] > ts[:-1]
    bounds = np.cumsum(totals)[:-1] - 1  # last row of each series but the final one
    rising[bounds[bounds < n - 1]] = True
    if not bool(rising.all()):
        return None
    return Run(union, totals, ts, values)


def _concat_grid(runs: Sequence[Run]) -> Run | None:
    """:func:`_concat_by_series` for runs over the same series where every series has
    the same number of rows within a run (regular scrapes): as 2-D blocks side by side."""
    n = len(runs[0].sids)
    ts = np.concatenate([r.ts.reshape(n, -1) for r in runs], axis=1)
    if ts.shape[1] > 1 and not bool(np.all(ts[:, 1:] > ts[:, :-1])):
        return None
    values = np.concatenate([r.values.reshape(n, -1) for r in runs], axis=1)
    lengths = np.full(n, ts.shape[1], dtype=np.int64)
    return Run(runs[0].sids, lengths, ts.reshape(-1), values.reshape(-1))
