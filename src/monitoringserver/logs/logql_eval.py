"""Evaluate LogQL metric expressions over a :class:`LogQuerier`.

``f(selector[r])`` at time ``t`` covers lines with ``t - r < ts <= t`` (Loki's window).
Lines are counted inside DuckDB in buckets of ``gcd(step, r)`` milliseconds aligned so
that every window is a whole number of buckets; windows are then sliding sums over
the bucket counts (numpy). Points whose window holds no line are omitted, as in Loki.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import QueryLimitError
from monitoringserver.logs.api import COLUMN_LABELS, LogQuerier
from monitoringserver.logs.logql import MetricExpr

__all__ = ["MAX_POINTS", "MetricSeries", "evaluate_metric"]

#: Upper bound on buckets per series and on output points per series.
MAX_POINTS = 200_000


@dataclass(frozen=True, slots=True)
class MetricSeries:
    labels: dict[str, str]
    ts_ms: list[int]
    values: list[float]


def _inner_labels(expr: MetricExpr) -> list[str]:
    names = list(COLUMN_LABELS)
    for m in expr.selector.matchers:
        if m.name not in names:
            names.append(m.name)
    if expr.agg is not None and not expr.without:
        names += [g for g in expr.grouping if g not in names]
    return names


def evaluate_metric(
    querier: LogQuerier, expr: MetricExpr, start_ms: int, end_ms: int, step_ms: int
) -> list[MetricSeries]:
    """Series of the expression at ``start, start + step, ... <= end`` (ms)."""
    step = max(1, step_ms)
    rng = expr.range_ms
    steps = (end_ms - start_ms) // step + 1
    if steps > MAX_POINTS or steps <= 0:
        raise QueryLimitError(f"cannot evaluate {expr.func}: {steps} points (limit {MAX_POINTS})")
    g = math.gcd(step, rng)
    origin = start_ms - rng + 1
    nb = (end_ms - origin) // g + 2
    if nb > MAX_POINTS * 4:
        g = step  # coarser buckets: windows are approximated to whole steps
        origin = start_ms - (rng // step) * step + 1
        nb = (end_ms - origin) // g + 2
    query = expr.selector.to_query(origin, end_ms, limit=1)
    rows = querier.count_series(query, g, _inner_labels(expr))
    use_bytes = expr.func in ("bytes_over_time", "bytes_rate")
    per_second = expr.func in ("rate", "bytes_rate")
    k = np.arange(steps, dtype=np.int64)
    lo = np.maximum((k * step + (start_ms - rng + 1 - origin)) // g, 0)
    hi = lo + max(1, rng // g)
    series: list[tuple[dict[str, str], NDArray[np.float64], NDArray[np.bool_]]] = []
    for sc in rows:
        idx = (np.asarray(sc.ts_ms, dtype=np.int64) - origin) // g
        dense = np.zeros(nb + 1, dtype=np.float64)
        lines = np.zeros(nb + 1, dtype=np.float64)
        np.add.at(dense, idx, np.asarray(sc.bytes if use_bytes else sc.lines, dtype=np.float64))
        np.add.at(lines, idx, np.asarray(sc.lines, dtype=np.float64))
        csum = np.concatenate([[0.0], np.cumsum(dense)])
        lsum = np.concatenate([[0.0], np.cumsum(lines)])
        hi_c = np.minimum(hi, len(csum) - 1)
        values = csum[hi_c] - csum[lo]
        present = (lsum[hi_c] - lsum[lo]) > 0
        if per_second:
            values = values / (rng / 1000.0)
        series.append((sc.labels, values, present))
    ts = (start_ms + k * step).tolist()
    if expr.agg is None:
        return [_emit(lbl, ts, v, p) for lbl, v, p in series if p.any()]
    return _aggregate(expr, series, ts)


def _emit(
    labels: dict[str, str], ts: list[int], values: NDArray[np.float64], present: NDArray[np.bool_]
) -> MetricSeries:
    sel = np.flatnonzero(present)
    return MetricSeries(labels, [ts[i] for i in sel.tolist()], values[sel].tolist())


def _aggregate(
    expr: MetricExpr,
    series: Sequence[tuple[dict[str, str], NDArray[np.float64], NDArray[np.bool_]]],
    ts: list[int],
) -> list[MetricSeries]:
    groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
    for i, (labels, _, _) in enumerate(series):
        if expr.without:
            key = tuple(sorted((k, v) for k, v in labels.items() if k not in expr.grouping))
        else:
            key = tuple(sorted((k, v) for k, v in labels.items() if k in expr.grouping))
        groups.setdefault(key, []).append(i)
    out: list[MetricSeries] = []
    for key, members in groups.items():
        vals = np.stack([series[i][1] for i in members])
        pres = np.stack([series[i][2] for i in members])
        count = pres.sum(axis=0)
        masked = np.where(pres, vals, np.nan)
        with np.errstate(all="ignore"):
            if expr.agg == "sum":
                agg = np.nansum(masked, axis=0)
            elif expr.agg == "count":
                agg = count.astype(np.float64)
            elif expr.agg == "avg":
                agg = np.nansum(masked, axis=0) / np.maximum(count, 1)
            elif expr.agg == "min":
                agg = np.nanmin(np.where(pres, vals, np.inf), axis=0)
            else:
                agg = np.nanmax(np.where(pres, vals, -np.inf), axis=0)
        present = count > 0
        if present.any():
            out.append(_emit(dict(key), ts, agg, present))
    out.sort(key=lambda s: sorted(s.labels.items()))
    return out
