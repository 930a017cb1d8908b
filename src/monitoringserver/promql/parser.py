"""Adapter over ``promql_parser``: parsing with our errors, durations and matchers.

The rest of the package reads the parser's AST through these helpers only, so a
parser upgrade touches one module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading

import promql_parser as pp

from monitoringserver.errors import BadDataError
from monitoringserver.model.matchers import Matcher, MatchOp

__all__ = [
    "at_ms",
    "duration_ms",
    "format_query",
    "parse",
    "selector_matchers",
    "unwrap_parens",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MS = dt.timedelta(milliseconds=1)
_OPS = {
    "Equal": MatchOp.EQ,
    "NotEqual": MatchOp.NEQ,
    "Re": MatchOp.RE,
    "NotRe": MatchOp.NRE,
}
_registered = False
_register_lock = threading.Lock()


def _register_aliases() -> None:
    """Teach the parser ``holt_winters``, the pre-3.0 name of double_exponential_smoothing."""
    global _registered  # noqa: PLW0603 - one-time process-wide parser registration
    with _register_lock:
        if _registered:
            return
        with contextlib.suppress(ValueError):  # already known to this parser build
            pp.register_extra_functions(
                [
                    pp.Function(
                        "holt_winters",
                        [pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar],
                        pp.ValueType.Vector,
                    )
                ]
            )
        _registered = True


def parse(query: str) -> pp.Expr:
    """Parse ``query``; raises ``BadDataError`` (Prometheus ``bad_data``) on any error."""
    _register_aliases()
    if not query.strip():
        raise BadDataError("cannot parse query: empty query")
    try:
        return pp.parse(query)
    except BaseException as exc:  # the Rust extension raises ValueError and panics
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise BadDataError(f"cannot parse query {query!r}: {exc}") from exc


def format_query(query: str) -> str:
    """The canonical (prettified) form of ``query``."""
    return str(parse(query).prettify())


def duration_ms(delta: dt.timedelta | None) -> int:
    """A parser duration in integer milliseconds (0 for ``None``); may be negative."""
    if delta is None:
        return 0
    return int(delta // _MS)


def at_ms(at: pp.AtModifier | None, start_ms: int, end_ms: int) -> int | None:
    """The ``@`` time in milliseconds, resolving ``start()`` and ``end()``."""
    if at is None:
        return None
    if at.type == pp.AtModifierType.Start:
        return start_ms
    if at.type == pp.AtModifierType.End:
        return end_ms
    assert at.at is not None
    return round((at.at - _EPOCH) / _MS)


def selector_matchers(vs: pp.VectorSelector) -> list[list[Matcher]]:
    """Alternative matcher groups of a selector (``{a="1" or b="2"}`` gives two groups)."""
    groups_src: list[list[pp.Matcher]] = []
    if vs.matchers.or_matchers:
        groups_src = [list(g) for g in vs.matchers.or_matchers]
    else:
        groups_src = [list(vs.matchers.matchers)]
    groups: list[list[Matcher]] = []
    for src in groups_src:
        group = [Matcher(m.name, _op(m.op), m.value) for m in src]
        if vs.name is not None and not any(m.name == "__name__" for m in group):
            group.insert(0, Matcher("__name__", MatchOp.EQ, vs.name))
        if not any(not m.matches_empty() for m in group):
            raise BadDataError(
                f"cannot select {vs}: vector selector must contain at least one non-empty matcher"
            )
        groups.append(group)
    return groups


def _op(op: pp.MatchOp) -> MatchOp:
    return _OPS[str(op).rsplit(".", 1)[-1]]


def unwrap_parens(expr: pp.Expr) -> pp.Expr:
    while isinstance(expr, pp.ParenExpr):
        expr = expr.expr
    return expr
