"""Label manipulation and sorting functions: ``label_replace``, ``label_join``, ``sort*``."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from monitoringserver.errors import ExecutionError
from monitoringserver.model.labels import METRIC_NAME, Labels, get
from monitoringserver.promql.evaluator import merge_series
from monitoringserver.promql.parser import translate_regex
from monitoringserver.promql.values import Vector

__all__ = ["LABEL_FUNCTIONS", "expand_template"]

_LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_TEMPLATE = re.compile(r"\$(?:\$|\{([A-Za-z0-9_]+)\}|([A-Za-z0-9_]+))")
_DUP = "vector cannot contain metrics with the same labelset"


def expand_template(template: str, match: re.Match[str]) -> str:
    """Go ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``; unknown groups expand to ``""``."""

    def repl(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = m.group(1) or m.group(2)
        try:
            value = match.group(int(ref)) if ref.isdigit() else match.group(ref)
        except IndexError:
            return ""
        return value or ""

    return _TEMPLATE.sub(repl, template)


def _set(labels: Labels, name: str, value: str) -> Labels:
    d = dict(labels)
    if value:
        d[name] = value
    else:
        d.pop(name, None)
    return tuple(sorted(d.items()))


def _relabel(vec: Vector, dst: str, fn: Callable[[Labels], Labels | None]) -> Vector:
    labels = list(vec.labels)
    drops = vec.drop_name.copy()
    for i, lbl in enumerate(vec.labels):
        new = fn(lbl)
        if new is not None:
            labels[i] = new
        if dst == METRIC_NAME:
            drops[i] = False
    return merge_series(Vector(labels, vec.values, vec.present, drops).compact(), _DUP)


def _label_replace(vec: Vector, args: list[str]) -> Vector:
    dst, repl, src, regex = args
    try:
        pattern = re.compile(f"(?s:{translate_regex(regex)})")
    except re.error as exc:
        raise ExecutionError(f"invalid regular expression in label_replace(): {regex}") from exc
    if not _LABEL_RE.fullmatch(dst) and dst != METRIC_NAME:
        raise ExecutionError(f"invalid destination label name in label_replace(): {dst}")

    def fn(lbl: Labels) -> Labels | None:
        m = pattern.fullmatch(get(lbl, src))
        if m is None:
            return None
        return _set(lbl, dst, expand_template(repl, m))

    return _relabel(vec, dst, fn)


def _label_join(vec: Vector, args: list[str]) -> Vector:
    dst, sep, *srcs = args
    if not _LABEL_RE.fullmatch(dst) and dst != METRIC_NAME:
        raise ExecutionError(f"invalid destination label name in label_join(): {dst}")
    for s in srcs:
        if not _LABEL_RE.fullmatch(s) and s != METRIC_NAME:
            raise ExecutionError(f"invalid source label name in label_join(): {s}")
    return _relabel(vec, dst, lambda lbl: _set(lbl, dst, sep.join(get(lbl, s) for s in srcs)))


def _natural_key(value: str) -> tuple[tuple[int, int, str], ...]:
    parts = re.findall(r"\d+|\D+", value)
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


def _by_value(vec: Vector, desc: bool) -> Vector:
    col = vec.values[:, 0] if vec.values.shape[1] else np.zeros(len(vec.labels))
    nan = np.isnan(col)
    key = np.where(nan, 0.0, -col if desc else col)
    order = np.lexsort((key, ~nan))
    return vec.take(order)


def _by_label(vec: Vector, names: list[str], desc: bool) -> Vector:
    order = sorted(
        range(len(vec.labels)),
        key=lambda i: (tuple(_natural_key(get(vec.labels[i], n)) for n in names), vec.labels[i]),
        reverse=desc,
    )
    return vec.take(order)


LABEL_FUNCTIONS: dict[str, Callable[[Vector, list[str]], Vector]] = {
    "label_replace": _label_replace,
    "label_join": _label_join,
    "sort": lambda v, _a: _by_value(v, False),
    "sort_desc": lambda v, _a: _by_value(v, True),
    "sort_by_label": lambda v, a: _by_label(v, a, False),
    "sort_by_label_desc": lambda v, a: _by_label(v, a, True),
}
