"""Functions over range vectors (``rate``, ``*_over_time``, ...), all series and steps at once.

A function receives every series of the matrix concatenated into flat ``ts``/``values``
arrays and, per ``(series, step)``, the window ``[lo, hi)`` into them. Cheap reductions
are ``ufunc.reduceat`` or prefix sums over the flat arrays; the statistical functions
(stddev, quantile, regression, smoothing) gather the windows into a padded
``[windows, width]`` matrix, in bounded chunks, and reduce along its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from monitoringserver.promql.counters import extrapolated
from monitoringserver.promql.values import F64, B
from monitoringserver.promql.windows import WINDOW_FUNCTIONS, RangeArgs, RangeFn

__all__ = ["RANGE_FUNCTIONS", "RangeArgs", "kahan", "keeps_name"]

Idx = NDArray[np.intp]


def kahan(values: list[float]) -> float:
    """Kahan-Neumaier summation exactly as Prometheus' ``kahanSumInc`` does it."""
    total = 0.0
    comp = 0.0
    for x in values:
        t = total + x
        if math.isinf(t):
            comp = 0.0
        elif abs(total) >= abs(x):
            comp += (total - t) + x
        else:
            comp += (x - t) + total
        total = t
    return total if math.isinf(total) else total + comp


def _reduceat(ufunc: np.ufunc, v: F64, lo: Idx, hi: Idx) -> F64:
    ext = np.append(v, 0.0)
    idx = np.empty(2 * lo.size, dtype=np.intp)
    idx[0::2] = lo.ravel()
    idx[1::2] = hi.ravel()
    with np.errstate(all="ignore"):
        out = ufunc.reduceat(ext, idx)[0::2] if lo.size else np.zeros(0)
    return np.asarray(out, dtype=np.float64).reshape(lo.shape)


def _clip(idx: Idx, n: int) -> Idx:
    return np.clip(idx, 0, max(n - 1, 0))


def _take(source: F64, idx: Idx) -> F64:
    if not len(source):
        return np.zeros(idx.shape)
    return np.asarray(source[_clip(idx, len(source))], dtype=np.float64)


# -- simple reductions -------------------------------------------------------------------


def _count(a: RangeArgs) -> tuple[F64, B]:
    n = (a.hi - a.lo).astype(np.float64)
    return n, n > 0


def _mixed_signs(values: F64) -> bool:
    """Whether sums over ``values`` can cancel (there are both negative and positive values)."""
    return bool(len(values)) and bool(np.fmin.reduce(values) < 0 < np.fmax.reduce(values))


def _sum_exact(a: RangeArgs) -> F64:
    """Window sums; windows where cancellation is possible are redone with Kahan."""
    s = _reduceat(np.add, a.values, a.lo, a.hi)
    if not _mixed_signs(a.values):
        return s
    big = _reduceat(np.maximum, np.abs(a.values), a.lo, a.hi)
    with np.errstate(all="ignore"):
        suspicious = np.isfinite(big) & np.isfinite(s) & (big > 1e6 * np.abs(s)) & (a.hi > a.lo)
    flat_s = s.ravel()
    lo, hi = a.lo.ravel(), a.hi.ravel()
    for i in np.flatnonzero(suspicious.ravel()):
        flat_s[i] = kahan(a.values[lo[i] : hi[i]].tolist())
    return flat_s.reshape(s.shape)


def _sum(a: RangeArgs) -> tuple[F64, B]:
    return _sum_exact(a), a.hi > a.lo


def _avg(a: RangeArgs) -> tuple[F64, B]:
    n = np.maximum(a.hi - a.lo, 1).astype(np.float64)
    with np.errstate(all="ignore"):
        mean = _sum_exact(a) / n
        over = np.isinf(mean) & (a.hi > a.lo)
        if not over.any():
            return mean, a.hi > a.lo
        over &= np.isfinite(_reduceat(np.maximum, np.abs(a.values), a.lo, a.hi))
        flat, lo, hi = mean.ravel(), a.lo.ravel(), a.hi.ravel()
        for i in np.flatnonzero(over.ravel()):
            w = a.values[lo[i] : hi[i]]
            flat[i] = kahan((w / len(w)).tolist())
    return flat.reshape(mean.shape), a.hi > a.lo


def _minmax(ufunc: np.ufunc) -> RangeFn:
    def fn(a: RangeArgs) -> tuple[F64, B]:
        return _reduceat(ufunc, a.values, a.lo, a.hi), a.hi > a.lo

    return fn


def _last(a: RangeArgs) -> tuple[F64, B]:
    return _take(a.values, a.hi - 1), a.hi > a.lo


def _first(a: RangeArgs) -> tuple[F64, B]:
    return _take(a.values, a.lo), a.hi > a.lo


def _ts_of_last(a: RangeArgs) -> tuple[F64, B]:
    return _take(a.ts / 1000.0, a.hi - 1), a.hi > a.lo


def _ts_of_first(a: RangeArgs) -> tuple[F64, B]:
    return _take(a.ts / 1000.0, a.lo), a.hi > a.lo


def _present(a: RangeArgs) -> tuple[F64, B]:
    return np.ones(a.lo.shape), a.hi > a.lo


# -- counters and deltas -----------------------------------------------------------------


def _instant(is_rate: bool) -> RangeFn:
    """``irate``/``idelta``: the last two samples of the window."""

    def fn(a: RangeArgs) -> tuple[F64, B]:
        ok = (a.hi - a.lo) >= 2
        if not len(a.values):
            return np.zeros(a.lo.shape), ok
        li = _clip(a.hi - 1, len(a.values))
        pi = _clip(a.hi - 2, len(a.values))
        last, prev = a.values[li], a.values[pi]
        dt = (a.ts[li] - a.ts[pi]) / 1000.0
        with np.errstate(all="ignore"):
            if is_rate:
                out = np.where(last < prev, last, last - prev) / dt
                ok = ok & (dt != 0)
            else:
                out = last - prev
        return np.asarray(out, dtype=np.float64), ok

    return fn


def _pair_count(flag: Callable[[F64, F64], B]) -> RangeFn:
    """``changes``/``resets``: prefix sums of a flag on consecutive samples."""

    def fn(a: RangeArgs) -> tuple[F64, B]:
        ok = a.hi > a.lo
        if len(a.values) < 2:
            return np.zeros(a.lo.shape), ok
        flags = np.concatenate([[0], flag(a.values[1:], a.values[:-1]).astype(np.int64)])
        c = np.cumsum(flags)
        li = _clip(a.hi - 1, len(a.values))
        fi = _clip(a.lo, len(a.values))
        return (c[li] - c[fi]).astype(np.float64), ok

    return fn


def _changed(cur: F64, prev: F64) -> B:
    return np.asarray(~((cur == prev) | (np.isnan(cur) & np.isnan(prev))), dtype=np.bool_)


def _reset(cur: F64, prev: F64) -> B:
    return np.asarray(cur < prev, dtype=np.bool_)


def _changes_vs(flag: Callable[[F64, F64], B]) -> RangeFn:
    return _pair_count(flag)


RANGE_FUNCTIONS: dict[str, RangeFn] = {
    **WINDOW_FUNCTIONS,
    "rate": extrapolated(True, True),
    "increase": extrapolated(True, False),
    "delta": extrapolated(False, False),
    "irate": _instant(True),
    "idelta": _instant(False),
    "changes": _changes_vs(_changed),
    "resets": _changes_vs(_reset),
    "count_over_time": _count,
    "sum_over_time": _sum,
    "avg_over_time": _avg,
    "min_over_time": _minmax(np.fmin),
    "max_over_time": _minmax(np.fmax),
    "last_over_time": _last,
    "first_over_time": _first,
    "present_over_time": _present,
    "ts_of_last_over_time": _ts_of_last,
    "ts_of_first_over_time": _ts_of_first,
}

_KEEP_NAME = frozenset({"last_over_time", "first_over_time"})


def keeps_name(name: str) -> bool:
    return name in _KEEP_NAME
