"""The AST walker. One :class:`Evaluator` per query; not thread-safe, not reusable.

``eval(node, ts)`` returns the node's value at every timestamp of ``ts`` (int64 ms) at
once. Functions, aggregations and binary operators live in their own modules and call
back into ``eval`` for their operands.
"""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import promql_parser as pp

from monitoringserver.errors import CanceledError, ExecutionError, QueryTimeoutError
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.packed import Packed
from monitoringserver.promql.parser import at_ms, duration_ms, extended_mode
from monitoringserver.promql.selectors import (
    InlineBounds,
    Loader,
    NotInline,
    Selection,
    instant_vector,
    range_matrix,
)
from monitoringserver.promql.values import (
    I64,
    B,
    Matrix,
    QueryStats,
    Scalar,
    String,
    Value,
    Vector,
)

__all__ = ["Evaluator", "drop_metric_name", "finalize", "merge_series"]

_WORD = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


_NAME_LABELS = frozenset({METRIC_NAME, "__type__", "__unit__"})


def drop_metric_name(labels: Labels) -> Labels:
    """Remove the metric name and the type/unit labels that describe it."""
    return tuple(p for p in labels if p[0] not in _NAME_LABELS)


def merge_series(vec: Vector, message: str) -> Vector:
    """Merge series with identical labels; fail with ``message`` if two share a step."""
    groups: dict[Labels, list[int]] = {}
    for i, lbl in enumerate(vec.labels):
        groups.setdefault(lbl, []).append(i)
    if len(groups) == len(vec.labels):
        return vec
    labels: list[Labels] = []
    rows_v = []
    rows_p = []
    drops = []
    for lbl, idx in groups.items():
        labels.append(lbl)
        if len(idx) == 1:
            rows_v.append(vec.values[idx[0]])
            rows_p.append(vec.present[idx[0]])
            drops.append(bool(vec.drop_name[idx[0]]))
            continue
        pres = vec.present[idx]
        if (pres.sum(axis=0) > 1).any():
            raise ExecutionError(message)
        which = np.argmax(pres, axis=0)
        cols = np.arange(pres.shape[1])
        rows_v.append(vec.values[idx][which, cols])
        rows_p.append(pres.any(axis=0))
        drops.append(bool(vec.drop_name[idx].any()))
    steps = vec.values.shape[1]
    return Vector(
        labels,
        np.array(rows_v, dtype=np.float64).reshape(len(labels), steps),
        np.array(rows_p, dtype=np.bool_).reshape(len(labels), steps),
        np.array(drops, dtype=np.bool_),
    )


def _final_labels(labels: list[Labels], drop: B) -> tuple[list[Labels], bool]:
    """Labels after delayed name removal, and whether they are all distinct."""
    if drop.any():
        labels = [
            drop_metric_name(lbl) if d else lbl
            for lbl, d in zip(labels, drop.tolist(), strict=True)
        ]
    return labels, len(set(labels)) == len(labels)


_FINAL: LabelsMemo[tuple[list[Labels], bool]] = LabelsMemo()


def finalize(vec: Vector) -> Vector:
    """Apply delayed name removal and reject duplicate label sets, as at query end.

    The label work is remembered per series list (see :mod:`promql.memo`).
    """
    labels, unique = _FINAL.get(
        vec.labels, vec.drop_name.tobytes(), lambda: _final_labels(vec.labels, vec.drop_name)
    )
    if labels is not vec.labels:
        # A copy: the memo's list must never be changed through a result.
        vec = Vector(list(labels), vec.values, vec.present, np.zeros(len(labels), dtype=np.bool_))
    vec = vec.compact()
    if unique:
        return vec
    return merge_series(vec, "vector cannot contain metrics with the same labelset")


class Evaluator:
    """Evaluates one query. ``start_ms``/``end_ms`` resolve ``@ start()``/``@ end()``."""

    def __init__(
        self,
        querier: MetricQuerier,
        *,
        query: str,
        start_ms: int,
        end_ms: int,
        step_ms: int,
        lookback_ms: int,
        stats: QueryStats,
        deadline: float,
        cancel: threading.Event | None,
        max_samples: int,
        max_series: int,
        subquery_step_ms: int,
        inline: InlineBounds | None = None,
    ) -> None:
        self.query = query
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.step_ms = step_ms
        self.lookback_ms = lookback_ms
        self.stats = stats
        self.loader = Loader(querier, stats, max_samples, max_series, inline)
        self.subquery_step_ms = subquery_step_ms
        self.is_range = start_ms != end_ms
        self._deadline = deadline
        self._cancel = cancel
        self.warnings: dict[str, None] = {}
        self.infos: dict[str, None] = {}

    # -- annotations -------------------------------------------------------------------

    def position(self, node: pp.Expr) -> str:
        """Best-effort ``line:col`` of ``node`` in the query text."""
        text = str(node)
        idx = self.query.find(text)
        if idx < 0:
            m = _WORD.search(text)
            idx = self.query.find(m.group(0)) if m else -1
        idx = max(idx, 0)
        line = self.query.count("\n", 0, idx) + 1
        col = idx - (self.query.rfind("\n", 0, idx) + 1) + 1
        return f"{line}:{col}"

    def warn(self, message: str, node: pp.Expr) -> None:
        self.warnings[f"PromQL warning: {message} ({self.position(node)})"] = None

    def info(self, message: str, node: pp.Expr) -> None:
        self.infos[f"PromQL info: {message} ({self.position(node)})"] = None

    # -- evaluation ------------------------------------------------------------------

    def check(self) -> None:
        if self._cancel is not None and self._cancel.is_set():
            raise CanceledError("cannot execute query: query was canceled")
        if time.monotonic() > self._deadline:
            raise QueryTimeoutError("cannot execute query: query timed out in query execution")

    def eval(self, node: pp.Expr, ts: I64) -> Value:
        self.check()
        if isinstance(node, pp.VectorSelector):
            return self.vector_selector(node, ts)
        if isinstance(node, pp.NumberLiteral):
            return Scalar(np.full(len(ts), float(node.val)))
        if isinstance(node, pp.StringLiteral):
            return String(str(node.val))
        if isinstance(node, pp.ParenExpr):
            return self.eval(node.expr, ts)
        if isinstance(node, pp.UnaryExpr):
            return self._negate(self.eval(node.expr, ts))
        if isinstance(node, pp.MatrixSelector):
            return self.matrix_selector(node, ts)
        if isinstance(node, pp.SubqueryExpr):
            return self.subquery(node, ts)
        # These modules import this one: imported here, and only for the nodes that need
        # them (an import statement costs microseconds even when the module is loaded).
        if isinstance(node, pp.Call):
            from monitoringserver.promql import functions

            return functions.call(self, node, ts)
        if isinstance(node, pp.AggregateExpr):
            from monitoringserver.promql import aggregations

            return aggregations.aggregate(self, node, ts)
        if isinstance(node, pp.BinaryExpr):
            from monitoringserver.promql import binops

            return binops.binary(self, node, ts)
        raise ExecutionError(f"cannot evaluate expression {node}: unsupported node type")

    def eval_vector(self, node: pp.Expr, ts: I64) -> Vector:
        value = self.eval(node, ts)
        if not isinstance(value, Vector):
            raise ExecutionError(f"cannot evaluate {node}: expected an instant vector")
        return value

    def eval_scalar(self, node: pp.Expr, ts: I64) -> Scalar:
        value = self.eval(node, ts)
        if not isinstance(value, Scalar):
            raise ExecutionError(f"cannot evaluate {node}: expected a scalar")
        return value

    def eval_matrix(self, node: pp.Expr, ts: I64) -> Matrix:
        value = self.eval(node, ts)
        if not isinstance(value, Matrix):
            raise ExecutionError(f"cannot evaluate {node}: expected a range vector")
        return value

    def _negate(self, value: Value) -> Value:
        if isinstance(value, Scalar):
            return Scalar(-value.values)
        if isinstance(value, Vector):
            return Vector(
                value.labels,
                -value.values,
                value.present,
                np.ones(len(value.labels), dtype=np.bool_),
            )
        raise ExecutionError("cannot negate value: unary minus needs a scalar or instant vector")

    def effective_times(self, at: pp.AtModifier | None, offset: int, ts: I64) -> I64:
        fixed = at_ms(at, self.start_ms, self.end_ms)
        if fixed is not None:
            return np.full(len(ts), fixed - offset, dtype=np.int64)
        return ts - offset

    def vector_selector(self, vs: pp.VectorSelector, ts: I64, want_ts: bool = False) -> Vector:
        eff = self.effective_times(vs.at, duration_ms(vs.offset), ts)
        if extended_mode(vs) == "smoothed":
            from monitoringserver.promql.extended import smoothed_vector

            lb = self.lookback_ms
            sel = self.load(vs, int(eff.min()) - lb + 1, int(eff.max()) + lb)
            return smoothed_vector(sel.series(), eff, lb)
        sel = self.load(vs, int(eff.min()) - self.lookback_ms + 1, int(eff.max()))
        return instant_vector(sel, eff, self.lookback_ms, want_ts)

    def matrix_selector(self, ms: pp.MatrixSelector, ts: I64) -> Matrix:
        vs = ms.vector_selector
        rng = duration_ms(ms.range)
        eff = self.effective_times(vs.at, duration_ms(vs.offset), ts)
        mode = extended_mode(vs)
        if mode is not None:
            lb = self.lookback_ms
            after = lb if mode == "smoothed" else 0
            raw = self.load(vs, int(eff.min()) - rng - lb + 1, int(eff.max()) + after)
            raw = raw.in_label_order()
            matrix = range_matrix(raw, eff, rng)
            matrix.mode = mode
            matrix.raw = raw.series()
            return matrix
        sel = self.load(vs, int(eff.min()) - rng + 1, int(eff.max()))
        return range_matrix(sel, eff, rng)

    def load(self, vs: pp.VectorSelector, mint: int, maxt: int) -> Selection:
        self.check()
        return self.loader.load(vs, mint, maxt)

    def subquery(self, sq: pp.SubqueryExpr, ts: I64) -> Matrix:
        if self.loader.inline is not None:  # its inner steps are not bounded
            raise NotInline("cannot evaluate query inline: it has a subquery")
        rng = duration_ms(sq.range)
        step = duration_ms(sq.step) or self.subquery_step_ms
        eff = self.effective_times(sq.at, duration_ms(sq.offset), ts)
        lo = int(eff.min()) - rng
        start = -((-lo) // step) * step
        inner_ts = np.arange(start, int(eff.max()) + 1, step, dtype=np.int64)
        if len(inner_ts) == 0:
            return Matrix.of([], eff, rng)
        value = self.eval(sq.expr, inner_ts)
        if isinstance(value, Scalar):
            value = Vector(
                [()],
                value.values[None, :],
                np.ones((1, len(inner_ts)), dtype=np.bool_),
                np.zeros(1, dtype=np.bool_),
            )
        if not isinstance(value, Vector):
            raise ExecutionError(f"cannot evaluate subquery {sq}: inner expression is not a vector")
        rows = np.flatnonzero(value.present.any(axis=1))
        present = value.present[rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.intp)
        np.cumsum(present.sum(axis=1), out=offsets[1:])
        data = Packed(
            np.broadcast_to(inner_ts, present.shape)[present],
            value.values[rows][present],
            offsets,
        )
        labels = [value.labels[i] for i in rows.tolist()]
        return Matrix(labels, data, value.drop_name[rows], eff, rng)
