"""Functions over range vectors (``rate``, ``*_over_time``, ...).

Each function receives one series and, per step, the half-open sample index window
``[lo, hi)`` plus the window end ``eff`` (ms). Cheap reductions use ``ufunc.reduceat``
and prefix sums so all steps are computed at once; the statistical ones that need each
window's own mean (stddev, quantile, regression, smoothing) run a numpy reduction per
non-empty window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitoringserver.errors import ExecutionError
from monitoringserver.promql.aggregations import quantile
from monitoringserver.promql.values import F64, I64, B

__all__ = ["RANGE_FUNCTIONS", "RangeArgs", "keeps_name"]

Idx = np.ndarray


@dataclass(slots=True)
class RangeArgs:
    """Inputs of a range function for one series at every step.

    ``ts``/``values`` are the series' samples; ``lo``/``hi`` index each step's window;
    ``eff`` is the window end (ms, after ``offset``/``@``); ``step_ts`` the evaluation
    timestamps; ``extra`` the scalar arguments, one value per step.
    """

    ts: I64
    values: F64
    lo: Idx
    hi: Idx
    eff: I64
    range_ms: int
    step_ts: I64
    extra: list[F64]


RangeFn = Callable[[RangeArgs], tuple[F64, B]]


def _reduceat(ufunc: np.ufunc, v: F64, lo: Idx, hi: Idx) -> F64:
    ext = np.append(v, 0.0)
    idx = np.empty(2 * len(lo), dtype=np.intp)
    idx[0::2] = lo
    idx[1::2] = hi
    with np.errstate(all="ignore"):
        return np.asarray(ufunc.reduceat(ext, idx)[0::2], dtype=np.float64)


def _count(a: RangeArgs) -> tuple[F64, B]:
    n = (a.hi - a.lo).astype(np.float64)
    return n, n > 0


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


def _sum_exact(a: RangeArgs) -> F64:
    """Window sums; windows where cancellation is possible are redone with Kahan."""
    s = _reduceat(np.add, a.values, a.lo, a.hi)
    big = _reduceat(np.maximum, np.abs(a.values), a.lo, a.hi)
    with np.errstate(all="ignore"):
        suspicious = np.isfinite(big) & np.isfinite(s) & (big > 1e6 * np.abs(s))
    for t in np.flatnonzero(suspicious & (a.hi > a.lo)):
        s[t] = kahan(a.values[a.lo[t] : a.hi[t]].tolist())
    return s


def _sum(a: RangeArgs) -> tuple[F64, B]:
    return _sum_exact(a), a.hi > a.lo


def _avg(a: RangeArgs) -> tuple[F64, B]:
    n = np.maximum(a.hi - a.lo, 1).astype(np.float64)
    with np.errstate(all="ignore"):
        mean = _sum_exact(a) / n
        over = np.isinf(mean) & np.isfinite(_reduceat(np.maximum, np.abs(a.values), a.lo, a.hi))
        for t in np.flatnonzero(over & (a.hi > a.lo)):
            w = a.values[a.lo[t] : a.hi[t]]
            mean[t] = kahan((w / len(w)).tolist())
    return mean, a.hi > a.lo


def _minmax(ufunc: np.ufunc) -> RangeFn:
    def fn(a: RangeArgs) -> tuple[F64, B]:
        return _reduceat(ufunc, a.values, a.lo, a.hi), a.hi > a.lo

    return fn


def _at(a: RangeArgs, idx: Idx, ok: B, source: F64) -> tuple[F64, B]:
    out = source[np.clip(idx, 0, max(len(source) - 1, 0))] if len(source) else np.zeros(len(idx))
    return np.asarray(out, dtype=np.float64), ok


def _last(a: RangeArgs) -> tuple[F64, B]:
    return _at(a, a.hi - 1, a.hi > a.lo, a.values)


def _first(a: RangeArgs) -> tuple[F64, B]:
    return _at(a, a.lo, a.hi > a.lo, a.values)


def _ts_of_last(a: RangeArgs) -> tuple[F64, B]:
    return _at(a, a.hi - 1, a.hi > a.lo, a.ts / 1000.0)


def _ts_of_first(a: RangeArgs) -> tuple[F64, B]:
    return _at(a, a.lo, a.hi > a.lo, a.ts / 1000.0)


def _present(a: RangeArgs) -> tuple[F64, B]:
    return np.ones(len(a.lo)), a.hi > a.lo


def _per_window(fn: Callable[[I64, F64, int], float], min_n: int = 1) -> RangeFn:
    def run(a: RangeArgs) -> tuple[F64, B]:
        out = np.zeros(len(a.lo))
        ok = (a.hi - a.lo) >= min_n
        with np.errstate(all="ignore"):
            for t in np.flatnonzero(ok):
                out[t] = fn(a.ts[a.lo[t] : a.hi[t]], a.values[a.lo[t] : a.hi[t]], int(t))
        return out, ok

    return run


def _variance(v: F64) -> float:
    mean = kahan(v.tolist()) / len(v)
    if not math.isfinite(mean):
        return math.nan
    return kahan(((v - mean) ** 2).tolist()) / len(v)


def _ts_of_extreme(pick_max: bool) -> RangeFn:
    def fn(ts: I64, v: F64, _t: int) -> float:
        mask = ~np.isnan(v)
        if not mask.any():
            return float(ts[-1]) / 1000.0
        best = np.max(v[mask]) if pick_max else np.min(v[mask])
        hits = np.flatnonzero(mask & (v == best))
        return float(ts[hits[-1]]) / 1000.0

    return _per_window(fn)


def _mad(ts: I64, v: F64, _t: int) -> float:
    if np.isnan(v).any():
        return math.nan
    med = quantile(0.5, v)
    return quantile(0.5, np.abs(v - med))


def _extrapolated(is_counter: bool, is_rate: bool) -> RangeFn:
    def fn(a: RangeArgs) -> tuple[F64, B]:
        n = a.hi - a.lo
        ok = n >= 2
        if not len(a.values):
            return np.zeros(len(a.lo)), ok
        first_i = np.clip(a.lo, 0, len(a.values) - 1)
        last_i = np.clip(a.hi - 1, 0, len(a.values) - 1)
        v0, v1 = a.values[first_i], a.values[last_i]
        t0, t1 = a.ts[first_i], a.ts[last_i]
        with np.errstate(all="ignore"):
            result = v1 - v0
            if is_counter:
                prev = np.concatenate([[0.0], a.values[:-1]])
                resets = np.where(a.values < prev, prev, 0.0)
                resets[0] = 0.0
                csum = np.cumsum(resets)
                result = result + (csum[last_i] - csum[first_i])
            range_start = a.eff - a.range_ms
            to_start = (t0 - range_start) / 1000.0
            to_end = (a.eff - t1) / 1000.0
            sampled = (t1 - t0) / 1000.0
            avg_gap = sampled / np.maximum(n - 1, 1)
            threshold = avg_gap * 1.1
            to_start = np.where(to_start >= threshold, avg_gap / 2, to_start)
            if is_counter:
                to_zero = np.where((result > 0) & (v0 >= 0), sampled * (v0 / result), to_start)
                to_start = np.minimum(to_start, to_zero)
            to_end = np.where(to_end >= threshold, avg_gap / 2, to_end)
            factor = (sampled + to_start + to_end) / sampled
            if is_rate:
                factor = factor / (a.range_ms / 1000.0)
            out = np.asarray(result * factor, dtype=np.float64)
        return out, ok

    return fn


def _instant(is_rate: bool) -> RangeFn:
    def fn(a: RangeArgs) -> tuple[F64, B]:
        ok = (a.hi - a.lo) >= 2
        if not len(a.values):
            return np.zeros(len(a.lo)), ok
        li = np.clip(a.hi - 1, 0, len(a.values) - 1)
        pi = np.clip(a.hi - 2, 0, len(a.values) - 1)
        last, prev = a.values[li], a.values[pi]
        dt = (a.ts[li] - a.ts[pi]) / 1000.0
        with np.errstate(all="ignore"):
            if is_rate:
                diff = np.where(last < prev, last, last - prev)
                out = diff / dt
                ok = ok & (dt != 0)
            else:
                out = last - prev
        return np.asarray(out, dtype=np.float64), ok

    return fn


def _pair_count(flag: Callable[[F64, F64], B]) -> RangeFn:
    def fn(a: RangeArgs) -> tuple[F64, B]:
        ok = a.hi > a.lo
        if len(a.values) < 2:
            return np.zeros(len(a.lo)), ok
        flags = np.concatenate([[0], flag(a.values[1:], a.values[:-1]).astype(np.int64)])
        c = np.cumsum(flags)
        li = np.clip(a.hi - 1, 0, len(a.values) - 1)
        fi = np.clip(a.lo, 0, len(a.values) - 1)
        return (c[li] - c[fi]).astype(np.float64), ok

    return fn


def _changed(cur: F64, prev: F64) -> B:
    return np.asarray(~((cur == prev) | (np.isnan(cur) & np.isnan(prev))), dtype=np.bool_)


def _reset(cur: F64, prev: F64) -> B:
    return np.asarray(cur < prev, dtype=np.bool_)


def _regression(ts: I64, v: F64, intercept_ms: int) -> tuple[float, float]:
    if (v == v[0]).all():
        if math.isinf(v[0]):
            return math.nan, math.nan
        return 0.0, float(v[0])
    x = (ts - intercept_ms) / 1e3
    n = float(len(v))
    sx = kahan(x.tolist())
    sy = kahan(v.tolist())
    sxy = kahan((x * v).tolist())
    sx2 = kahan((x * x).tolist())
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var if var != 0 else math.nan
    return slope, sy / n - slope * sx / n


def _deriv(a: RangeArgs) -> tuple[F64, B]:
    return _per_window(lambda ts, v, _t: _regression(ts, v, int(ts[0]))[0], 2)(a)


def _predict_linear(a: RangeArgs) -> tuple[F64, B]:
    horizon = a.extra[0]

    def fn(ts: I64, v: F64, t: int) -> float:
        slope, intercept = _regression(ts, v, int(a.step_ts[t]))
        return slope * float(horizon[t]) + intercept

    return _per_window(fn, 2)(a)


def _quantile_over_time(a: RangeArgs) -> tuple[F64, B]:
    phi = a.extra[0]
    return _per_window(lambda _ts, v, t: quantile(float(phi[t]), v))(a)


def _smoothing(a: RangeArgs) -> tuple[F64, B]:
    sf, tf = a.extra
    for name, arr in (("smoothing", sf), ("trend", tf)):
        bad = arr[~((arr > 0) & (arr < 1))]
        if len(bad):
            raise ExecutionError(
                f"invalid {name} factor. Expected: 0 < sf < 1, got: {float(bad[0]):f}"
                if name == "smoothing"
                else f"invalid trend factor. Expected: 0 < tf < 1, got: {float(bad[0]):f}"
            )

    def fn(_ts: I64, v: F64, t: int) -> float:
        s_f, t_f = float(sf[t]), float(tf[t])
        s0, s1 = 0.0, float(v[0])
        b = float(v[1] - v[0])
        for i in range(1, len(v)):
            if i > 1:
                b = t_f * (s1 - s0) + (1 - t_f) * b
            x = s_f * float(v[i])
            s0, s1 = s1, x + (1 - s_f) * (s1 + b)
        return s1

    return _per_window(fn, 2)(a)


RANGE_FUNCTIONS: dict[str, RangeFn] = {
    "rate": _extrapolated(True, True),
    "increase": _extrapolated(True, False),
    "delta": _extrapolated(False, False),
    "irate": _instant(True),
    "idelta": _instant(False),
    "deriv": _deriv,
    "predict_linear": _predict_linear,
    "changes": _pair_count(_changed),
    "resets": _pair_count(_reset),
    "count_over_time": _count,
    "sum_over_time": _sum,
    "avg_over_time": _avg,
    "min_over_time": _minmax(np.fmin),
    "max_over_time": _minmax(np.fmax),
    "last_over_time": _last,
    "first_over_time": _first,
    "present_over_time": _present,
    "stddev_over_time": _per_window(lambda _ts, v, _t: math.sqrt(_variance(v))),
    "stdvar_over_time": _per_window(lambda _ts, v, _t: _variance(v)),
    "mad_over_time": _per_window(_mad),
    "quantile_over_time": _quantile_over_time,
    "double_exponential_smoothing": _smoothing,
    "holt_winters": _smoothing,
    "ts_of_last_over_time": _ts_of_last,
    "ts_of_first_over_time": _ts_of_first,
    "ts_of_max_over_time": _ts_of_extreme(True),
    "ts_of_min_over_time": _ts_of_extreme(False),
}

_KEEP_NAME = frozenset({"last_over_time", "first_over_time"})


def keeps_name(name: str) -> bool:
    return name in _KEEP_NAME
