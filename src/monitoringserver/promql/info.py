"""``info(v, {selector})``: enrich series with the data labels of matching info metrics.

Info series are those whose name ends in ``_info`` and matches every ``__name__`` matcher
of the selector (``target_info`` when it has none) and every data-label matcher. They join
a base series on the identifying labels ``instance`` and ``job``; their other labels
(only the ones named by data matchers, when there are any) are added unless the base
series already has them. A base series that is itself such an info metric is returned
unchanged. When no info series joins at a step and some data matcher rejects the empty
value, the base series is dropped at that step.
"""

from __future__ import annotations

import numpy as np
import promql_parser as pp

from monitoringserver.errors import ExecutionError
from monitoringserver.model.labels import METRIC_NAME, Labels, get
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.promql.evaluator import Evaluator, merge_series
from monitoringserver.promql.parser import (
    INFO_SENTINEL,
    at_ms,
    duration_ms,
    matcher_from_parser,
)
from monitoringserver.promql.selectors import instant_vector
from monitoringserver.promql.values import I64, Vector

__all__ = ["info"]

_IDENTIFYING = ("instance", "job")
_INFO_NAME = Matcher(METRIC_NAME, MatchOp.RE, ".+_info")


def _reference_times(ev: Evaluator, expr: pp.Expr, ts: I64) -> I64:
    """When the base samples were read: ``@`` and ``offset`` on the way down to the selector."""
    ref = ts.copy()
    node: pp.Expr | None = expr
    while node is not None:
        if isinstance(node, pp.MatrixSelector):
            node = node.vector_selector
        if isinstance(node, pp.VectorSelector | pp.SubqueryExpr):
            at = at_ms(node.at, ev.start_ms, ev.end_ms)
            if at is not None:
                ref = np.full_like(ts, at)
            ref = ref - duration_ms(node.offset)
        if isinstance(node, pp.SubqueryExpr | pp.ParenExpr | pp.UnaryExpr):
            node = node.expr
        elif isinstance(node, pp.Call):
            node = next((a for a in node.args if not isinstance(a, pp.NumberLiteral)), None)
        elif isinstance(node, pp.AggregateExpr):
            node = node.expr
        else:
            node = None
    return ref


def _newest_only(infos: Vector, sample_ts: np.ndarray) -> np.ndarray:
    """Among info series of one metric and identity, keep only the freshest at each step."""
    keep = infos.present.copy()
    groups: dict[tuple[str, ...], list[int]] = {}
    for j, lbl in enumerate(infos.labels):
        key = (get(lbl, METRIC_NAME), *(get(lbl, n) for n in _IDENTIFYING))
        groups.setdefault(key, []).append(j)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        stamp = np.where(infos.present[idx], sample_ts[idx], -np.inf)
        newest = np.argmax(stamp, axis=0)
        keep[idx] &= np.arange(len(idx))[:, None] == newest[None, :]
    return keep


def info(ev: Evaluator, args: list[pp.Expr], ts: I64) -> Vector:
    base = ev.eval_vector(args[0], ts)
    matchers: list[Matcher] = []
    if len(args) > 1:
        sel = args[1]
        assert isinstance(sel, pp.VectorSelector)
        matchers = [
            matcher_from_parser(m) for m in sel.matchers.matchers if m.name != INFO_SENTINEL
        ]
        if sel.name:
            matchers.append(Matcher(METRIC_NAME, MatchOp.EQ, sel.name))
    name_m = [m for m in matchers if m.name == METRIC_NAME]
    data_m = [m for m in matchers if m.name != METRIC_NAME]
    if not name_m:
        name_m = [Matcher(METRIC_NAME, MatchOp.EQ, "target_info")]
    elif all(m.matches_empty() or m.op in (MatchOp.NEQ, MatchOp.NRE) for m in name_m):
        name_m = [_INFO_NAME, *name_m]
    ref = _reference_times(ev, args[0], ts)
    series = ev.loader.load_matchers(
        [*name_m, *data_m], int(ref.min()) - ev.lookback_ms + 1, int(ref.max())
    )
    infos = instant_vector(series, ref, ev.lookback_ms)
    infos.present &= _newest_only(infos, instant_vector(series, ref, ev.lookback_ms, True).values)
    by_key: dict[tuple[str, ...], list[int]] = {}
    for j, lbl in enumerate(infos.labels):
        by_key.setdefault(tuple(get(lbl, n) for n in _IDENTIFYING), []).append(j)
    wanted = {m.name for m in data_m}
    must_join = any(not m.matches_empty() for m in data_m)
    steps = len(ts)
    out_labels: list[Labels] = []
    out_v = []
    out_p = []
    out_d = []
    for i, lbl in enumerate(base.labels):
        name = get(lbl, METRIC_NAME)
        if name and all(m.matches(name) for m in name_m):
            out_labels.append(lbl)
            out_v.append(base.values[i])
            out_p.append(base.present[i])
            out_d.append(bool(base.drop_name[i]))
            continue
        members = by_key.get(tuple(get(lbl, n) for n in _IDENTIFYING), [])
        pres = infos.present[members] if members else np.zeros((0, steps), dtype=np.bool_)
        patterns, inverse = np.unique(pres.T, axis=0, return_inverse=True)
        for k, pattern in enumerate(patterns):
            at = (np.asarray(inverse).ravel() == k) & base.present[i]
            if not at.any():
                continue
            joined = [members[n] for n in np.flatnonzero(pattern)]
            if not joined and must_join:
                continue
            d = dict(lbl)
            lbl_names = set(d)
            added: dict[str, str] = {}
            for j in joined:
                for key, value in infos.labels[j]:
                    if key in (METRIC_NAME, *_IDENTIFYING) or key in lbl_names:
                        continue
                    if wanted and key not in wanted:
                        continue
                    if added.get(key, value) != value:
                        raise ExecutionError(
                            f"conflicting label: {key!r} is {added[key]!r} in one info series "
                            f"and {value!r} in another"
                        )
                    added[key] = value
            for key, value in added.items():
                d[key] = value
            out_labels.append(tuple(sorted(d.items())))
            out_v.append(base.values[i])
            out_p.append(at)
            out_d.append(bool(base.drop_name[i]))
    if not out_labels:
        return Vector.empty(steps)
    vec = Vector(
        out_labels,
        np.array(out_v, dtype=np.float64).reshape(-1, steps),
        np.array(out_p, dtype=np.bool_).reshape(-1, steps),
        np.array(out_d, dtype=np.bool_),
    )
    return merge_series(vec, "vector cannot contain metrics with the same labelset")
