"""Parameter parsing and JSON encoding for the Prometheus-compatible query API.

Times are accepted as RFC 3339 or Unix seconds (float), durations as Prometheus
durations (``5m``, ``1h30m``) or float seconds, exactly as Prometheus' HTTP API does.
Values are encoded as strings (``"1"``, ``"NaN"``, ``"+Inf"``), timestamps as Unix seconds.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import promql_parser as pp

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.promql import QueryStats, Result, parse
from monitoringserver.promql.parser import selector_matchers

__all__ = [
    "MAX_TIME_MS",
    "MIN_TIME_MS",
    "encode_result",
    "encode_stats",
    "format_sample_value",
    "parse_duration_s",
    "parse_limit",
    "parse_match",
    "parse_time_ms",
]

#: The bounds Prometheus uses when ``start``/``end`` are omitted on metadata endpoints.
MIN_TIME_MS = -(2**62)
MAX_TIME_MS = 2**62
_DURATION = re.compile(r"((\d+)(ms|y|w|d|h|m|s))+")
_PART = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def parse_time_ms(value: str | None, name: str, default_ms: int) -> int:
    """``value`` as int milliseconds; ``default_ms`` when absent or empty."""
    if value is None or value == "":
        return default_ms
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise BadDataError(f'cannot parse parameter "{name}": {value!r} is not a finite time')
        return round(seconds * 1000)
    try:
        parsed = dt.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError as exc:
        raise BadDataError(
            f'cannot parse parameter "{name}": {value!r} is neither RFC 3339 nor Unix seconds'
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return round(parsed.timestamp() * 1000)


def parse_duration_s(value: str, name: str) -> float:
    """A Prometheus duration (``5m``) or float seconds, in seconds."""
    try:
        seconds = float(value)
    except ValueError:
        if not _DURATION.fullmatch(value):
            raise BadDataError(
                f'cannot parse parameter "{name}": {value!r} is not a duration'
            ) from None
        seconds = sum(int(n) * _UNIT_S[u] for n, u in _PART.findall(value))
    if not math.isfinite(seconds) or seconds < 0:
        raise BadDataError(f'cannot parse parameter "{name}": {value!r} is not a valid duration')
    return seconds


def parse_limit(value: str | None) -> int:
    """``limit`` parameter: 0 (or absent) means unlimited."""
    if value is None or value == "":
        return 0
    try:
        limit = int(value)
    except ValueError as exc:
        raise BadDataError(f'cannot parse parameter "limit": {value!r} is not an integer') from exc
    if limit < 0:
        raise BadDataError('cannot parse parameter "limit": must be a non-negative integer')
    return limit


def parse_match(selectors: Sequence[str]) -> list[list[Matcher]]:
    """``match[]`` selectors as alternative matcher groups (each group is ANDed)."""
    groups: list[list[Matcher]] = []
    for text in selectors:
        expr = parse(text)
        if not isinstance(expr, pp.VectorSelector):
            raise BadDataError(
                f'cannot parse parameter "match[]": {text!r} is not a series selector'
            )
        groups.extend(selector_matchers(expr))
    return groups


def format_sample_value(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` as Prometheus renders sample values."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def _ts(ms: int) -> float | int:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def _metric(labels: Labels) -> dict[str, str]:
    return dict(labels)


def encode_result(result: Result) -> dict[str, Any]:
    """The ``data`` object of a query response."""
    if result.result_type == "scalar":
        value: Any = [_ts(result.time_ms), format_sample_value(result.scalar)]
    elif result.result_type == "string":
        value = [_ts(result.time_ms), result.string]
    elif result.result_type == "vector":
        value = [
            {
                "metric": _metric(s.labels),
                "value": [_ts(int(s.ts_ms[0])), format_sample_value(float(s.values[0]))],
            }
            for s in result.series
        ]
    else:
        value = [
            {
                "metric": _metric(s.labels),
                "values": [
                    [_ts(t), format_sample_value(v)]
                    for t, v in zip(s.ts_ms.tolist(), s.values.tolist(), strict=True)
                ],
            }
            for s in result.series
        ]
    return {"resultType": result.result_type, "result": value}


def encode_stats(stats: QueryStats, queue_s: float) -> dict[str, Any]:
    """Prometheus' ``stats=all`` object (timings in seconds)."""
    return {
        "timings": {
            "evalTotalTime": stats.eval_s,
            "resultSortTime": 0,
            "queryPreparationTime": stats.parse_s,
            "innerEvalTime": stats.eval_s,
            "execQueueTime": queue_s,
            "execTotalTime": stats.total_s + queue_s,
        },
        "samples": {
            "totalQueryableSamples": stats.samples_loaded,
            "peakSamples": stats.peak_samples,
        },
    }
