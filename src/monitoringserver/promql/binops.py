"""Binary operators: arithmetic, comparison (filter or ``bool``), and set operators.

Vector matching follows Prometheus: the signature is the ``on`` labels, or all labels
but ``__name__`` and the ``ignoring`` labels. Matching runs over all steps at once:
every (left, right) pair with equal signatures is a candidate, present where both
sides are, and the uniqueness rules are checked per step. ``fill``/``fill_left``/
``fill_right`` supply a value for a missing side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import promql_parser as pp
from numpy.typing import NDArray

from monitoringserver.errors import ExecutionError
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.promql.evaluator import Evaluator, merge_series
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.values import F64, I64, B, Scalar, Value, Vector, any_rows

__all__ = ["binary", "elementwise"]

_COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}
_SET_OPS = {"and", "or", "unless"}

_ARITH: dict[str, Callable[[F64, F64], F64]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": np.divide,
    "%": np.fmod,
    "^": np.power,
    "atan2": np.arctan2,
}
_CMP: dict[str, Callable[[F64, F64], B]] = {
    "==": np.equal,
    "!=": np.not_equal,
    ">": np.greater,
    "<": np.less,
    ">=": np.greater_equal,
    "<=": np.less_equal,
}


def elementwise(op: str, lhs: F64, rhs: F64) -> tuple[F64, B]:
    """``(value, keep)``: arithmetic keeps everything; comparisons return lhs and the test."""
    with np.errstate(all="ignore"):
        if op in _ARITH:
            value = np.asarray(_ARITH[op](lhs, rhs), dtype=np.float64)
            return value, np.ones(value.shape, dtype=np.bool_)
        keep = np.asarray(_CMP[op](lhs, rhs), dtype=np.bool_)
        return np.broadcast_to(lhs, keep.shape).astype(np.float64), keep


def binary(ev: Evaluator, node: pp.BinaryExpr, ts: I64) -> Value:
    op = str(node.op)
    lhs = ev.eval(node.lhs, ts)
    rhs = ev.eval(node.rhs, ts)
    mod = node.modifier
    return_bool = bool(mod is not None and mod.return_bool)
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        value, keep = elementwise(op, lhs.values, rhs.values)
        if op in _COMPARISONS:
            value = keep.astype(np.float64)
        return Scalar(value)
    if isinstance(lhs, Vector) and isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.values, return_bool, swap=False)
    if isinstance(lhs, Scalar) and isinstance(rhs, Vector):
        return _vector_scalar(op, rhs, lhs.values, return_bool, swap=True)
    if isinstance(lhs, Vector) and isinstance(rhs, Vector):
        if op in _SET_OPS:
            return _set_op(op, lhs, rhs, mod)
        return _vector_vector(op, lhs, rhs, mod, return_bool)
    raise ExecutionError(f"cannot evaluate binary expression {node}: operands of invalid type")


def _vector_scalar(op: str, vec: Vector, scalar: F64, return_bool: bool, swap: bool) -> Vector:
    sv = np.broadcast_to(scalar[None, :], vec.values.shape)
    lv, rv = (sv, vec.values) if swap else (vec.values, sv)
    value, keep = elementwise(op, lv, rv)
    if op in _COMPARISONS:
        if return_bool:
            return Vector(
                vec.labels,
                keep.astype(np.float64),
                vec.present.copy(),
                np.ones(len(vec.labels), dtype=np.bool_),
            )
        return Vector(vec.labels, vec.values.copy(), vec.present & keep, vec.drop_name.copy())
    return Vector(vec.labels, value, vec.present.copy(), np.ones(len(vec.labels), dtype=np.bool_))


def _matching(mod: pp.BinModifier | None) -> tuple[bool, frozenset[str]]:
    if mod is None or mod.matching is None:
        return False, frozenset()
    return mod.matching.type == pp.LabelModifierType.Include, frozenset(mod.matching.labels)


def signature(labels: Labels, on: bool, names: frozenset[str]) -> Labels:
    if on:
        return tuple([p for p in labels if p[0] in names])
    return tuple([p for p in labels if p[0] not in names and p[0] != METRIC_NAME])


def _groups(sigs: list[Labels]) -> dict[Labels, list[int]]:
    out: dict[Labels, list[int]] = {}
    for i, s in enumerate(sigs):
        out.setdefault(s, []).append(i)
    return out


def _group_presence(vec: Vector, groups: dict[Labels, list[int]]) -> dict[Labels, B]:
    return {sig: any_rows(vec.present[idx]) for sig, idx in groups.items()}


def _set_op(op: str, lhs: Vector, rhs: Vector, mod: pp.BinModifier | None) -> Vector:
    on, names = _matching(mod)
    lsig = [signature(lbl, on, names) for lbl in lhs.labels]
    rsig = [signature(lbl, on, names) for lbl in rhs.labels]
    steps = lhs.values.shape[1]
    none = np.zeros(steps, dtype=np.bool_)
    if op in ("and", "unless"):
        rp = _group_presence(rhs, _groups(rsig))
        mask = np.array([rp.get(s, none) for s in lsig], dtype=np.bool_).reshape(-1, steps)
        present = lhs.present & (mask if op == "and" else ~mask)
        return Vector(lhs.labels, lhs.values, present, lhs.drop_name)
    lp = _group_presence(lhs, _groups(lsig))
    mask = np.array([lp.get(s, none) for s in rsig], dtype=np.bool_).reshape(-1, steps)
    return Vector(
        lhs.labels + rhs.labels,
        np.concatenate([lhs.values, rhs.values]),
        np.concatenate([lhs.present, rhs.present & ~mask]),
        np.concatenate([lhs.drop_name, rhs.drop_name]),
    )


@dataclass(frozen=True, slots=True)
class _Spec:
    """How two vectors match: operator, cardinality (after the group_right swap), labels."""

    op: str
    one_to_one: bool
    swapped: bool
    on: bool
    names: frozenset[str]
    include: tuple[str, ...]
    return_bool: bool

    def result_labels(self, ll: Labels, rl: Labels) -> Labels:
        d = dict(ll)
        if self.one_to_one:
            if self.on:
                d = {k: v for k, v in d.items() if k in self.names}
            else:
                for n in self.names:
                    d.pop(n, None)
        if self.include:
            rd = dict(rl)
            for name in self.include:
                if rd.get(name):
                    d[name] = rd[name]
                else:
                    d.pop(name, None)
        return tuple(sorted(d.items()))

    def apply(self, fl: F64, fr: F64, present: B) -> tuple[F64, B]:
        """Value and presence of ``fl op fr`` given where both operands exist."""
        if self.swapped:
            fl, fr = fr, fl
        value, keep = elementwise(self.op, fl, fr)
        if self.return_bool:
            return keep.astype(np.float64), present
        return value, keep & present

    @property
    def filters(self) -> bool:
        return self.op in _COMPARISONS and not self.return_bool


def _spec(op: str, mod: pp.BinModifier | None, return_bool: bool) -> _Spec:
    card = mod.card if mod is not None else pp.VectorMatchCardinality.OneToOne
    if card == pp.VectorMatchCardinality.ManyToMany:
        card = pp.VectorMatchCardinality.OneToOne
    on, names = _matching(mod)
    include = tuple(mod.group_labels or []) if mod is not None else ()
    return _Spec(
        op,
        one_to_one=card == pp.VectorMatchCardinality.OneToOne,
        swapped=card == pp.VectorMatchCardinality.OneToMany,
        on=on,
        names=names,
        include=include,
        return_bool=return_bool,
    )


def _check_one_side(spec: _Spec, rhs: Vector, rgroups: dict[Labels, list[int]]) -> None:
    for sig, idx in rgroups.items():
        if len(idx) > 1:
            counts = rhs.present[idx].sum(axis=0)
            if (counts > 1).any():
                t = int(np.argmax(counts > 1))
                dup = [_fmt(rhs.labels[i]) for i in idx if rhs.present[i, t]][:2]
                side = "left" if spec.swapped else "right"
                raise ExecutionError(
                    f"found duplicate series for the match group {_fmt(sig)} on the {side} "
                    f"hand-side of the operation: [{', '.join(dup)}];many-to-many matching not "
                    "allowed: matching labels must be unique on one side"
                )


@dataclass(frozen=True, slots=True)
class _Match:
    """The label side of a vector match: signatures, matching pairs, result labels.

    Depends on the two label lists and the spec only, so it is remembered across
    queries (see :mod:`promql.memo`); its lists and arrays are never modified.
    """

    lsig: list[Labels]
    rsig: list[Labels]
    rgroups: dict[Labels, list[int]]
    li: NDArray[np.intp]
    ri: NDArray[np.intp]
    labels: list[Labels]
    pair_sigs: list[Labels]
    unique: bool


def _match(spec: _Spec, left: list[Labels], right: list[Labels]) -> _Match:
    lsig = [signature(lbl, spec.on, spec.names) for lbl in left]
    rsig = [signature(lbl, spec.on, spec.names) for lbl in right]
    rgroups = _groups(rsig)
    pairs_l: list[int] = []
    pairs_r: list[int] = []
    for i, sig in enumerate(lsig):
        for j in rgroups.get(sig, ()):
            pairs_l.append(i)
            pairs_r.append(j)
    li = np.asarray(pairs_l, dtype=np.intp)
    ri = np.asarray(pairs_r, dtype=np.intp)
    li.flags.writeable = False
    ri.flags.writeable = False
    labels = [spec.result_labels(left[a], right[b]) for a, b in zip(pairs_l, pairs_r, strict=True)]
    pair_sigs = [lsig[a] for a in pairs_l]
    return _Match(lsig, rsig, rgroups, li, ri, labels, pair_sigs, len(set(labels)) == len(labels))


_MATCHES: LabelsMemo[_Match] = LabelsMemo()


def _vector_vector(
    op: str, lhs: Vector, rhs: Vector, mod: pp.BinModifier | None, return_bool: bool
) -> Vector:
    spec = _spec(op, mod, return_bool)
    if spec.swapped:
        lhs, rhs = rhs, lhs
    steps = lhs.values.shape[1]
    both_labels = lhs.labels + rhs.labels
    m = _MATCHES.get(
        both_labels, (spec, len(lhs.labels)), lambda: _match(spec, lhs.labels, rhs.labels)
    )
    _check_one_side(spec, rhs, m.rgroups)
    li, ri = m.li, m.ri
    both = lhs.present[li] & rhs.present[ri]
    value, keep = spec.apply(lhs.values[li], rhs.values[ri], both)
    labels = list(m.labels)
    drops = lhs.drop_name[li].copy() if spec.filters else np.ones(len(labels), dtype=np.bool_)
    _check_unique(labels, both if spec.one_to_one else keep, m.pair_sigs, spec.one_to_one)
    parts = [Vector(labels, value.reshape(-1, steps), keep.reshape(-1, steps), drops)]
    fill = mod.fill_values if mod is not None else None
    if fill is not None and fill.rhs is not None:
        parts.append(
            _fill_missing_rhs(spec, lhs, m.lsig, _group_presence(rhs, m.rgroups), fill.rhs)
        )
    if fill is not None and fill.lhs is not None:
        lp = _group_presence(lhs, _groups(m.lsig))
        parts.append(_fill_missing_lhs(spec, rhs, m.rsig, lp, fill.lhs))
    if len(parts) == 1 and m.unique:
        return parts[0]
    merged = Vector(
        [lbl for part in parts for lbl in part.labels],
        np.concatenate([p.values for p in parts]).reshape(-1, steps),
        np.concatenate([p.present for p in parts]).reshape(-1, steps),
        np.concatenate([p.drop_name for p in parts]),
    )
    return merge_series(
        merged, "multiple matches for labels: grouping labels must ensure unique matches"
    )


def _missing(vec: Vector, sigs: list[Labels], other: dict[Labels, B]) -> B:
    steps = vec.values.shape[1]
    none = np.zeros(steps, dtype=np.bool_)
    matched = np.array([other.get(s, none) for s in sigs], dtype=np.bool_).reshape(-1, steps)
    return vec.present & ~matched


def _fill_missing_rhs(
    spec: _Spec, lhs: Vector, lsig: list[Labels], rhs_presence: dict[Labels, B], fill: float
) -> Vector:
    """Left series without a right match at a step, with the right side set to ``fill``."""
    missing = _missing(lhs, lsig, rhs_presence)
    value, keep = spec.apply(lhs.values, np.full_like(lhs.values, fill), missing)
    labels = [spec.result_labels(lbl, ()) for lbl in lhs.labels]
    drops = lhs.drop_name.copy() if spec.filters else np.ones(len(labels), dtype=np.bool_)
    return Vector(labels, value, keep, drops)


def _fill_missing_lhs(
    spec: _Spec, rhs: Vector, rsig: list[Labels], lhs_presence: dict[Labels, B], fill: float
) -> Vector:
    """Right series without a left match; the result carries the match signature only."""
    missing = _missing(rhs, rsig, lhs_presence)
    value, keep = spec.apply(np.full_like(rhs.values, fill), rhs.values, missing)
    return Vector(list(rsig), value, keep, np.ones(len(rsig), dtype=np.bool_))


def _check_unique(labels: list[Labels], keep: B, sigs: list[Labels], one_to_one: bool) -> None:
    if len(labels) < 2:
        return
    groups: dict[object, list[int]] = {}
    for k, sig in enumerate(sigs):
        key: object = sig if one_to_one else (sig, labels[k])
        groups.setdefault(key, []).append(k)
    for idx in groups.values():
        if len(idx) > 1 and (keep[idx].sum(axis=0) > 1).any():
            if one_to_one:
                raise ExecutionError(
                    "multiple matches for labels: many-to-one matching must be explicit "
                    "(group_left/group_right)"
                )
            raise ExecutionError(
                "multiple matches for labels: grouping labels must ensure unique matches"
            )


def _fmt(sig: Labels) -> str:
    return "{" + ", ".join(f'{k}="{v}"' for k, v in sig) + "}"
