"""Aggregation operators over instant vectors, all steps at once.

Groups are built once per query node (labels do not change between steps); each
aggregate is then a reduction along the series axis of the group's ``[n, steps]``
block. ``sum``/``avg`` use Kahan-Neumaier compensation like Prometheus.
"""

from __future__ import annotations

import itertools
import re

import numpy as np
import promql_parser as pp
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, ExecutionError
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.promql.evaluator import Evaluator
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.values import F64, I64, B, String, Vector
from monitoringserver.promql.xxhash import labels_hash

__all__ = ["aggregate", "format_value", "group_ids", "kahan_sum"]

Idx = NDArray[np.intp]

_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def kahan_sum(values: F64, present: B) -> F64:
    """Compensated sum along axis 0 of the present entries."""
    total = np.zeros(values.shape[1:], dtype=np.float64)
    comp = np.zeros_like(total)
    with np.errstate(all="ignore"):
        for row, mask in zip(values, present, strict=True):
            x = np.where(mask, row, 0.0)
            t = total + x
            big = np.abs(total) >= np.abs(x)
            comp += np.where(big, (total - t) + x, (x - t) + total)
            total = t
        comp = np.where(np.isinf(total), 0.0, comp)
        return np.asarray(total + comp, dtype=np.float64)


def format_value(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``."""
    if np.isnan(v):
        return "NaN"
    if np.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return np.format_float_positional(v, trim="-")


def group_ids(labels: list[Labels], by: bool, names: frozenset[str]) -> tuple[list[Labels], Idx]:
    """Group keys in order of first appearance and each series' group number.

    ``by``: the key keeps the labels in ``names``; ``without``: it drops them and the
    metric name. One pass over the label sets, however many steps the query has.
    """
    if by:
        keys = [tuple([p for p in lbl if p[0] in names]) for lbl in labels]
    else:
        dropped = names | {METRIC_NAME}
        keys = [tuple([p for p in lbl if p[0] not in dropped]) for lbl in labels]
    index: dict[Labels, int] = {}
    gid = np.asarray([index.setdefault(k, len(index)) for k in keys], dtype=np.intp)
    gid.flags.writeable = False  # it may be shared through the memo
    return list(index), gid


_GROUPS: LabelsMemo[tuple[list[Labels], Idx]] = LabelsMemo()


def _members(gid: Idx, groups: int) -> list[list[int]]:
    """Series indices of each group, ascending."""
    order = np.argsort(gid, kind="stable")
    bounds = np.searchsorted(gid[order], np.arange(groups + 1)).tolist()
    flat = order.tolist()
    return [flat[a:b] for a, b in itertools.pairwise(bounds)]


def aggregate(ev: Evaluator, node: pp.AggregateExpr, ts: I64) -> Vector:
    op = str(node.op)
    vec = ev.eval_vector(node.expr, ts)
    mod = node.modifier
    by = mod is None or mod.type == pp.AggModifierType.By
    names = frozenset(mod.labels if mod is not None else [])
    param_scalar: F64 | None = None
    param_str = ""
    if op in ("topk", "bottomk", "quantile", "limitk", "limit_ratio"):
        assert node.param is not None
        param_scalar = ev.eval_scalar(node.param, ts).values
    elif op == "count_values":
        assert node.param is not None
        label_value = ev.eval(node.param, ts)
        if not isinstance(label_value, String):
            raise BadDataError("cannot evaluate count_values: label parameter must be a string")
        param_str = label_value.value
    keys, gid = _GROUPS.get(vec.labels, (by, names), lambda: group_ids(vec.labels, by, names))
    steps = len(ts)
    if op in _GROUPED and keys:
        return _grouped(op, vec, keys, gid, steps)
    groups = dict(zip(keys, _members(gid, len(keys)), strict=True))
    if op in ("topk", "bottomk", "limitk", "limit_ratio"):
        assert param_scalar is not None
        return _select(ev, node, op, vec, groups, param=param_scalar, steps=steps)
    if op == "count_values":
        return _count_values(vec, groups, param_str, steps)
    if op == "quantile":
        assert param_scalar is not None
        phi = param_scalar
        bad = phi[(phi < 0) | (phi > 1) | np.isnan(phi)]
        if len(bad) and node.param is not None and vec.present.any():
            ev.warn(
                f"quantile value should be between 0 and 1, got {format_value(bad[0])}",
                node.param,
            )
    out_labels: list[Labels] = []
    rows_v: list[F64] = []
    rows_p: list[B] = []
    drops: list[bool] = []
    for key, idx in groups.items():
        v = vec.values[idx]
        p = vec.present[idx]
        count = p.sum(axis=0)
        any_p = count > 0
        if not any_p.any():
            continue
        out_labels.append(key)
        rows_p.append(any_p)
        drops.append(bool(vec.drop_name[idx].any()) and METRIC_NAME in dict(key))
        rows_v.append(_reduce(op, v, p, count, param_scalar))
    if not out_labels:
        return Vector.empty(steps)
    return Vector(
        out_labels,
        np.array(rows_v, dtype=np.float64).reshape(-1, steps),
        np.array(rows_p, dtype=np.bool_).reshape(-1, steps),
        np.array(drops, dtype=np.bool_),
    )


_GROUPED = frozenset({"sum", "avg", "count", "group", "min", "max"})


def _grouped(op: str, vec: Vector, keys: list[Labels], gid: Idx, steps: int) -> Vector:
    """sum/avg/count/group/min/max for every group at once with ``ufunc.reduceat``.

    Rows are sorted by group so each group is a contiguous block; groups whose sums
    could suffer cancellation are recomputed with Kahan summation.
    """
    order = np.argsort(gid, kind="stable")
    starts = np.searchsorted(gid[order], np.arange(len(keys)))
    v = vec.values[order]
    p = vec.present[order]
    count = np.add.reduceat(p.astype(np.int64), starts, axis=0)

    def rows(g: int) -> Idx:
        return order[starts[g] : starts[g + 1] if g + 1 < len(keys) else len(order)]

    with np.errstate(all="ignore"):
        if op in ("sum", "avg"):
            vz = np.where(p, v, 0.0)
            total = np.add.reduceat(vz, starts, axis=0)
            big = np.maximum.reduceat(np.abs(vz), starts, axis=0)
            risky = np.isfinite(big) & np.isfinite(total) & (big > 1e6 * np.abs(total))
            for g in np.flatnonzero(risky.any(axis=1)).tolist():
                total[g] = kahan_sum(vec.values[rows(g)], vec.present[rows(g)])
            out = total / np.maximum(count, 1) if op == "avg" else total
            if op == "avg":
                finite_in = ~np.logical_or.reduceat(np.isinf(vz), starts, axis=0)
                for g in np.flatnonzero((np.isinf(out) & finite_in).any(axis=1)).tolist():
                    idx = rows(g)
                    out[g] = _reduce("avg", vec.values[idx], vec.present[idx], count[g], None)
        elif op == "count":
            out = count.astype(np.float64)
        elif op == "group":
            out = np.ones(count.shape)
        else:
            red = np.fmin if op == "min" else np.fmax
            out = red.reduceat(np.where(p, v, np.nan), starts, axis=0)
    present = count > 0
    keep = np.flatnonzero(present.any(axis=1))
    any_drop = np.logical_or.reduceat(vec.drop_name[order], starts)
    drops = np.array(
        [bool(any_drop[g]) and any(n == METRIC_NAME for n, _ in keys[g]) for g in keep.tolist()],
        dtype=np.bool_,
    )
    return Vector(
        [keys[g] for g in keep.tolist()],
        np.asarray(out, dtype=np.float64)[keep].reshape(-1, steps),
        present[keep].reshape(-1, steps),
        drops,
    )


def _reduce(op: str, v: F64, p: B, count: NDArray[np.int64], phi: F64 | None) -> F64:
    with np.errstate(all="ignore"):
        if op == "sum":
            return kahan_sum(v, p)
        if op == "count":
            return count.astype(np.float64)
        if op == "group":
            return np.ones(v.shape[1])
        if op == "avg":
            n = np.maximum(count, 1)
            total = kahan_sum(v, p)
            mean = total / n
            overflow = np.isinf(mean) & ~np.isinf(np.where(p, v, 0)).any(axis=0)
            if overflow.any():
                mean = np.where(overflow, kahan_sum(v / n, p), mean)
            return np.asarray(mean, dtype=np.float64)
        if op in ("min", "max"):
            masked = np.where(p, v, np.nan)
            red = np.fmin if op == "min" else np.fmax
            return np.asarray(red.reduce(masked, axis=0), dtype=np.float64)
        if op in ("stddev", "stdvar"):
            n = np.maximum(count, 1)
            mean = kahan_sum(v, p) / n
            dev = np.where(p, (v - mean) ** 2, 0.0)
            var = kahan_sum(dev, p) / n
            var = np.where(count == 1, np.where(np.isfinite(mean), 0.0, np.nan), var)
            return np.asarray(np.sqrt(var) if op == "stddev" else var, dtype=np.float64)
        if op == "quantile":
            assert phi is not None
            out = np.full(v.shape[1], np.nan)
            for t in range(v.shape[1]):
                out[t] = quantile(float(phi[t]), v[p[:, t], t])
            return out
    raise ExecutionError(f"cannot evaluate aggregation {op}: unknown operator")


def quantile(q: float, values: F64) -> float:
    """Prometheus' ``quantile``: linear interpolation between closest ranks."""
    if len(values) == 0 or np.isnan(q):
        return float("nan")
    if q < 0:
        return float("-inf")
    if q > 1:
        return float("inf")
    nan_first = np.concatenate([values[np.isnan(values)], np.sort(values[~np.isnan(values)])])
    n = len(nan_first)
    rank = q * (n - 1)
    lower = max(0, int(np.floor(rank)))
    upper = min(n - 1, lower + 1)
    weight = rank - np.floor(rank)
    with np.errstate(all="ignore"):
        return float(nan_first[lower] * (1 - weight) + nan_first[upper] * weight)


def _series_hash(labels: Labels) -> float:
    """The series' position in ``[0, 1]`` for ``limit_ratio``, as Prometheus computes it."""
    return labels_hash(labels) / float(2**64 - 1)


def _select(
    ev: Evaluator,
    node: pp.AggregateExpr,
    op: str,
    vec: Vector,
    groups: dict[Labels, list[int]],
    *,
    param: F64,
    steps: int,
) -> Vector:
    """topk, bottomk, limitk, limit_ratio: keep input series where selected."""
    present = np.zeros_like(vec.present)
    rank_out = np.full(vec.present.shape, np.iinfo(np.int64).max, dtype=np.int64)
    if op == "limit_ratio":
        ratio = param.copy()
        for bad in ratio[(ratio < -1) | (ratio > 1)][:1].tolist():
            capped = 1 if bad > 0 else -1
            ev.warn(
                f"ratio value should be between -1 and 1, got {format_value(bad)}, capping to "
                f"{capped}",
                node.param if node.param is not None else node,
            )
        ratio = np.clip(ratio, -1, 1)
        if np.isnan(ratio).any():
            raise ExecutionError("Ratio value is NaN")
        for i, lbl in enumerate(vec.labels):
            off = _series_hash(lbl)
            sel = np.where(ratio >= 0, off < ratio, off >= 1.0 + ratio)
            present[i] = vec.present[i] & sel
        return Vector(vec.labels, vec.values, present, vec.drop_name)
    if np.isnan(param).any():
        raise ExecutionError("Parameter value is NaN")
    if (np.abs(param) >= 2**63).any():
        bad = param[np.abs(param) >= 2**63][0]
        raise ExecutionError(f"Scalar value {format_value(bad)} overflows int64")
    k = np.trunc(param).astype(np.int64)
    for idx in groups.values():
        p = vec.present[idx]
        if op == "limitk":
            rank = np.cumsum(p, axis=0) - 1
        else:
            v = vec.values[idx]
            nan = np.isnan(v)
            key = -v if op == "topk" else v
            key = np.where(nan, 0.0, key)
            order = np.lexsort((key, nan, ~p), axis=0)
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(len(idx))[:, None].repeat(steps, 1), axis=0)
        sel = p & (rank < k[None, :])
        present[idx] = sel
        rank_out[idx] = np.where(sel, rank, rank_out[idx])
    out = Vector(vec.labels, vec.values, present, vec.drop_name)
    if steps == 1 and op in ("topk", "bottomk"):
        first_idx = {i: n for n, idx in enumerate(groups.values()) for i in idx}
        order_list = sorted(
            range(len(vec.labels)), key=lambda i: (first_idx[i], int(rank_out[i, 0]))
        )
        out = out.take(order_list)
    return out


def _go_quote(text: str) -> str:
    """Quote like Go's ``%q``; code points below 256 from ``\\x`` escapes print as ``\\xNN``."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _count_values(vec: Vector, groups: dict[Labels, list[int]], label: str, steps: int) -> Vector:
    if not _LABEL_RE.fullmatch(label):
        raise ExecutionError(f"invalid label name {_go_quote(label)}")
    out_labels: list[Labels] = []
    rows: list[F64] = []
    for key, idx in groups.items():
        v = vec.values[idx]
        p = vec.present[idx]
        vals = v[p]
        uniq = np.unique(vals[~np.isnan(vals)]).tolist()
        if np.isnan(vals).any():
            uniq.append(float("nan"))
        for u in uniq:
            hit = (np.isnan(v) if np.isnan(u) else v == u) & p
            counts = hit.sum(axis=0).astype(np.float64)
            d = dict(key)
            d[label] = format_value(u)
            out_labels.append(tuple(sorted(d.items())))
            rows.append(counts)
    if not out_labels:
        return Vector.empty(steps)
    values = np.array(rows, dtype=np.float64).reshape(-1, steps)
    vec_out = Vector(out_labels, values, values > 0, np.zeros(len(out_labels), dtype=np.bool_))
    from monitoringserver.promql.evaluator import merge_series

    summed: dict[Labels, int] = {}
    for i, lbl in enumerate(out_labels):
        if lbl in summed:
            j = summed[lbl]
            vec_out.values[j] += vec_out.values[i]
            vec_out.present[j] |= vec_out.present[i]
            vec_out.present[i] = False
        else:
            summed[lbl] = i
    return merge_series(vec_out.compact(), "vector cannot contain metrics with the same labelset")
