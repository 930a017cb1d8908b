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

__all__ = ["Packed", "pack", "reorder", "upper_bounds"]

Idx = NDArray[np.intp]


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
    lengths = np.fromiter(map(len, ts), dtype=np.intp, count=len(ts))
    offsets = np.zeros(len(ts) + 1, dtype=np.intp)
    np.cumsum(lengths, out=offsets[1:])
    if len(ts) == 0 or offsets[-1] == 0:
        return Packed(np.empty(0, np.int64), np.empty(0, np.float64), offsets)
    return Packed(
        np.concatenate(ts).astype(np.int64, copy=False),
        np.concatenate(values).astype(np.float64, copy=False),
        offsets,
    )


def reorder(p: Packed, order: Idx) -> Packed:
    """The series of ``p`` in the order ``order`` (a permutation of series indices)."""
    lengths = np.diff(p.offsets)[order]
    offsets = np.zeros(len(order) + 1, dtype=np.intp)
    np.cumsum(lengths, out=offsets[1:])
    shift = np.repeat(p.offsets[:-1][order] - offsets[:-1], lengths)
    shift += np.arange(int(offsets[-1]), dtype=np.intp)
    return Packed(p.ts[shift], p.values[shift], offsets)


def _upper_by_bisection(p: Packed, t: NDArray[np.int64]) -> Idx:
    """Bounds by a binary search that runs in lockstep over every (series, step) cell.

    Costs ``cells * log2(longest series)`` and nothing per sample, so it wins when there
    are few cells (instant queries) and works for times in any order.
    """
    n, steps = p.count, len(t)
    lo = np.repeat(p.offsets[:-1, None], steps, axis=1)
    hi = np.repeat(p.offsets[1:, None], steps, axis=1)
    last = len(p.ts) - 1
    for _ in range(int(np.diff(p.offsets).max()).bit_length()):
        mid = (lo + hi) >> 1
        right = (lo < hi) & (p.ts[np.minimum(mid, last)] <= t[None, :])
        np.copyto(lo, mid + 1, where=right)
        np.copyto(hi, mid, where=~right)
    return lo.reshape(n, steps)


def _regular_gap(t: NDArray[np.int64]) -> int:
    """The spacing of an evenly spaced ascending grid of two or more times, else 0."""
    if len(t) < 2:
        return 0
    gap = int(t[1] - t[0])
    return gap if gap > 0 and bool(np.all(np.diff(t) == gap)) else 0


#: Samples per block of element-wise work (its temporaries stay in cache).
_BLOCK = 1 << 16


def _points_before(ts: NDArray[np.int64], grids: list[tuple[int, int]], gap: int) -> Idx:
    """For each ``ts``, how many points of the grids are ``< ts``.

    Each grid is ``(start, count)``: the points ``start + k * gap`` for ``0 <= k < count``.
    Computed by ceiling division, in blocks.
    """
    out = np.empty(len(ts), dtype=np.intp)
    tmp = np.empty(min(len(ts), _BLOCK), dtype=np.intp)
    for b in range(0, len(ts), _BLOCK):
        chunk = ts[b : b + _BLOCK]
        acc = out[b : b + _BLOCK]
        for g, (start, count) in enumerate(grids):
            k = acc if g == 0 else tmp[: len(chunk)]
            # ceil((t - start) / gap) as floor((t - start + gap - 1) / gap), clipped.
            np.subtract(chunk, start - gap + 1, out=k)
            k //= gap
            np.clip(k, 0, count, out=k)
            if g:
                acc += k
    return out


def _union_positions(p: Packed, grids: list[NDArray[np.int64]], union: NDArray[np.int64]) -> Idx:
    """For each sample, the number of ``union`` times before it (its first step seeing it).

    Evenly spaced grids are handled by ceiling division: the union itself when it is
    regular, or a sum over grids sharing one spacing at distinct phases (disjoint grids,
    e.g. window starts and ends when the range is no multiple of the step).
    """
    gap = _regular_gap(union)
    if gap:
        return _points_before(p.ts, [(int(union[0]), len(union))], gap)
    gaps = {_regular_gap(g) for g in grids}
    gap = gaps.pop() if len(gaps) == 1 else 0
    if gap and len({int(g[0]) % gap for g in grids}) == len(grids):
        return _points_before(p.ts, [(int(g[0]), len(g)) for g in grids], gap)
    return np.searchsorted(union, p.ts, side="left")


def _upper_by_histogram(p: Packed, first_step: Idx, steps: int) -> Idx:
    """Bounds from each sample's first step: counts per (series, step), summed along steps.

    This reads the samples sequentially instead of binary-searching every cell.
    """
    n = p.count
    first_step += np.repeat(np.arange(n, dtype=np.intp) * (steps + 1), np.diff(p.offsets))
    counts = np.bincount(first_step, minlength=n * (steps + 1))
    cum = np.cumsum(counts.reshape(n, steps + 1)[:, :steps], axis=1)
    cum += p.starts()[:, None]
    return np.asarray(cum, dtype=np.intp)


def _upper_by_series(p: Packed, t: NDArray[np.int64]) -> Idx:
    """Bounds by one ``np.searchsorted`` per series: cheapest for few, long series."""
    out = np.empty((p.count, len(t)), dtype=np.intp)
    off = p.offsets.tolist()
    for i in range(p.count):
        a, b = off[i], off[i + 1]
        out[i] = p.ts[a:b].searchsorted(t, side="right")
        out[i] += a
    return out


def upper_bounds(p: Packed, *times: NDArray[np.int64]) -> list[Idx]:
    """For each array of times, ``[series, len(t)]`` flat indices just past ``ts <= t``.

    ``offsets[i] <= result[i, j] <= offsets[i + 1]``; the samples of series ``i`` at or
    before ``t[j]`` are ``[offsets[i], result[i, j])``. The cheapest of three ways is
    chosen per array: few long series are searched one by one
    (:func:`_upper_by_series`); many cells over ascending times are counted in one pass
    over the samples for all such arrays together (:func:`_upper_by_histogram` over the
    union of the times); otherwise every cell is bisected in lockstep
    (:func:`_upper_by_bisection`).
    """
    if p.count == 0 or len(p.ts) == 0:
        return [np.repeat(p.starts()[:, None], len(t), axis=1) for t in times]
    if p.count == 1:
        # One series (a query naming one series): search it directly (exact for times in
        # any order); the cost model below costs more than that search on a short range.
        return [_upper_by_series(p, np.asarray(t, dtype=np.int64)) for t in times]
    depth = max(1, int(np.diff(p.offsets).max()).bit_length())
    arrays = [np.asarray(t, dtype=np.int64) for t in times]
    out: list[Idx | None] = [None] * len(arrays)
    counted: list[int] = []
    for k, t in enumerate(arrays):
        # Rough costs in nanoseconds of the three ways (measured on numpy 2, x86-64),
        # including the fixed cost of their numpy calls, which decides small inputs.
        cells = p.count * len(t)
        bisect = depth * 12_000 + cells * depth * 12
        per_series = p.count * 2500 + cells * depth * 2
        count = 80_000 + len(p.ts) * 12 + cells * 4
        ascending = len(t) < 2 or bool(np.all(t[1:] >= t[:-1]))
        if per_series < min(bisect, count):
            out[k] = _upper_by_series(p, t)
        elif bisect < count or not ascending:
            out[k] = _upper_by_bisection(p, t)
        else:
            counted.append(k)
    if counted:
        grids = [np.unique(arrays[k]) for k in counted]
        union = np.unique(np.concatenate(grids))
        bounds = _upper_by_histogram(p, _union_positions(p, grids, union), len(union))
        for k in counted:
            cols = np.searchsorted(union, arrays[k])
            if len(cols) == len(union):
                out[k] = bounds
            elif len(cols) and bool(np.all(np.diff(cols) == 1)):
                out[k] = bounds[:, int(cols[0]) : int(cols[-1]) + 1]  # a view, no copy
            else:
                out[k] = bounds[:, cols]
    return [b for b in out if b is not None]
