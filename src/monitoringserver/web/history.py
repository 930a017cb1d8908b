"""Seed-002 history: ``GET /api/v1/metrics?server_id=&metric_type=&start_time=&end_time=&step=``.

Every parameter is optional. ``server_id`` and ``metric_type`` take comma lists;
``metric_type`` matches the flattened metric name. ``start_time`` / ``end_time`` are
RFC 3339 or epoch seconds / milliseconds; the range defaults to the hour before
``end_time`` (default now). Without ``step`` the raw samples are returned; with ``step``
(``30s``, ``5m``, ``1h``, ``1d`` or plain seconds) each series is averaged per step bucket
(buckets aligned to multiples of the step since the epoch), read from the resolution
:func:`choose_resolution` picks unless ``resolution=raw|5m|1h`` is given.
Only series that carry a ``server_id`` label (seed-002 data) are returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, QueryLimitError
from monitoringserver.metrics.api import MetricQuerier, Resolution, choose_resolution
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.util.timestamps import parse_timestamp_ms
from monitoringserver.web.options import LimitsOptions

__all__ = ["HistoryQuery", "parse_duration_ms", "parse_history_query", "run_history_query"]

_HOUR_MS = 3_600_000
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)?")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PARAMS = frozenset({"server_id", "metric_type", "start_time", "end_time", "step", "resolution"})


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    server_ids: tuple[str, ...]
    metrics: tuple[str, ...]
    start_ms: int
    end_ms: int
    step_ms: int | None
    resolution: Resolution | None

    def matchers(self) -> list[Matcher]:
        out = [
            _list_matcher("server_id", self.server_ids) or Matcher("server_id", MatchOp.RE, ".+")
        ]
        metric = _list_matcher(METRIC_NAME, self.metrics)
        if metric is not None:
            out.append(metric)
        return out


def _list_matcher(name: str, values: tuple[str, ...]) -> Matcher | None:
    if not values:
        return None
    if len(values) == 1:
        return Matcher(name, MatchOp.EQ, values[0])
    return Matcher(name, MatchOp.RE, "|".join(re.escape(v) for v in values))


def parse_duration_ms(text: str) -> int:
    """``30s``, ``5m``, ``1h``, ``1d``, ``1w``, ``250ms`` or plain seconds → milliseconds (> 0)."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m is None:
        raise BadDataError(f"cannot parse duration {text!r}: expected e.g. 30s, 5m, 1h or seconds")
    value = float(m.group(1)) * _UNIT_MS[m.group(2) or "s"]
    if value < 1:
        raise BadDataError(f"cannot parse duration {text!r}: must be positive")
    return int(value)


def _csv(params: Mapping[str, str], name: str) -> tuple[str, ...]:
    raw = params.get(name, "")
    return tuple(dict.fromkeys(v.strip() for v in raw.split(",") if v.strip()))


def _time(params: Mapping[str, str], name: str, now_ms: int) -> int | None:
    raw = params.get(name, "").strip()
    if not raw:
        return None
    try:
        return parse_timestamp_ms(raw, now_ms=now_ms)
    except (TypeError, ValueError) as exc:
        raise BadDataError(f"cannot parse query parameter {name}: {exc}") from exc


def parse_history_query(params: Mapping[str, str], *, now_ms: int) -> HistoryQuery:
    """Validate query parameters; unknown parameters are refused (typos should not pass)."""
    unknown = sorted(set(params) - _PARAMS)
    if unknown:
        raise BadDataError(
            f"cannot parse query: unknown parameter {unknown[0]!r} "
            f"(accepted: {', '.join(sorted(_PARAMS))})"
        )
    end = _time(params, "end_time", now_ms)
    end_ms = now_ms if end is None else end
    start = _time(params, "start_time", now_ms)
    start_ms = end_ms - _HOUR_MS if start is None else start
    if start_ms > end_ms:
        raise BadDataError("cannot parse query: start_time is after end_time")
    step_raw = params.get("step", "").strip()
    step_ms = parse_duration_ms(step_raw) if step_raw else None
    res_raw = params.get("resolution", "").strip()
    resolution: Resolution | None = None
    if res_raw and res_raw != "auto":
        try:
            resolution = Resolution(res_raw)
        except ValueError:
            raise BadDataError(
                f"cannot parse query parameter resolution: {res_raw!r} is not raw, 5m, 1h or auto"
            ) from None
    return HistoryQuery(
        server_ids=_csv(params, "server_id"),
        metrics=_csv(params, "metric_type"),
        start_ms=start_ms,
        end_ms=end_ms,
        step_ms=step_ms,
        resolution=resolution,
    )


def _bucket_avg(
    ts: NDArray[np.int64], sums: NDArray[np.float64], counts: NDArray[np.float64], step_ms: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Average per step bucket: ``sum(sums) / sum(counts)`` over buckets ``floor(ts/step)``."""
    buckets = ts // step_ms
    uniq, inverse = np.unique(buckets, return_inverse=True)
    total = np.bincount(inverse, weights=sums, minlength=len(uniq))
    count = np.bincount(inverse, weights=counts, minlength=len(uniq))
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = total / count
    return uniq * step_ms, avg


def _entry(labels: Labels, ts: NDArray[np.int64], values: NDArray[np.float64]) -> dict[str, object]:
    rest = {k: v for k, v in labels if k not in (METRIC_NAME, "server_id")}
    points = np.column_stack((ts / 1000.0, values)).tolist() if len(ts) else []
    return {
        "server_id": dict(labels).get("server_id", ""),
        "metric": dict(labels).get(METRIC_NAME, ""),
        "labels": rest,
        "points": points,
    }


def run_history_query(
    querier: MetricQuerier, query: HistoryQuery, limits: LimitsOptions
) -> list[dict[str, object]]:
    """Series with ``points = [[ts_seconds, value], ...]`` sorted by server, metric, labels.

    Synchronous (call it in a worker thread). Raises ``QueryLimitError`` over the limits.
    """
    matchers = query.matchers()
    step = query.step_ms
    resolution = query.resolution
    if resolution is None:
        resolution = choose_resolution(step) if step else Resolution.RAW
    out: list[tuple[Labels, NDArray[np.int64], NDArray[np.float64]]] = []
    if resolution is Resolution.RAW:
        raw = querier.select(matchers, query.start_ms, query.end_ms)
        _check_series(len(raw), limits)
        for s in raw:
            live = ~is_stale_nan(s.values)  # staleness markers are not samples
            ts, vals = s.ts_ms[live], s.values[live]
            if step:
                ts, vals = _bucket_avg(ts, vals, np.ones(len(ts)), step)
            if len(ts):
                out.append((s.labels, ts, vals))
    else:
        rolled = querier.select_rollup(matchers, query.start_ms, query.end_ms, resolution)
        _check_series(len(rolled), limits)
        for r in rolled:
            bucket = step or resolution.step_ms
            ts, vals = _bucket_avg(r.ts_ms, r.sum, r.count.astype(np.float64), bucket)
            out.append((r.labels, ts, vals))
    points = sum(len(ts) for _, ts, _ in out)
    if points > limits.max_query_points:
        raise QueryLimitError(
            f"cannot run query: {points} points is over the limit of {limits.max_query_points}; "
            "narrow the range or use a larger step"
        )
    out.sort(key=lambda e: (dict(e[0]).get("server_id", ""), dict(e[0]).get(METRIC_NAME, ""), e[0]))
    return [_entry(labels, ts, vals) for labels, ts, vals in out]


def _check_series(n: int, limits: LimitsOptions) -> None:
    if n > limits.max_query_series:
        raise QueryLimitError(
            f"cannot run query: {n} series is over the limit of {limits.max_query_series}; "
            "filter by server_id or metric_type"
        )
