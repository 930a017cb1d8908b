"""``rate``, ``increase`` and ``delta`` over every window of a range vector at once.

Prometheus' extrapolation (``extrapolatedRate`` in its ``functions.go``): the difference
between the window's last and first sample (plus, for counters, the value before each
reset) is extrapolated towards the window edges by at most half an average sample gap,
and for counters never below zero. The arithmetic runs in the same order as Go's so
results agree to the last bit where no counter reset is involved.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from monitoringserver.promql.values import F64, B
from monitoringserver.promql.windows import RangeArgs, RangeFn

__all__ = ["Resets", "extrapolated", "reset_correction"]

Idx = NDArray[np.intp]


#: Cells per block of window computations: the temporaries of one block stay in cache.
_BLOCK_CELLS = 1 << 15


class Resets:
    """The counter resets of packed samples, found once and summed per window."""

    def __init__(self, values: F64, starts: Idx | None = None) -> None:
        self._values = values
        if len(values) < 2:
            self._drops = np.empty(0, dtype=np.intp)
            return
        is_drop = np.zeros(len(values), dtype=np.bool_)
        np.less(values[1:], values[:-1], out=is_drop[1:])
        if starts is not None:
            is_drop[starts[starts < len(values)]] = False
        self._drops = np.flatnonzero(is_drop)
        self._prev = np.append(values[self._drops - 1], 0.0)

    def within(self, first: Idx, last: Idx) -> F64 | None:
        """Per window, the sum of the values before each reset in ``(first, last]``.

        ``None`` when no window holds a reset. Sums are taken per window, never as
        differences of a running total, which would lose precision.
        """
        if not len(self._drops):
            return None
        k1 = np.searchsorted(self._drops, first, side="right")
        k2 = np.searchsorted(self._drops, last, side="right")
        has = k2 > k1
        if not has.any():
            return None
        out = np.zeros(first.shape)
        bounds = np.empty(2 * int(has.sum()), dtype=np.intp)
        bounds[0::2] = k1[has]
        bounds[1::2] = k2[has]
        out[has] = np.add.reduceat(self._prev, bounds)[0::2]
        return out


def reset_correction(values: F64, first: Idx, last: Idx, starts: Idx | None = None) -> F64:
    """Per window, the sum of the values just before each counter reset inside it.

    A reset at flat index ``k`` (``values[k] < values[k - 1]``) belongs to the windows
    with ``first < k <= last``. Windows never span two series, so the step from one
    series' last sample to the next one's first is never counted (with ``starts`` those
    seams are not even considered).
    """
    out = Resets(values, starts).within(first, last)
    return np.zeros(first.shape) if out is None else out


def extrapolated(is_counter: bool, is_rate: bool) -> RangeFn:
    """The range function for ``rate`` (counter, rate), ``increase`` or ``delta``.

    Every window is computed, windows with fewer than two samples on clamped indices;
    the returned mask marks the valid ones (the others' values are meaningless). Rows
    of series are processed in blocks of about ``_BLOCK_CELLS`` windows.
    """

    def fn(a: RangeArgs) -> tuple[F64, B]:
        ok = (a.hi - a.lo) >= 2
        out = np.zeros(a.lo.shape)
        if not len(a.values) or not ok.any():
            return out, ok
        resets = Resets(a.values, a.starts) if is_counter else None
        rows = max(1, _BLOCK_CELLS // max(1, a.lo.shape[1]))
        for r in range(0, a.lo.shape[0], rows):
            block = slice(r, r + rows)
            out[block] = _block(
                a, a.lo[block], a.hi[block], resets, is_counter=is_counter, is_rate=is_rate
            )
        return out, ok

    return fn


def _block(
    a: RangeArgs, lo: Idx, hi: Idx, resets: Resets | None, *, is_counter: bool, is_rate: bool
) -> F64:
    n = hi - lo
    first = np.minimum(lo, len(a.values) - 1)
    last = hi - 1  # -1 (an empty window at the very start) is a valid index
    end = a.eff[None, :]
    # Temporaries are reused in place.
    v0, result = a.values[first], a.values[last]
    t0, t1 = a.ts[first], a.ts[last]
    with np.errstate(all="ignore"):
        result -= v0
        if resets is not None:
            correction = resets.within(first, last)
            if correction is not None:
                result += correction
        sampled = np.subtract(t1, t0, dtype=np.float64)
        sampled /= 1000.0
        np.subtract(n, 1, out=n)
        np.maximum(n, 1, out=n)
        half_gap = sampled / n
        threshold = half_gap * 1.1
        half_gap /= 2
        t0 -= end - a.range_ms
        to_start = np.divide(t0, 1000.0)
        np.copyto(to_start, half_gap, where=to_start >= threshold)
        if is_counter:
            clamp = (result > 0) & (v0 >= 0)
            to_zero = np.divide(v0, result, out=v0)
            to_zero *= sampled
            clamp &= to_zero < to_start
            np.copyto(to_start, to_zero, where=clamp)
        np.subtract(end, t1, out=t1)
        to_end = np.divide(t1, 1000.0)
        np.copyto(to_end, half_gap, where=to_end >= threshold)
        factor = np.add(sampled, to_start, out=to_start)
        factor += to_end
        factor /= sampled
        if is_rate:
            factor /= a.range_ms / 1000.0
        result *= factor
    return result
