"""The PromQL engine: evaluates a parsed query over all steps at once.

``Engine.instant`` and ``Engine.range`` are synchronous and thread-safe (each call
builds its own evaluator); web handlers run them in a worker thread. Every node is
evaluated once for the whole step range, producing ``[series, steps]`` arrays.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass

import numpy as np
import promql_parser as pp
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, ExecutionError, MonitoringError
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.promql import evaluator as ev
from monitoringserver.promql.durations import rewrite as rewrite_durations
from monitoringserver.promql.extended import rewrite as rewrite_extended
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.parser import parse
from monitoringserver.promql.selectors import InlineBounds, NotInline, sort_order
from monitoringserver.promql.values import (
    Matrix,
    QueryStats,
    Result,
    ResultSeries,
    Scalar,
    String,
    Value,
    Vector,
)

__all__ = ["Engine", "EngineOptions", "InlineBounds", "NotInline"]

#: Query times must lie within ±2**62 ms (about ±146 million years), so that window
#: arithmetic on int64 milliseconds cannot overflow.
_TIME_LIMIT_MS = 2**62


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """Engine limits and semantics; durations in milliseconds unless named ``_s``.

    ``max_samples`` bounds the samples loaded from storage by one query,
    ``max_series`` the series selected, ``max_steps`` the points per series of a range
    query (Prometheus refuses more than 11,000).
    """

    lookback_delta_ms: int = 300_000
    timeout_s: float = 120.0
    max_samples: int = 50_000_000
    max_series: int = 500_000
    max_steps: int = 11_000
    default_subquery_step_ms: int = 60_000

    def __post_init__(self) -> None:
        if self.lookback_delta_ms <= 0:
            raise BadDataError("cannot configure engine: lookback_delta_ms must be positive")
        if self.timeout_s <= 0 or self.max_samples <= 0 or self.max_series <= 0:
            raise BadDataError("cannot configure engine: limits must be positive")


class Engine:
    """Evaluates PromQL over a :class:`MetricQuerier`.

    ``inline`` (of :meth:`instant` and :meth:`range`): evaluate only if the query stays
    within these :class:`InlineBounds`, else raise :class:`NotInline` having returned
    nothing; so a caller on an event loop may try a query there before handing it to a
    thread.
    """

    def __init__(self, querier: MetricQuerier, options: EngineOptions | None = None) -> None:
        self.querier = querier
        self.options = options or EngineOptions()

    def instant(
        self,
        query: str,
        time_ms: int,
        *,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
        lookback_delta_ms: int | None = None,
        inline: InlineBounds | None = None,
    ) -> Result:
        """Evaluate ``query`` at ``time_ms``; result type vector, scalar, string or matrix."""
        return self._run(
            query,
            start_ms=time_ms,
            end_ms=time_ms,
            step_ms=0,
            timeout_s=timeout_s,
            cancel=cancel,
            lookback_delta_ms=lookback_delta_ms,
            inline=inline,
        )

    def range(
        self,
        query: str,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        *,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
        lookback_delta_ms: int | None = None,
        inline: InlineBounds | None = None,
    ) -> Result:
        """Evaluate ``query`` at ``start_ms, start_ms + step_ms, … <= end_ms``; a matrix."""
        if step_ms <= 0:
            raise BadDataError(
                "cannot run range query: zero or negative query resolution step widths are "
                "not accepted. Try a positive integer"
            )
        if end_ms < start_ms:
            raise BadDataError(
                "cannot run range query: end timestamp must not be before start time"
            )
        if (end_ms - start_ms) // step_ms + 1 > self.options.max_steps:
            raise BadDataError(
                "cannot run range query: exceeded maximum resolution of "
                f"{self.options.max_steps} points per timeseries. Try decreasing the query "
                "resolution (?step=XX)"
            )
        return self._run(
            query,
            start_ms=start_ms,
            end_ms=end_ms,
            step_ms=step_ms,
            timeout_s=timeout_s,
            cancel=cancel,
            lookback_delta_ms=lookback_delta_ms,
            inline=inline,
        )

    def _run(
        self,
        query: str,
        *,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        timeout_s: float | None,
        cancel: threading.Event | None,
        lookback_delta_ms: int | None,
        inline: InlineBounds | None,
    ) -> Result:
        for name, at in (("start", start_ms), ("end", end_ms)):
            if not -_TIME_LIMIT_MS <= at <= _TIME_LIMIT_MS:
                raise BadDataError(
                    f"cannot run query: {name} time {at} ms is outside the supported range"
                )
        if inline is not None and (
            len(query) > inline.max_query_chars
            or (step_ms and (end_ms - start_ms) // step_ms + 1 > inline.max_steps)
        ):
            raise NotInline("cannot evaluate query inline: it is too long or has too many steps")
        t0 = time.perf_counter()
        stats = QueryStats()
        try:
            expr = parse(query)
        except BadDataError as exc:
            expr = _parse_duration_expressions(query, step_ms, end_ms - start_ms, exc)
        t1 = time.perf_counter()
        stats.parse_s = t1 - t0
        opts = self.options
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else opts.timeout_s)
        evaluator = ev.Evaluator(
            self.querier,
            query=query,
            start_ms=start_ms,
            end_ms=end_ms,
            step_ms=step_ms,
            lookback_ms=lookback_delta_ms or opts.lookback_delta_ms,
            stats=stats,
            deadline=deadline,
            cancel=cancel,
            max_samples=opts.max_samples,
            max_series=opts.max_series,
            subquery_step_ms=opts.default_subquery_step_ms,
            inline=inline,
        )
        if step_ms:
            ts = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
        else:
            ts = np.asarray([start_ms], dtype=np.int64)
        stats.steps = len(ts)
        try:
            value = evaluator.eval(expr, ts)
            result = _to_result(value, ts, bool(step_ms), expr)
        except MonitoringError:
            raise
        except (ValueError, ArithmeticError, IndexError, KeyError) as exc:
            raise ExecutionError(f"cannot execute query: {exc}") from exc
        result.warnings = list(evaluator.warnings)
        result.infos = list(evaluator.infos)
        t2 = time.perf_counter()
        stats.eval_s = t2 - t1
        stats.total_s = t2 - t0
        result.stats = stats
        return result


def _parse_duration_expressions(
    query: str, step_ms: int, range_ms: int, original: BadDataError
) -> pp.Expr:
    """Retry a query that failed to parse with its duration expressions evaluated."""
    for rewrite in (
        lambda q: rewrite_durations(q, step_ms, range_ms),
        rewrite_extended,
        lambda q: rewrite_durations(rewrite_extended(q), step_ms, range_ms),
    ):
        try:
            rewritten = rewrite(query)
            if rewritten != query:
                return parse(rewritten)
        except BadDataError:
            continue
    raise original


def _to_result(value: Value, ts: np.ndarray, is_range: bool, expr: pp.Expr) -> Result:
    if isinstance(value, String):
        if is_range:
            raise BadDataError(
                'cannot run range query: invalid expression type "string" for range query, '
                "must be Scalar or instant Vector"
            )
        return Result("string", string=value.value, time_ms=int(ts[0]))
    if isinstance(value, Scalar):
        if not is_range:
            return Result("scalar", scalar=float(value.values[0]), time_ms=int(ts[0]))
        return Result("matrix", series=[ResultSeries((), ts.copy(), value.values.copy())])
    if isinstance(value, Matrix):
        if is_range:
            raise BadDataError(
                'cannot run range query: invalid expression type "range vector" for range '
                "query, must be Scalar or instant Vector"
            )
        return Result("matrix", series=_matrix_series(value), time_ms=int(ts[0]))
    vec = ev.finalize(value)
    if not is_range:
        out = [
            ResultSeries(lbl, ts[:1].copy(), vec.values[i, :1].copy())
            for i, lbl in enumerate(vec.labels)
            if vec.present[i, 0]
        ]
        return Result("vector", series=out, time_ms=int(ts[0]))
    return Result("matrix", series=_range_series(vec, ts))


#: Up to this many result series are built row by row.
_FEW_SERIES = 8
_RESULT_ORDER: LabelsMemo[NDArray[np.intp] | None] = LabelsMemo()


def _range_series(vec: Vector, ts: NDArray[np.int64]) -> list[ResultSeries]:
    """The series of a range result in label order, absent steps left out.

    Rows with the same presence pattern share one read-only timestamps array and take
    their values from one gather, so the per-series work is building the result tuple.
    """
    present = vec.present
    any_p = np.asarray(present.any(axis=1), dtype=np.bool_)
    keep = np.flatnonzero(any_p)
    if not len(keep):
        return []
    labels = vec.labels
    if len(keep) <= _FEW_SERIES:
        # A handful of rows: sorting them beats the pattern grouping and the label-order memo.
        few = sorted(keep.tolist(), key=labels.__getitem__)
        return [ResultSeries(labels[i], ts[present[i]], vec.values[i][present[i]]) for i in few]
    series_of: dict[int, ResultSeries] = {}
    patterns, inverse = np.unique(np.packbits(present[keep], axis=1), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if len(patterns) * 4 > len(keep):
        # Mostly distinct patterns: per row is cheaper than per pattern.
        for i in keep.tolist():
            mask = present[i]
            series_of[i] = ResultSeries(labels[i], ts[mask], vec.values[i][mask])
    else:
        by_pattern = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[by_pattern], np.arange(len(patterns) + 1)).tolist()
        for a, b in itertools.pairwise(bounds):
            rows = keep[by_pattern[a:b]]
            mask = present[rows[0]]
            shared = ts[mask]
            shared.flags.writeable = False
            vals = vec.values[rows][:, mask] if not mask.all() else vec.values[rows]
            for r, v in zip(rows.tolist(), vals, strict=True):
                series_of[r] = ResultSeries(labels[r], shared, v)
    order = _RESULT_ORDER.get(vec.labels, None, lambda: sort_order(vec.labels))
    ranked = keep if order is None else order[any_p[order]]
    return [series_of[i] for i in ranked.tolist()]


def _matrix_series(m: Matrix) -> list[ResultSeries]:
    flat = m.flat()
    lo, hi = flat.lo[:, 0].tolist(), flat.hi[:, 0].tolist()
    out = []
    for i, labels in enumerate(m.labels):
        a, b = lo[i], hi[i]
        if b > a:
            shown = ev.drop_metric_name(labels) if m.drop_name[i] else labels
            out.append(ResultSeries(shown, flat.ts[a:b].copy(), flat.values[a:b].copy()))
    out.sort(key=lambda r: r.labels)
    return out
