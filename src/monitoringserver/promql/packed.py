"""Many series packed into flat arrays, and window bounds over all of them at once.

Series ``i`` owns ``ts[offsets[i]:offsets[i + 1]]`` (sorted, int64 ms) and the same slice
of ``values``. :func:`upper_bounds` answers, for every series and every step, "how many
samples up to ``t``" with one ``np.searchsorted`` over a composite key
``series * span + (ts - base)`` that is increasing across the whole flat array, so no
Python loop runs per series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.samples import is_stale_nan

__all__ = ["Packed", "pack", "upper_bounds"]

Idx = NDArray[np.intp]
#: Composite keys must stay well inside int64.
_KEY_LIMIT = 2**62


@dataclass(slots=True)
class Packed:
    """Concatenated samples; ``offsets`` has one entry per series plus one."""

    ts: NDArray[np.int64]
    values: NDArray[np.float64]
    offsets: Idx

    @property
    def count(self) -> int:
        return len(self.offsets) - 1

    def starts(self) -> Idx:
        return self.offsets[:-1]

    def without_stale(self) -> Packed:
        """A copy without staleness markers (or ``self`` when there are none)."""
        stale = is_stale_nan(self.values)
        if not stale.any():
            return self
        keep = ~stale
        kept_before = np.concatenate([[0], np.cumsum(keep, dtype=np.intp)])
        return Packed(self.ts[keep], self.values[keep], kept_before[self.offsets])


def pack(ts: Sequence[NDArray[np.int64]], values: Sequence[NDArray[np.float64]]) -> Packed:
    """Concatenate per-series arrays (equal lengths pairwise) into one :class:`Packed`."""
    lengths = np.fromiter((len(t) for t in ts), dtype=np.intp, count=len(ts))
    offsets = np.zeros(len(ts) + 1, dtype=np.intp)
    np.cumsum(lengths, out=offsets[1:])
    if len(ts) == 0 or offsets[-1] == 0:
        return Packed(np.empty(0, np.int64), np.empty(0, np.float64), offsets)
    return Packed(
        np.concatenate(ts).astype(np.int64, copy=False),
        np.concatenate(values).astype(np.float64, copy=False),
        offsets,
    )


class _Keys:
    """The composite sort key of a :class:`Packed` (built once, queried many times)."""

    def __init__(self, p: Packed) -> None:
        self.p = p
        n = p.count
        self.base = int(p.ts.min()) - 1
        self.span = int(p.ts.max()) - self.base + 2
        self.fits = n * self.span < _KEY_LIMIT
        if self.fits:
            sid = np.repeat(np.arange(n, dtype=np.int64), np.diff(p.offsets))
            self.key = sid * self.span + (p.ts - self.base)
            self.row = np.arange(n, dtype=np.int64)[:, None] * self.span

    def upper(self, t: NDArray[np.int64]) -> Idx:
        p = self.p
        if not self.fits:
            out = np.empty((p.count, len(t)), dtype=np.intp)
            for i in range(p.count):
                a, b = int(p.offsets[i]), int(p.offsets[i + 1])
                out[i] = np.searchsorted(p.ts[a:b], t, side="right") + a
            return out
        q = np.clip(t - self.base, 0, self.span - 1)
        found = np.searchsorted(self.key, (self.row + q[None, :]).ravel(), side="right")
        return found.astype(np.intp, copy=False).reshape(p.count, len(t))


def _upper_by_histogram(p: Packed, sid: NDArray[np.intp], t: NDArray[np.int64]) -> Idx:
    """Bounds for ascending ``t`` by counting samples per (series, first step seeing them).

    A sample at ``ts`` is counted from the first step with ``t >= ts`` on; a cumulative
    sum along the steps turns the per-step counts into bounds. This reads the samples
    sequentially instead of binary-searching every (series, step) cell.
    """
    n, steps = p.count, len(t)
    gap = int(t[1] - t[0]) if steps > 1 else 0
    if gap > 0 and bool(np.all(np.diff(t) == gap)):
        # A regular grid: the first step at or after ``ts`` by ceiling division.
        first_step = np.clip(-((int(t[0]) - p.ts) // gap), 0, steps)
    else:
        first_step = np.searchsorted(t, p.ts, side="left")
    counts = np.bincount(sid * (steps + 1) + first_step, minlength=n * (steps + 1))
    cum = np.cumsum(counts.reshape(n, steps + 1)[:, :steps], axis=1)
    return np.asarray(cum + p.starts()[:, None], dtype=np.intp)


def upper_bounds(p: Packed, *times: NDArray[np.int64]) -> list[Idx]:
    """For each array of times, ``[series, len(t)]`` flat indices just past ``ts <= t``.

    ``offsets[i] <= result[i, j] <= offsets[i + 1]``; the samples of series ``i`` at or
    before ``t[j]`` are ``[offsets[i], result[i, j])``. Many cells over ascending times
    are counted (:func:`_upper_by_histogram`); few cells are binary-searched.
    """
    if p.count == 0 or len(p.ts) == 0:
        return [np.repeat(p.starts()[:, None], len(t), axis=1) for t in times]
    out: list[Idx] = []
    keys: _Keys | None = None
    sid: NDArray[np.intp] | None = None
    for given in times:
        t = np.asarray(given, dtype=np.int64)
        cells = p.count * len(t)
        if cells * 4 >= len(p.ts) and (len(t) < 2 or bool(np.all(t[1:] >= t[:-1]))):
            if sid is None:
                sid = np.repeat(np.arange(p.count, dtype=np.intp), np.diff(p.offsets))
            out.append(_upper_by_histogram(p, sid, t))
            continue
        if keys is None:
            keys = _Keys(p)
        out.append(keys.upper(t))
    return out
