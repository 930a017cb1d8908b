"""Gathered windows: range functions that need each window's own values.

The windows of a range vector are gathered into a padded ``[windows, width]`` matrix (in
chunks of at most ``_CHUNK_CELLS`` cells) and reduced along rows: standard deviation,
quantiles, median absolute deviation, linear regression, Holt smoothing and the
timestamps of extremes. :class:`RangeArgs` describes the inputs of every range function.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import ExecutionError
from monitoringserver.promql.values import F64, I64, B

__all__ = ["WINDOW_FUNCTIONS", "Idx", "RangeArgs", "RangeFn"]

Idx = NDArray[np.intp]
#: Upper bound on the cells of one gathered window matrix (memory per chunk).
_CHUNK_CELLS = 2_000_000


@dataclass(slots=True)
class RangeArgs:
    """Inputs of a range function.

    ``ts``/``values``: all samples, series after series. ``lo``/``hi``: ``[series, steps]``
    window bounds into them. ``eff``: window end per step (ms, after ``offset``/``@``);
    ``step_ts``: evaluation timestamps; ``extra``: scalar arguments, one value per step.
    ``starts``: flat index of each series' first sample, when known (lets functions that
    compare neighbours ignore the seam between two series).
    """

    ts: I64
    values: F64
    lo: Idx
    hi: Idx
    eff: I64
    range_ms: int
    step_ts: I64
    extra: list[F64]
    starts: Idx | None = None


RangeFn = Callable[[RangeArgs], tuple[F64, B]]


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


def by_window(fn: Callable[[_Chunk, RangeArgs], F64], min_n: int = 1) -> RangeFn:
    def run(a: RangeArgs) -> tuple[F64, B]:
        ok = (a.hi - a.lo) >= min_n
        out = np.zeros(a.lo.size)
        with np.errstate(all="ignore"):
            for chunk in _windows(a, ok):
                out[chunk.rows] = fn(chunk, a)
        return out.reshape(a.lo.shape), ok

    return run


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
    return by_window(_smooth_rows, 2)(a)


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


WINDOW_FUNCTIONS: dict[str, RangeFn] = {
    "deriv": by_window(_deriv, 2),
    "predict_linear": by_window(_predict_linear, 2),
    "stddev_over_time": by_window(_stddev),
    "stdvar_over_time": by_window(_stdvar),
    "mad_over_time": by_window(_mad),
    "quantile_over_time": by_window(_quantile_over_time),
    "double_exponential_smoothing": _smoothing,
    "holt_winters": _smoothing,
    "ts_of_max_over_time": by_window(_ts_of_extreme(True)),
    "ts_of_min_over_time": by_window(_ts_of_extreme(False)),
}
