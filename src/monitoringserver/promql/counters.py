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

__all__ = ["extrapolated", "reset_correction"]

Idx = NDArray[np.intp]


def reset_correction(values: F64, first: Idx, last: Idx, starts: Idx | None = None) -> F64:
    """Per window, the sum of the values just before each counter reset inside it.

    A reset at flat index ``k`` (``values[k] < values[k - 1]``) belongs to the windows
    with ``first < k <= last``. Windows never span two series, so the step from one
    series' last sample to the next one's first is never counted (with ``starts`` those
    seams are not even considered). Sums are taken per window, never as differences of
    a running total, which would lose precision.
    """
    out = np.zeros(first.shape)
    if len(values) < 2:
        return out
    is_drop = np.zeros(len(values), dtype=np.bool_)
    np.less(values[1:], values[:-1], out=is_drop[1:])
    if starts is not None:
        is_drop[starts[starts < len(values)]] = False
    drops = np.flatnonzero(is_drop)
    if not len(drops):
        return out
    if first.size * 4 < len(values):
        k1 = np.searchsorted(drops, first, side="right")
        k2 = np.searchsorted(drops, last, side="right")
    else:
        seen = np.cumsum(is_drop, dtype=np.intp)
        k1, k2 = seen[first], seen[last]
    has = k2 > k1
    if not has.any():
        return out
    prev = np.append(values[drops - 1], 0.0)
    bounds = np.empty(2 * int(has.sum()), dtype=np.intp)
    bounds[0::2] = k1[has]
    bounds[1::2] = k2[has]
    out[has] = np.add.reduceat(prev, bounds)[0::2]
    return out


def extrapolated(is_counter: bool, is_rate: bool) -> RangeFn:
    """The range function for ``rate`` (counter, rate), ``increase`` or ``delta``.

    Every window is computed, windows with fewer than two samples on clamped indices;
    the returned mask marks the valid ones (the others' values are meaningless).
    """

    def fn(a: RangeArgs) -> tuple[F64, B]:
        n = a.hi - a.lo
        ok = n >= 2
        if not len(a.values) or not ok.any():
            return np.zeros(a.lo.shape), ok
        first = np.minimum(a.lo, len(a.values) - 1)
        last = a.hi - 1  # -1 (an empty window at the very start) is a valid index
        end = a.eff[None, :]
        # Temporaries are reused in place: these arrays have one cell per (series, step).
        v0, result = a.values[first], a.values[last]
        t0, t1 = a.ts[first], a.ts[last]
        with np.errstate(all="ignore"):
            result -= v0
            if is_counter:
                result += reset_correction(a.values, first, last, a.starts)
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
        return np.asarray(result, dtype=np.float64), ok

    return fn
