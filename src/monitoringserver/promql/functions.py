"""Function calls: dispatch, range-vector functions and the simple instant functions."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import promql_parser as pp
from numpy.typing import NDArray

from monitoringserver.errors import ExecutionError
from monitoringserver.model.labels import METRIC_NAME, Labels, metric_name
from monitoringserver.model.matchers import MatchOp
from monitoringserver.promql import labelfuncs
from monitoringserver.promql.evaluator import Evaluator
from monitoringserver.promql.histograms import histogram_fraction, histogram_quantile
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.parser import selector_matchers, unwrap_parens
from monitoringserver.promql.rangefuncs import RANGE_FUNCTIONS, RangeArgs, keeps_name
from monitoringserver.promql.values import (
    F64,
    I64,
    B,
    Matrix,
    Scalar,
    String,
    Value,
    Vector,
    any_rows,
)

__all__ = ["call"]

_MATH: dict[str, Callable[[F64], F64]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sqrt": np.sqrt,
    "sgn": np.sign,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "asin": np.arcsin,
    "acos": np.arccos,
    "atan": np.arctan,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "asinh": np.arcsinh,
    "acosh": np.arccosh,
    "atanh": np.arctanh,
    "deg": np.degrees,
    "rad": np.radians,
}

_COUNTER_SUFFIXES = ("_total", "_sum", "_count", "_bucket")


def _date_parts(secs: F64, part: str) -> F64:
    ok = np.isfinite(secs)
    whole = np.where(ok, np.trunc(secs), 0).astype(np.int64)
    if part == "minute":
        out = (whole // 60) % 60
    elif part == "hour":
        out = (whole // 3600) % 24
    elif part == "day_of_week":
        out = (whole // 86400 + 4) % 7
    else:
        day = whole.astype("datetime64[s]").astype("datetime64[D]")
        month = day.astype("datetime64[M]")
        year = day.astype("datetime64[Y]")
        if part == "day_of_month":
            out = (day - month.astype("datetime64[D]")).astype(np.int64) + 1
        elif part == "day_of_year":
            out = (day - year.astype("datetime64[D]")).astype(np.int64) + 1
        elif part == "days_in_month":
            out = ((month + 1).astype("datetime64[D]") - month.astype("datetime64[D]")).astype(
                np.int64
            )
        elif part == "month":
            out = month.astype(np.int64) % 12 + 1
        else:
            out = year.astype(np.int64) + 1970
    return np.where(ok, out.astype(np.float64), np.nan)


_DATE = (
    "minute",
    "hour",
    "day_of_week",
    "day_of_month",
    "day_of_year",
    "days_in_month",
    "month",
    "year",
)


def _map(vec: Vector, fn: Callable[[F64], F64]) -> Vector:
    with np.errstate(all="ignore"):
        values = np.asarray(fn(vec.values), dtype=np.float64)
    return Vector(vec.labels, values, vec.present, np.ones(len(vec.labels), dtype=np.bool_))


def call(ev: Evaluator, node: pp.Call, ts: I64) -> Value:
    name = str(node.func.name)
    args = list(node.args)
    if name in ("absent_over_time", "present_over_time") or name in RANGE_FUNCTIONS:
        return _range_call(ev, node, name, args, ts)
    if name in _MATH:
        return _map(ev.eval_vector(args[0], ts), _MATH[name])
    if name == "time":
        return Scalar(ts / 1000.0)
    if name in ("step", "range", "start", "end"):
        seconds = {
            "step": ev.step_ms / 1000.0,
            "range": (ev.end_ms - ev.start_ms) / 1000.0,
            "start": ev.start_ms / 1000.0,
            "end": ev.end_ms / 1000.0,
        }[name]
        return Scalar(np.full(len(ts), seconds))
    if name in ("min_of", "max_of"):
        a, b = (ev.eval_scalar(x, ts).values for x in args[:2])
        red = np.minimum if name == "min_of" else np.maximum
        return Scalar(np.asarray(red(a, b), dtype=np.float64))
    if name == "pi":
        return Scalar(np.full(len(ts), np.pi))
    if name in _DATE:
        if not args:
            return Vector(
                [()],
                _date_parts(ts / 1000.0, name)[None, :],
                np.ones((1, len(ts)), dtype=np.bool_),
                np.zeros(1, dtype=np.bool_),
            )
        return _map(ev.eval_vector(args[0], ts), lambda v: _date_parts(v, name))
    if name == "timestamp":
        inner = unwrap_parens(args[0])
        if isinstance(inner, pp.VectorSelector):
            vec = ev.vector_selector(inner, ts, want_ts=True)
        else:
            vec = ev.eval_vector(args[0], ts)
            vec = Vector(
                vec.labels,
                np.broadcast_to(ts / 1000.0, vec.values.shape).copy(),
                vec.present,
                vec.drop_name,
            )
        return Vector(vec.labels, vec.values, vec.present, np.ones(len(vec.labels), dtype=np.bool_))
    if name == "vector":
        s = ev.eval_scalar(args[0], ts)
        return Vector(
            [()],
            s.values[None, :].copy(),
            np.ones((1, len(ts)), dtype=np.bool_),
            np.zeros(1, dtype=np.bool_),
        )
    if name == "scalar":
        vec = ev.eval_vector(args[0], ts)
        count = vec.present.sum(axis=0)
        which = np.argmax(vec.present, axis=0) if len(vec.labels) else np.zeros(len(ts), np.intp)
        vals = vec.values[which, np.arange(len(ts))] if len(vec.labels) else np.zeros(len(ts))
        return Scalar(np.where(count == 1, vals, np.nan))
    if name in ("round", "clamp", "clamp_min", "clamp_max"):
        return _clamp_round(ev, name, args, ts)
    if name == "absent":
        vec = ev.eval_vector(args[0], ts)
        return _absent(args[0], ~any_rows(vec.present))
    if name == "info":
        from monitoringserver.promql.info import info

        return info(ev, args, ts)
    if name == "histogram_quantile":
        phi = ev.eval_scalar(args[0], ts).values
        return histogram_quantile(ev, [phi], ev.eval_vector(args[1], ts), args[1], node)
    if name == "histogram_quantiles":
        vec = ev.eval_vector(args[0], ts)
        label = ev.eval(args[1], ts)
        if not isinstance(label, String):
            raise ExecutionError("cannot evaluate histogram_quantiles: label must be a string")
        phis = [ev.eval_scalar(a, ts).values for a in args[2:]]
        return histogram_quantile(ev, phis, vec, args[0], node, label=label.value)
    if name == "histogram_fraction":
        lower = ev.eval_scalar(args[0], ts).values
        upper = ev.eval_scalar(args[1], ts).values
        return histogram_fraction(ev, lower, upper, ev.eval_vector(args[2], ts), args[2])
    if name in (
        "histogram_count",
        "histogram_sum",
        "histogram_avg",
        "histogram_stddev",
        "histogram_stdvar",
    ):
        vec = ev.eval_vector(args[0], ts)
        return Vector.empty(len(ts)) if vec.labels else vec
    if name in labelfuncs.LABEL_FUNCTIONS:
        vec = ev.eval_vector(args[0], ts)
        rest: list[str] = []
        for a in args[1:]:
            v = ev.eval(a, ts)
            if not isinstance(v, String):
                raise ExecutionError(f"cannot evaluate {name}: expected string arguments")
            rest.append(v.value)
        if name in ("sort_by_label", "sort_by_label_desc", "sort", "sort_desc") and ev.is_range:
            ev.warn(
                "sort is ineffective for range queries since results are always ordered by labels",
                node,
            )
        return labelfuncs.LABEL_FUNCTIONS[name](vec, rest)
    raise ExecutionError(f"cannot evaluate function {name}: not supported")


def _clamp_round(ev: Evaluator, name: str, args: list[pp.Expr], ts: I64) -> Vector:
    vec = ev.eval_vector(args[0], ts)
    params = [ev.eval_scalar(a, ts).values[None, :] for a in args[1:]]
    with np.errstate(all="ignore"):
        if name == "round":
            inv = 1.0 / params[0] if params else 1.0
            return _map(vec, lambda v: np.floor(v * inv + 0.5) / inv)
        if name == "clamp_min":
            return _map(vec, lambda v: np.maximum(v, params[0]))
        if name == "clamp_max":
            return _map(vec, lambda v: np.minimum(v, params[0]))
        lo, hi = params
        out = _map(vec, lambda v: np.maximum(lo, np.minimum(hi, v)))
        out.present = out.present & ~(hi < lo)
        return out


def _absent_labels(arg: pp.Expr) -> Labels:
    inner = unwrap_parens(arg)
    if isinstance(inner, pp.MatrixSelector):
        inner = inner.vector_selector
    if not isinstance(inner, pp.VectorSelector):
        return ()
    groups = selector_matchers(inner)
    if len(groups) != 1:
        return ()
    out: dict[str, str] = {}
    seen: set[str] = set()
    for m in groups[0]:
        if m.name == METRIC_NAME:
            continue
        if m.op is MatchOp.EQ and m.name not in seen:
            out[m.name] = m.value
        else:
            out.pop(m.name, None)
        seen.add(m.name)
    return tuple(sorted((k, v) for k, v in out.items() if v))


def _absent(arg: pp.Expr, missing: np.ndarray) -> Vector:
    steps = len(missing)
    return Vector(
        [_absent_labels(arg)],
        np.ones((1, steps)),
        missing.reshape(1, steps).astype(np.bool_),
        np.zeros(1, dtype=np.bool_),
    )


def _range_call(ev: Evaluator, node: pp.Call, name: str, args: list[pp.Expr], ts: I64) -> Vector:
    matrix_pos = 1 if name == "quantile_over_time" else 0
    matrix = ev.eval_matrix(args[matrix_pos], ts)
    extra = [ev.eval_scalar(a, ts).values for i, a in enumerate(args) if i != matrix_pos]
    if matrix.mode is not None:
        from monitoringserver.promql.extended import range_extended

        values, ok = range_extended(
            matrix.mode, name, matrix.raw, matrix, lookback_ms=ev.lookback_ms
        )
        labels = [s.labels for s in matrix.raw]
        drops = np.ones(len(labels), dtype=np.bool_)
        return Vector(labels, values, ok, drops).compact()
    flat = matrix.flat()
    nonempty = flat.hi > flat.lo
    if name == "absent_over_time":
        return _absent(args[matrix_pos], ~any_rows(nonempty))
    if name in ("rate", "increase", "irate"):
        _counter_info(ev, matrix, (flat.hi - flat.lo) >= 2, args[matrix_pos])
    if name == "quantile_over_time":
        phi = extra[0]
        bad = phi[(phi < 0) | (phi > 1) | np.isnan(phi)]
        if len(bad) and matrix.labels:
            from monitoringserver.promql.aggregations import format_value

            ev.warn(
                f"quantile value should be between 0 and 1, got {format_value(bad[0])}", args[0]
            )
    values, present = RANGE_FUNCTIONS[name](
        RangeArgs(
            flat.ts,
            flat.values,
            flat.lo,
            flat.hi,
            matrix.eff_ms,
            matrix.range_ms,
            ts,
            extra,
            matrix.data.starts(),
        )
    )
    keep_name = keeps_name(name)
    drops = matrix.drop_name | (not keep_name)
    vec = Vector(list(matrix.labels), values, present & nonempty, drops)
    return vec.take_order(matrix.order).compact()


def _name_codes(labels: list[Labels]) -> tuple[list[str], NDArray[np.intp]] | None:
    """Sorted distinct metric names and each series' index into them.

    ``None`` unless every label set starts with ``__name__`` (it sorts first unless a
    label name starts with an upper-case letter).
    """
    try:
        firsts = [lbl[0] for lbl in labels]
    except IndexError:
        return None
    if not all(p[0] == METRIC_NAME for p in dict.fromkeys(firsts)):
        return None
    names = sorted({p[1] for p in firsts})
    index = {name: i for i, name in enumerate(names)}
    codes = np.fromiter((index[p[1]] for p in firsts), dtype=np.intp, count=len(firsts))
    codes.flags.writeable = False  # it may be shared through the memo
    return names, codes


_NAME_CODES: LabelsMemo[tuple[list[str], NDArray[np.intp]] | None] = LabelsMemo()


def _counter_info(ev: Evaluator, matrix: Matrix, enough: B, arg: pp.Expr) -> None:
    """The "might not be a counter" info, once per metric name, names in label order."""
    labels = matrix.labels
    rows = any_rows(enough.T)
    coded = _NAME_CODES.get(labels, None, lambda: _name_codes(labels))
    names: Iterable[str]
    if coded is not None:
        # Every label set starts with its name, so label order is name order.
        names = [coded[0][c] for c in np.unique(coded[1][rows]).tolist()]
    else:
        order = np.arange(len(labels)) if matrix.order is None else matrix.order
        names = dict.fromkeys(metric_name(labels[i]) for i in order[rows[order]].tolist())
    for name in names:
        if name and not name.endswith(_COUNTER_SUFFIXES):
            ev.info(
                "metric might not be a counter, name does not end in _total/_sum/_count/_bucket: "
                f'"{name}"',
                arg,
            )
