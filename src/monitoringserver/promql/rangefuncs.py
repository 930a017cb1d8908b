"""Functions over range vectors (``rate``, ``*_over_time``, ...), all series and steps at once.

A function receives every series of the matrix concatenated into flat ``ts``/``values``
arrays and, per ``(series, step)``, the window ``[lo, hi)`` into them. Cheap reductions
are ``ufunc.reduceat`` or prefix sums over the flat arrays; the statistical functions
(stddev, quantile, regression, smoothing) gather the windows into a padded
``[windows, width]`` matrix, in bounded chunks, and reduce along its rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import ExecutionError
from monitoringserver.promql.values import F64, I64, B

__all__ = ["RANGE_FUNCTIONS", "RangeArgs", "kahan", "keeps_name"]

Idx = NDArray[np.intp]
#: Upper bound on the cells of one gathered window matrix (memory per chunk).
_CHUNK_CELLS = 2_000_000


@dataclass(slots=True)
class RangeArgs:
    """Inputs of a range function.

    ``ts``/``values``: all samples, series after series. ``lo``/``hi``: ``[series, steps]``
    window bounds into them. ``eff``: window end per step (ms, after ``offset``/``@``);
    ``step_ts``: evaluation timestamps; ``extra``: scalar arguments, one value per step.
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


@dataclass(slots=True)
class _Chunk:
    """Gathered windows: ``rows`` are flat (series*steps) indices, ``steps`` their step."""

    rows: Idx
    steps: Idx
    values: F64
    ts: F64
    mask: B
    n: NDArray[np.int64]


def _windows(a: RangeArgs, ok: B) -> Iterator[_Chunk]:
    """The non-empty windows selected by ``ok``, as padded matrices in bounded chunks."""
    rows = np.flatnonzero(ok.ravel())
    if not len(rows):
        return
    lo = a.lo.ravel()[rows]
    n = (a.hi.ravel()[rows] - lo).astype(np.int64)
    width = int(n.max())
    per_chunk = max(1, _CHUNK_CELLS // max(width, 1))
    cols = np.arange(width)
    steps = a.lo.shape[1]
    for start in range(0, len(rows), per_chunk):
        sl = slice(start, start + per_chunk)
        idx = lo[sl, None] + cols[None, :]
        mask = cols[None, :] < n[sl, None]
        idx = np.where(mask, idx, lo[sl, None])
        yield _Chunk(
            rows[sl],
            rows[sl] % steps,
            a.values[idx],
            a.ts[idx].astype(np.float64),
            mask,
            n[sl],
        )


def _by_window(fn: Callable[[_Chunk, RangeArgs], F64], min_n: int = 1) -> RangeFn:
    def run(a: RangeArgs) -> tuple[F64, B]:
        ok = (a.hi - a.lo) >= min_n
        out = np.zeros(a.lo.size)
        with np.errstate(all="ignore"):
            for chunk in _windows(a, ok):
                out[chunk.rows] = fn(chunk, a)
        return out.reshape(a.lo.shape), ok

    return run


# -- simple reductions -------------------------------------------------------------------


def _count(a: RangeArgs) -> tuple[F64, B]:
    n = (a.hi - a.lo).astype(np.float64)
    return n, n > 0


def _sum_exact(a: RangeArgs) -> F64:
    """Window sums; windows where cancellation is possible are redone with Kahan."""
    s = _reduceat(np.add, a.values, a.lo, a.hi)
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
        finite = np.isfinite(_reduceat(np.maximum, np.abs(a.values), a.lo, a.hi))
        over = np.isinf(mean) & finite & (a.hi > a.lo)
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


def _extrapolated(is_counter: bool, is_rate: bool) -> RangeFn:
    """``rate``/``increase``/``delta``: Prometheus' extrapolation to the window edges."""

    def fn(a: RangeArgs) -> tuple[F64, B]:
        n = a.hi - a.lo
        ok = n >= 2
        if not len(a.values):
            return np.zeros(a.lo.shape), ok
        first_i = _clip(a.lo, len(a.values))
        last_i = _clip(a.hi - 1, len(a.values))
        v0, v1 = a.values[first_i], a.values[last_i]
        t0, t1 = a.ts[first_i], a.ts[last_i]
        with np.errstate(all="ignore"):
            result = v1 - v0
            if is_counter:
                result = result + _reset_correction(a.values, first_i, last_i)
            to_start = (t0 - (a.eff - a.range_ms)) / 1000.0
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


def _reset_correction(values: F64, first: Idx, last: Idx) -> F64:
    """Per window, the sum of the values just before each counter reset inside it.

    A reset at index ``k`` (``values[k] < values[k-1]``) belongs to windows with
    ``first < k <= last``; windows never span two series, so a "reset" between the last
    sample of one series and the first of the next is never counted.
    """
    drops = np.flatnonzero(values[1:] < values[:-1]) + 1
    if not len(drops):
        return np.zeros(first.shape)
    cum = np.concatenate([[0.0], np.cumsum(values[drops - 1])])
    k1 = np.searchsorted(drops, first, side="right")
    k2 = np.searchsorted(drops, last, side="right")
    return np.asarray(cum[k2] - cum[k1], dtype=np.float64)


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


# -- statistics over gathered windows -----------------------------------------------------


def _mean_var(c: _Chunk) -> tuple[F64, F64]:
    v = np.where(c.mask, c.values, 0.0)
    mean = v.sum(axis=1) / c.n
    dev = np.where(c.mask, (c.values - mean[:, None]) ** 2, 0.0)
    var = dev.sum(axis=1) / c.n
    return mean, np.where(np.isfinite(mean), var, np.nan)


def _stdvar(c: _Chunk, _a: RangeArgs) -> F64:
    return _mean_var(c)[1]


def _stddev(c: _Chunk, _a: RangeArgs) -> F64:
    return np.asarray(np.sqrt(_mean_var(c)[1]), dtype=np.float64)


def _sorted_rows(values: F64, mask: B) -> F64:
    """Rows sorted ascending with padding last; rows holding NaN are handled by the caller."""
    return np.sort(np.where(mask, values, np.inf), axis=1)


def _row_quantile(q: F64, srt: F64, n: NDArray[np.int64]) -> F64:
    """Prometheus' ``quantile`` on sorted rows: linear interpolation between ranks."""
    rank = np.clip(q, 0, 1) * (n - 1)
    lower = np.maximum(0, np.floor(rank)).astype(np.intp)
    upper = np.minimum(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    rows = np.arange(len(n))
    out = srt[rows, lower] * (1 - weight) + srt[rows, upper] * weight
    out = np.where(q < 0, -np.inf, np.where(q > 1, np.inf, out))
    return np.asarray(np.where(np.isnan(q), np.nan, out), dtype=np.float64)


def _nan_rows_quantile(q: F64, c: _Chunk) -> F64:
    """Go sorts NaN first; emulate that for rows containing NaN."""
    srt = _sorted_rows(c.values, c.mask)
    has_nan = np.asarray((np.isnan(c.values) & c.mask).any(axis=1), dtype=np.bool_)
    if has_nan.any():
        rows = np.flatnonzero(has_nan)
        vals, mask = c.values[rows], c.mask[rows]
        key = np.where(mask, np.where(np.isnan(vals), -np.inf, vals), np.inf)
        order = np.argsort(key, axis=1, kind="stable")
        srt[rows] = np.take_along_axis(np.where(mask, vals, np.inf), order, axis=1)
    return _row_quantile(q, srt, c.n)


def _quantile_over_time(c: _Chunk, a: RangeArgs) -> F64:
    return _nan_rows_quantile(a.extra[0][c.steps], c)


def _mad(c: _Chunk, _a: RangeArgs) -> F64:
    half = np.full(len(c.n), 0.5)
    med = _row_quantile(half, _sorted_rows(c.values, c.mask), c.n)
    dev = np.abs(c.values - med[:, None])
    out = _row_quantile(half, _sorted_rows(dev, c.mask), c.n)
    has_nan = (np.isnan(c.values) & c.mask).any(axis=1)
    return np.asarray(np.where(has_nan, np.nan, out), dtype=np.float64)


def _regression(c: _Chunk, intercept_ms: F64) -> tuple[F64, F64]:
    """Least-squares slope and intercept per row, x in seconds from ``intercept_ms``."""
    x = (c.ts - intercept_ms[:, None]) / 1e3
    y = c.values
    m = c.mask
    n = c.n.astype(np.float64)
    sx = np.where(m, x, 0).sum(axis=1)
    sy = np.where(m, y, 0).sum(axis=1)
    sxy = np.where(m, x * y, 0).sum(axis=1)
    sx2 = np.where(m, x * x, 0).sum(axis=1)
    cov = sxy - sx * sy / n
    var = sx2 - sx * sx / n
    slope = cov / var
    intercept = sy / n - slope * sx / n
    first = y[:, 0]
    const = (np.where(m, y == first[:, None], True)).all(axis=1)
    slope = np.where(const, np.where(np.isinf(first), np.nan, 0.0), slope)
    intercept = np.where(const, np.where(np.isinf(first), np.nan, first), intercept)
    return np.asarray(slope, np.float64), np.asarray(intercept, np.float64)


def _deriv(c: _Chunk, _a: RangeArgs) -> F64:
    return _regression(c, c.ts[:, 0])[0]


def _predict_linear(c: _Chunk, a: RangeArgs) -> F64:
    slope, intercept = _regression(c, a.step_ts[c.steps].astype(np.float64))
    return np.asarray(slope * a.extra[0][c.steps] + intercept, dtype=np.float64)


def _ts_of_extreme(pick_max: bool) -> Callable[[_Chunk, RangeArgs], F64]:
    def fn(c: _Chunk, _a: RangeArgs) -> F64:
        valid = c.mask & ~np.isnan(c.values)
        fill = -np.inf if pick_max else np.inf
        v = np.where(valid, c.values, fill)
        best = v.max(axis=1) if pick_max else v.min(axis=1)
        hit = valid & (v == best[:, None])
        width = hit.shape[1]
        last_hit = width - 1 - np.argmax(hit[:, ::-1], axis=1)
        last_sample = c.n - 1
        pick = np.where(hit.any(axis=1), last_hit, last_sample)
        return np.asarray(c.ts[np.arange(len(pick)), pick] / 1000.0, dtype=np.float64)

    return fn


def _smoothing(a: RangeArgs) -> tuple[F64, B]:
    sf, tf = a.extra
    for name, arr in (("smoothing", sf), ("trend", tf)):
        bad = arr[~((arr > 0) & (arr < 1))]
        if len(bad):
            short = "sf" if name == "smoothing" else "tf"
            raise ExecutionError(
                f"invalid {name} factor. Expected: 0 < {short} < 1, got: {float(bad[0]):f}"
            )
    return _by_window(_smooth_rows, 2)(a)


def _smooth_rows(c: _Chunk, a: RangeArgs) -> F64:
    """Holt's double exponential smoothing, advancing all windows one column at a time."""
    s_f = a.extra[0][c.steps]
    t_f = a.extra[1][c.steps]
    v = c.values
    s0 = np.zeros(len(c.n))
    s1 = v[:, 0].copy()
    b = v[:, 1] - v[:, 0]
    for i in range(1, v.shape[1]):
        live = c.mask[:, i]
        b_new = t_f * (s1 - s0) + (1 - t_f) * b if i > 1 else b
        s_new = s_f * v[:, i] + (1 - s_f) * (s1 + b_new)
        b = np.where(live, b_new, b)
        s0 = np.where(live, s1, s0)
        s1 = np.where(live, s_new, s1)
    return s1


def _changes_vs(flag: Callable[[F64, F64], B]) -> RangeFn:
    return _pair_count(flag)


RANGE_FUNCTIONS: dict[str, RangeFn] = {
    "rate": _extrapolated(True, True),
    "increase": _extrapolated(True, False),
    "delta": _extrapolated(False, False),
    "irate": _instant(True),
    "idelta": _instant(False),
    "deriv": _by_window(_deriv, 2),
    "predict_linear": _by_window(_predict_linear, 2),
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
    "stddev_over_time": _by_window(_stddev),
    "stdvar_over_time": _by_window(_stdvar),
    "mad_over_time": _by_window(_mad),
    "quantile_over_time": _by_window(_quantile_over_time),
    "double_exponential_smoothing": _smoothing,
    "holt_winters": _smoothing,
    "ts_of_last_over_time": _ts_of_last,
    "ts_of_first_over_time": _ts_of_first,
    "ts_of_max_over_time": _by_window(_ts_of_extreme(True)),
    "ts_of_min_over_time": _by_window(_ts_of_extreme(False)),
}

_KEEP_NAME = frozenset({"last_over_time", "first_over_time"})


def keeps_name(name: str) -> bool:
    return name in _KEEP_NAME
