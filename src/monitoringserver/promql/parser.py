"""Adapter over ``promql_parser``: parsing with our errors, durations and matchers.

The rest of the package reads the parser's AST through these helpers only, so a
parser upgrade touches one module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import threading
from typing import TypeVar

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
_K = TypeVar("_K")
_V = TypeVar("_V")
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


#: A matcher name added to ``info()``'s selector so the parser accepts selectors whose
#: matchers all match the empty string (valid there in Prometheus); ignored when evaluating.
INFO_SENTINEL = "__info_selector__"
_INFO_ARG = re.compile(r"(\binfo\s*\(.*,\s*\{)([^{}]*)(\}\s*\))", re.S)


def _parse(query: str) -> pp.Expr:
    try:
        return pp.parse(query)
    except BaseException as exc:  # the Rust extension raises ValueError and panics
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        raise BadDataError(f"cannot parse query {query!r}: {exc}") from exc


#: Parsed queries (the AST is immutable) and selector matchers, remembered for repeated
#: queries (dashboards refresh the same ones): at most this many entries each, oldest
#: dropped first; queries longer than ``_CACHE_MAX_CHARS`` are not remembered.
_CACHE_ENTRIES = 256
_CACHE_MAX_CHARS = 4096
_parsed: dict[str, pp.Expr] = {}
_matchers: dict[int, tuple[pp.VectorSelector, list[list[Matcher]]]] = {}
_cache_lock = threading.Lock()


def _remember(cache: dict[_K, _V], key: _K, value: _V) -> None:
    with _cache_lock:
        if key not in cache and len(cache) >= _CACHE_ENTRIES:
            cache.pop(next(iter(cache)))
        cache[key] = value


def parse(query: str) -> pp.Expr:
    """Parse ``query``; raises ``BadDataError`` (Prometheus ``bad_data``) on any error.

    The same text gives the same (immutable) AST object while it is remembered."""
    hit = _parsed.get(query)
    if hit is not None:
        return hit
    expr = _parse_new(query)
    if len(query) <= _CACHE_MAX_CHARS:
        _remember(_parsed, query, expr)
    return expr


def _parse_new(query: str) -> pp.Expr:
    _register_aliases()
    if not query.strip():
        raise BadDataError("cannot parse query: empty query")
    try:
        return _parse(query)
    except BadDataError as exc:
        if "non-empty matcher" not in str(exc) or not _INFO_ARG.search(query):
            raise
        patched = _INFO_ARG.sub(
            lambda m: (
                f'{m.group(1)}{m.group(2)}, {INFO_SENTINEL}=~".+"{m.group(3)}'
                if m.group(2).strip()
                else f'{m.group(1)}{INFO_SENTINEL}=~".+"{m.group(3)}'
            ),
            query,
        )
        try:
            return _parse(patched)
        except BadDataError:
            raise exc from None


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


#: Marker matcher standing for the ``anchored``/``smoothed`` keywords (see ``extended``).
EXT_MODE_LABEL = "__ext_mode__"


def extended_mode(vs: pp.VectorSelector) -> str | None:
    """``"anchored"``/``"smoothed"`` when the selector carried that keyword, else ``None``."""
    for m in vs.matchers.matchers:
        if m.name == EXT_MODE_LABEL:
            return str(m.value).removeprefix("x_")
    return None


def selector_matchers(vs: pp.VectorSelector) -> list[list[Matcher]]:
    """Alternative matcher groups of a selector (``{a="1" or b="2"}`` gives two groups).

    Remembered per selector object (a remembered AST's selectors are the same objects
    every time); the caller gets its own lists."""
    hit = _matchers.get(id(vs))
    if hit is not None and hit[0] is vs:
        return [list(g) for g in hit[1]]
    groups = _selector_matchers(vs)
    _remember(_matchers, id(vs), (vs, [list(g) for g in groups]))
    return groups


def _selector_matchers(vs: pp.VectorSelector) -> list[list[Matcher]]:
    groups_src: list[list[pp.Matcher]] = []
    if vs.matchers.or_matchers:
        groups_src = [list(g) for g in vs.matchers.or_matchers]
    else:
        groups_src = [list(vs.matchers.matchers)]
    groups: list[list[Matcher]] = []
    for src in groups_src:
        group = [_matcher(m) for m in src if m.name != EXT_MODE_LABEL]
        if vs.name is not None and not any(m.name == "__name__" for m in group):
            group.insert(0, Matcher("__name__", MatchOp.EQ, vs.name))
        if not any(not m.matches_empty() for m in group):
            raise BadDataError(
                f"cannot select {vs}: vector selector must contain at least one non-empty matcher"
            )
        groups.append(group)
    return groups


_FLAG_GROUP = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)\)")


def translate_regex(pattern: str) -> str:
    """Rewrite RE2 syntax Python's ``re`` rejects: ``(?i)`` in the middle of a pattern.

    RE2 applies a bare flag group to the rest of the enclosing group; Python only
    allows global flags at the very start, so each one becomes a scoped ``(?i:...)``
    closed where the enclosing group (or alternative) ends. Both engines accept the
    result, so it is also safe to hand to an RE2-based store.
    """
    if "(?" not in pattern:
        return pattern
    out: list[str] = []
    scopes: list[list[str]] = [[]]  # per open group: flag scopes opened inside it
    i = 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            i += 1
            for lead in ("^", "]"):
                if pattern.startswith(lead, i):
                    out.append(lead)
                    i += 1
            continue
        m = _FLAG_GROUP.match(pattern, i) if c == "(" else None
        if m:
            flags = m.group(1).replace("U", "")
            out.append(f"(?{flags}:" if flags.strip("-") else "(?:")
            scopes[-1].append(flags)
            i = m.end()
            continue
        if c == "(":
            scopes.append([])
        elif c == "|":
            opened = scopes[-1]
            out.append(")" * len(opened) + "|" + "".join(f"(?{f}:" for f in opened))
            i += 1
            continue
        elif c == ")" and len(scopes) > 1:
            out.append(")" * len(scopes.pop()))
        out.append(c)
        i += 1
    out.append(")" * sum(len(s) for s in scopes))
    return "".join(out)


def _op(op: pp.MatchOp) -> MatchOp:
    return _OPS[str(op).rsplit(".", 1)[-1]]


def matcher_from_parser(m: pp.Matcher) -> Matcher:
    """One parser matcher as a model matcher (regexes translated to Python syntax)."""
    return _matcher(m)


def _matcher(m: pp.Matcher) -> Matcher:
    op = _op(m.op)
    value = translate_regex(m.value) if op in (MatchOp.RE, MatchOp.NRE) else m.value
    return Matcher(m.name, op, value)


def unwrap_parens(expr: pp.Expr) -> pp.Expr:
    while isinstance(expr, pp.ParenExpr):
        expr = expr.expr
    return expr
