"""A parser for the LogQL subset the Loki API serves.

Log queries: a stream selector ``{name="v", other=~"re"}`` followed by stages
``|= "s"``, ``!= "s"``, ``|~ "re"``, ``!~ "re"``, ``| json``, ``| logfmt`` and label
filters ``| name op value`` (``= != =~ !~`` with a string; ``== != > >= < <=`` with a
number), several joined by ``and`` or ``,``.

Metric queries: ``count_over_time``, ``rate``, ``bytes_over_time``, ``bytes_rate`` of
``<log query>[<duration>]``, optionally inside ``sum|min|max|avg|count [by|without
(labels)] ( ... )`` (the grouping may also follow the parentheses). ``vector(n)``, and
sums of it, answer Grafana's connection test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from monitoringserver.errors import BadDataError
from monitoringserver.logs.api import LineFilter, LineOp, LogQuery, NumericFilter
from monitoringserver.model.matchers import Matcher, MatchOp

__all__ = [
    "LogSelector",
    "MetricExpr",
    "VectorExpr",
    "parse_duration_ms",
    "parse_logql",
]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<dur>\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y)(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))*)(?![\w.])
    | (?P<num>[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<op>\|=|\|~|!=|!~|=~|==|>=|<=|[=><|{}()\[\],+])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_UNITS_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_RANGE_FUNCS = ("count_over_time", "rate", "bytes_over_time", "bytes_rate")
_AGGS = ("sum", "min", "max", "avg", "count")


def parse_duration_ms(text: str) -> int:
    """``5m``, ``1h30m``, ``250ms`` or plain seconds (``15``, ``0.5``) → ms."""
    t = text.strip()
    try:
        return int(float(t) * 1000)
    except ValueError:
        pass
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)", t)
    if not parts or "".join(a + b for a, b in parts) != t:
        raise BadDataError(f"cannot parse duration {text!r}")
    return int(sum(float(a) * _UNITS_MS[b] for a, b in parts))


@dataclass(frozen=True, slots=True)
class LogSelector:
    """A log query: everything but time range, limit and direction."""

    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...] = ()
    parsers: tuple[str, ...] = ()
    numeric: tuple[NumericFilter, ...] = ()

    def to_query(
        self,
        start_ms: int | None,
        end_ms: int | None,
        *,
        limit: int = 100,
        direction: str = "backward",
    ) -> LogQuery:
        return LogQuery(
            start_ms=start_ms,
            end_ms=end_ms,
            matchers=self.matchers,
            filters=self.filters,
            limit=limit,
            direction=direction,
            parsers=self.parsers,
            numeric=self.numeric,
        )


@dataclass(frozen=True, slots=True)
class MetricExpr:
    """``agg by (grouping) (func(selector[range_ms]))``; ``agg`` None = no aggregation."""

    func: str
    selector: LogSelector
    range_ms: int
    agg: str | None = None
    grouping: tuple[str, ...] = ()
    without: bool = False


@dataclass(frozen=True, slots=True)
class VectorExpr:
    value: float


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                if text[pos:].strip() == "":
                    break
                raise BadDataError(
                    f"cannot parse LogQL {text!r}: unexpected {text[pos : pos + 10]!r}"
                )
            kind = m.lastgroup
            assert kind is not None
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self, k: int = 0) -> tuple[str, str]:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else ("eof", "")

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        tk, tv = self.peek()
        if (kind is not None and tk != kind) or (value is not None and tv != value):
            want = value or kind
            raise BadDataError(f"cannot parse LogQL {self.text!r}: expected {want}, got {tv!r}")
        self.i += 1
        return tv

    def string(self) -> str:
        raw = self.take("str")
        if raw.startswith("`"):
            return raw[1:-1]
        return re.sub(
            r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), raw[1:-1]
        )

    def selector(self) -> LogSelector:
        self.take("op", "{")
        matchers: list[Matcher] = []
        while self.peek() != ("op", "}"):
            name = self.take("ident")
            op = self.take("op")
            if op not in ("=", "!=", "=~", "!~"):
                raise BadDataError(f"cannot parse LogQL {self.text!r}: bad matcher operator {op!r}")
            matchers.append(Matcher(name, MatchOp(op), self.string()))
            if self.peek() == ("op", ","):
                self.take()
        self.take("op", "}")
        if not any(not m.matches_empty() for m in matchers):
            raise BadDataError(
                f"cannot parse LogQL {self.text!r}: the selector needs at least one matcher "
                "that does not match the empty string"
            )
        filters: list[LineFilter] = []
        parsers: list[str] = []
        numeric: list[NumericFilter] = []
        while True:
            tk, tv = self.peek()
            if tk == "op" and tv in ("|=", "!=", "|~", "!~"):
                self.take()
                filters.append(LineFilter(LineOp(tv), self.string()))
            elif (tk, tv) == ("op", "|"):
                self.take()
                word = self.take("ident")
                if word in ("json", "logfmt"):
                    parsers.append(word)
                elif word in ("drop", "keep"):
                    self._label_list()
                else:
                    self.i -= 1
                    self._label_filters(matchers, numeric)
            else:
                break
        return LogSelector(tuple(matchers), tuple(filters), tuple(parsers), tuple(numeric))

    def _label_list(self) -> None:
        """``| drop a, b="v"`` / ``| keep ...``: accepted and ignored (this server adds
        no ``__error__`` labels, and stream labels are not reshaped)."""
        while True:
            self.take("ident")
            if self.peek()[0] == "op" and self.peek()[1] in ("=", "!=", "=~", "!~"):
                self.take()
                self.string()
            if self.peek() != ("op", ","):
                return
            self.take()

    def _label_filters(self, matchers: list[Matcher], numeric: list[NumericFilter]) -> None:
        while True:
            name = self.take("ident")
            op = self.take("op")
            if self.peek()[0] == "str":
                if op == "==":
                    op = "="
                if op not in ("=", "!=", "=~", "!~"):
                    raise BadDataError(f"cannot parse LogQL {self.text!r}: bad operator {op!r}")
                matchers.append(Matcher(name, MatchOp(op), self.string()))
            else:
                kind, value = self.peek()
                if kind not in ("num", "dur"):
                    raise BadDataError(f"cannot parse LogQL {self.text!r}: expected a value")
                self.take()
                number = float(value) if kind == "num" else parse_duration_ms(value) / 1000
                numeric.append(NumericFilter(name, "==" if op == "=" else op, number))
            if self.peek() in (("ident", "and"), ("op", ",")):
                self.take()
                continue
            return

    def grouping(self) -> tuple[tuple[str, ...], bool] | None:
        tk, tv = self.peek()
        if tk != "ident" or tv not in ("by", "without"):
            return None
        self.take()
        self.take("op", "(")
        names: list[str] = []
        while self.peek() != ("op", ")"):
            names.append(self.take("ident"))
            if self.peek() == ("op", ","):
                self.take()
        self.take("op", ")")
        return tuple(names), tv == "without"

    def expr(self) -> LogSelector | MetricExpr | VectorExpr:
        tk, tv = self.peek()
        if tk == "op" and tv == "{":
            return self.selector()
        if tk == "ident" and tv == "vector":
            total = 0.0
            while True:
                self.take("ident", "vector")
                self.take("op", "(")
                total += float(self.take("num"))
                self.take("op", ")")
                if self.peek() != ("op", "+"):
                    return VectorExpr(total)
                self.take()
        if tk == "ident" and tv in _AGGS:
            self.take()
            group = self.grouping()
            self.take("op", "(")
            inner = self.range_func()
            self.take("op", ")")
            group = group or self.grouping() or ((), False)
            return MetricExpr(inner.func, inner.selector, inner.range_ms, tv, group[0], group[1])
        if tk == "ident" and tv in _RANGE_FUNCS:
            return self.range_func()
        raise BadDataError(f"cannot parse LogQL {self.text!r}: unsupported expression at {tv!r}")

    def range_func(self) -> MetricExpr:
        func = self.take("ident")
        if func not in _RANGE_FUNCS:
            raise BadDataError(f"cannot parse LogQL {self.text!r}: unsupported function {func!r}")
        self.take("op", "(")
        sel = self.selector()
        self.take("op", "[")
        tk, tv = self.peek()
        if tk not in ("dur", "num"):
            raise BadDataError(f"cannot parse LogQL {self.text!r}: expected a range duration")
        self.take()
        self.take("op", "]")
        self.take("op", ")")
        rng = parse_duration_ms(tv)
        if rng <= 0:
            raise BadDataError(f"cannot parse LogQL {self.text!r}: the range must be positive")
        return MetricExpr(func, sel, rng)


def parse_logql(text: str) -> LogSelector | MetricExpr | VectorExpr:
    """Parse a query; raises ``BadDataError`` with the position of the problem."""
    p = _Parser(text)
    out = p.expr()
    if p.peek()[0] != "eof":
        raise BadDataError(f"cannot parse LogQL {text!r}: unexpected {p.peek()[1]!r} at the end")
    return out
