"""``histogram_quantile`` and ``histogram_fraction`` over classic ``le`` bucket series."""

from __future__ import annotations

import math

import numpy as np
import promql_parser as pp

from monitoringserver.model.labels import Labels, get, metric_name
from monitoringserver.promql.evaluator import Evaluator
from monitoringserver.promql.values import F64, B, Vector, any_rows

__all__ = ["bucket_quantile", "histogram_fraction", "histogram_quantile"]

_SMALL_DELTA = 1e-12


def _almost_equal(a: float, b: float, eps: float) -> bool:
    if a == b:
        return True
    diff = abs(a - b)
    norm = abs(a) + abs(b)
    min_normal = 2.2250738585072014e-308
    if a == 0 or b == 0 or norm < min_normal:
        return diff < eps * min_normal
    return diff / min(norm, 1.7976931348623157e308) < eps


def _coalesce_monotonic(
    bounds: list[float], counts: list[float]
) -> tuple[list[float], list[float], bool]:
    merged_b: list[float] = []
    merged_c: list[float] = []
    for b, c in zip(bounds, counts, strict=True):
        if merged_b and merged_b[-1] == b:
            merged_c[-1] += c
        else:
            merged_b.append(b)
            merged_c.append(c)
    forced = False
    prev = merged_c[0]
    for i in range(1, len(merged_c)):
        curr = merged_c[i]
        if curr == prev:
            continue
        if _almost_equal(prev, curr, _SMALL_DELTA):
            merged_c[i] = prev
            continue
        if curr < prev:
            merged_c[i] = prev
            forced = True
            continue
        prev = curr
    return merged_b, merged_c, forced


def bucket_quantile(q: float, bounds: list[float], counts: list[float]) -> tuple[float, bool]:
    """Prometheus' ``BucketQuantile``; ``bounds`` sorted ascending. Returns (value, forced)."""
    if math.isnan(q):
        return math.nan, False
    if q < 0:
        return -math.inf, False
    if q > 1:
        return math.inf, False
    if not bounds or not math.isinf(bounds[-1]) or bounds[-1] < 0:
        return math.nan, False
    bounds, counts, forced = _coalesce_monotonic(bounds, counts)
    if len(bounds) < 2:
        return math.nan, forced
    observations = counts[-1]
    if observations == 0 or math.isnan(observations):
        return math.nan, forced
    rank = q * observations
    b = len(bounds) - 1
    for i in range(len(bounds) - 1):
        if counts[i] >= rank:
            b = i
            break
    if b == len(bounds) - 1:
        return bounds[-2], forced
    if b == 0 and bounds[0] <= 0:
        return bounds[0], forced
    start = 0.0
    end = bounds[b]
    count = counts[b]
    if b > 0:
        start = bounds[b - 1]
        count -= counts[b - 1]
        rank -= counts[b - 1]
    return start + (end - start) * (rank / count), forced


def _bucket_groups(
    ev: Evaluator, vec: Vector, arg: pp.Expr
) -> dict[Labels, list[tuple[float, int]]]:
    groups: dict[Labels, list[tuple[float, int]]] = {}
    for i, lbl in enumerate(vec.labels):
        if not vec.present[i].any():
            continue
        raw = get(lbl, "le")
        try:
            le = float(raw.replace("Inf", "inf")) if raw else math.nan
        except ValueError:
            le = math.nan
        if math.isnan(le):
            ev.warn(
                f'bucket label "le" is missing or has a malformed value of "{raw}" for metric '
                f'name "{metric_name(lbl)}"',
                arg,
            )
            continue
        key = tuple(p for p in lbl if p[0] != "le")
        groups.setdefault(key, []).append((le, i))
    return groups


def histogram_quantile(
    ev: Evaluator,
    phis: list[F64],
    vec: Vector,
    arg: pp.Expr,
    node: pp.Expr,
    *,
    label: str | None = None,
) -> Vector:
    """φ-quantiles per bucket group; with ``label`` one output series per φ (labelled)."""
    steps = vec.values.shape[1]
    groups = _bucket_groups(ev, vec, arg)
    for phi in phis:
        bad = phi[(phi < 0) | (phi > 1) | np.isnan(phi)]
        if len(bad):
            ev.warn(f"quantile value should be between 0 and 1, got {_fmt(float(bad[0]))}", node)
    labels: list[Labels] = []
    rows_v: list[F64] = []
    rows_p: list[B] = []
    for key, members in groups.items():
        members.sort()
        bounds = [b for b, _ in members]
        idx = [i for _, i in members]
        vals = vec.values[idx]
        pres = vec.present[idx]
        ok = any_rows(pres)
        for phi in phis:
            out = np.full(steps, np.nan)
            for t in np.flatnonzero(ok):
                sel = pres[:, t]
                value, forced = bucket_quantile(
                    float(phi[t]),
                    [b for b, s in zip(bounds, sel, strict=True) if s],
                    vals[sel, t].tolist(),
                )
                out[t] = value
                if forced:
                    ev.info(
                        "input to histogram_quantile needed to be fixed for monotonicity (see "
                        "https://prometheus.io/docs/prometheus/latest/querying/functions/"
                        f'#histogram_quantile) for metric name "{metric_name(key)}"',
                        arg,
                    )
            if label is None:
                labels.append(key)
            else:
                d = dict(key)
                q = float(phi[0])
                d[label] = repr(q) if math.isfinite(q) else _fmt(q)
                labels.append(tuple(sorted(d.items())))
            rows_v.append(out)
            rows_p.append(ok)
    return _vector(labels, rows_v, rows_p, steps)


def _fmt(v: float) -> str:
    from monitoringserver.promql.aggregations import format_value

    return format_value(v)


def _vector(labels: list[Labels], rows_v: list[F64], rows_p: list[B], steps: int) -> Vector:
    if not labels:
        return Vector.empty(steps)
    return Vector(
        labels,
        np.array(rows_v).reshape(-1, steps),
        np.array(rows_p, dtype=np.bool_).reshape(-1, steps),
        np.ones(len(labels), dtype=np.bool_),
    )


def _bucket_fraction(lower: float, upper: float, bounds: list[float], counts: list[float]) -> float:
    if not bounds or not math.isinf(bounds[-1]):
        return math.nan
    bounds, counts, _ = _coalesce_monotonic(bounds, counts)
    total = counts[-1]
    if total == 0 or math.isnan(lower) or math.isnan(upper):
        return math.nan
    if lower >= upper:
        return 0.0

    def rank_at(x: float) -> float:
        # Observations of an infinitely wide bucket sit at its infinite end: no
        # interpolation there.
        if x == -math.inf:
            return 0.0
        if x == math.inf:
            return total
        prev_bound, prev_count = (0.0 if bounds[0] > 0 else -math.inf), 0.0
        for b, c in zip(bounds, counts, strict=True):
            if x <= b:
                if math.isinf(b):
                    return prev_count
                if math.isinf(prev_bound):
                    return c
                if x <= prev_bound:
                    return prev_count
                return prev_count + (c - prev_count) * (x - prev_bound) / (b - prev_bound)
            prev_bound, prev_count = b, c
        return total

    return (rank_at(upper) - rank_at(lower)) / total


def histogram_fraction(ev: Evaluator, lower: F64, upper: F64, vec: Vector, arg: pp.Expr) -> Vector:
    steps = vec.values.shape[1]
    groups = _bucket_groups(ev, vec, arg)
    labels: list[Labels] = []
    rows_v: list[F64] = []
    rows_p: list[B] = []
    for key, members in groups.items():
        members.sort()
        bounds = [b for b, _ in members]
        idx = [i for _, i in members]
        vals = vec.values[idx]
        pres = vec.present[idx]
        out = np.full(steps, np.nan)
        ok = any_rows(pres)
        for t in np.flatnonzero(ok):
            sel = pres[:, t]
            out[t] = _bucket_fraction(
                float(lower[t]),
                float(upper[t]),
                [b for b, s in zip(bounds, sel, strict=True) if s],
                vals[sel, t].tolist(),
            )
        labels.append(key)
        rows_v.append(out)
        rows_p.append(ok)
    return _vector(labels, rows_v, rows_p, steps)
