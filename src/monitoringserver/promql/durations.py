"""Duration expressions (``x[5m + 1m]``, ``offset (1h / 2)``, ``[step():]``).

Prometheus accepts arithmetic, ``step()``, ``range()``, ``min_of`` and ``max_of`` where a
duration is expected (an experimental feature). Our parser does not, so when a query
fails to parse, :func:`rewrite` evaluates those expressions — they only depend on the
query's step and range — and replaces them with plain millisecond durations.

Grammar: numbers are seconds, duration literals (``1h30m``, ``500ms``) their length;
``+ - * / % ^`` with PromQL precedence (``^`` binds tighter than unary minus, right
associative). After ``offset`` the expression is either parenthesised or one signed atom
(``offset -step() * 2`` multiplies the selected vector by 2).
"""

from __future__ import annotations

import math
import re

from monitoringserver.errors import BadDataError

__all__ = ["rewrite"]

_TOKEN = re.compile(
    r"\s*(?:(?P<dur>(?:\d+(?:\.\d+)?(?:ms|y|w|d|h|m|s))+)|(?P<num>\d+(?:\.\d*)?(?:e[+-]?\d+)?"
    r"|\.\d+)|(?P<name>[A-Za-z_]+)|(?P<op>[-+*/%^(),]))",
    re.I,
)
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_PLAIN = re.compile(r"\s*-?(?:\d+(?:ms|y|w|d|h|m|s))+\s*")


class _Parser:
    def __init__(self, text: str, step_s: float, range_s: float) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m or m.end() == pos:
                raise BadDataError(f"cannot parse duration expression {text!r}")
            kind = m.lastgroup or ""
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0
        self.step_s = step_s
        self.range_s = range_s

    def peek(self) -> str:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else ""

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens) or (expected and self.tokens[self.i][1] != expected):
            raise BadDataError("cannot parse duration expression: unexpected end")
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expr(self) -> float:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()[1]
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> float:
        value = self.unary()
        while self.peek() in ("*", "/", "%"):
            op = self.take()[1]
            rhs = self.unary()
            if op == "*":
                value *= rhs
            elif rhs == 0:
                raise BadDataError("cannot evaluate duration expression: division by zero")
            else:
                value = value / rhs if op == "/" else math.fmod(value, rhs)
        return value

    def unary(self) -> float:
        if self.peek() in ("+", "-"):
            sign = -1.0 if self.take()[1] == "-" else 1.0
            return sign * self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            return float(base ** self.unary())
        return base

    def atom(self) -> float:
        kind, text = self.take()
        if kind == "dur":
            return sum(
                float(n) * _UNIT_S[u.lower()]
                for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)", text, re.I)
            )
        if kind == "num":
            return float(text)
        if text == "(":
            value = self.expr()
            self.take(")")
            return value
        if kind == "name":
            name = text.lower()
            self.take("(")
            args: list[float] = []
            while self.peek() != ")":
                args.append(self.expr())
                if self.peek() == ",":
                    self.take()
            self.take(")")
            if name == "step" and not args:
                return self.step_s
            if name == "range" and not args:
                return self.range_s
            if name in ("min_of", "max_of") and len(args) == 2:
                return min(args) if name == "min_of" else max(args)
        raise BadDataError(f"cannot parse duration expression near {text!r}")

    def done(self) -> bool:
        return self.i == len(self.tokens)


def _evaluate(text: str, step_s: float, range_s: float) -> int:
    p = _Parser(text, step_s, range_s)
    value = p.expr()
    if not p.done():
        raise BadDataError(f"cannot parse duration expression {text!r}")
    return round(value * 1000)


def _ms(value: int) -> str:
    if value == 0:
        return "0"  # the parser refuses "0ms" but accepts a bare zero
    return f"-{-value}ms" if value < 0 else f"{value}ms"


def _skip_string(q: str, i: int) -> int:
    quote = q[i]
    i += 1
    while i < len(q) and q[i] != quote:
        i += 2 if q[i] == "\\" and quote != "`" else 1
    return i + 1


def _balanced(q: str, i: int, open_: str, close: str) -> int:
    """Index just past the bracket closing the one at ``i``."""
    depth = 0
    while i < len(q):
        if q[i] == open_:
            depth += 1
        elif q[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise BadDataError("cannot parse query: unbalanced brackets")


def _offset_atom_end(q: str, i: int) -> int:
    """End of the duration after ``offset``: a parenthesised group or one signed atom."""
    while i < len(q) and q[i] in " \t+-":
        i += 1
    if i < len(q) and q[i] == "(":
        return _balanced(q, i, "(", ")")
    m = re.compile(r"[A-Za-z_]+\s*\(").match(q, i)
    if m:
        return _balanced(q, m.end() - 1, "(", ")")
    m = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|y|w|d|h|m|s)?)+").match(q, i)
    return m.end() if m else i


def rewrite(query: str, step_ms: int, range_ms: int) -> str:
    """``query`` with every duration expression replaced by a literal duration."""
    step_s, range_s = step_ms / 1000, range_ms / 1000
    out: list[str] = []
    i = 0
    while i < len(query):
        c = query[i]
        if c in "\"'`":
            end = _skip_string(query, i)
            out.append(query[i:end])
            i = end
        elif c == "{":
            end = _balanced(query, i, "{", "}")
            out.append(query[i:end])
            i = end
        elif c == "[":
            end = _balanced(query, i, "[", "]")
            inner = query[i + 1 : end - 1]
            parts = inner.split(":", 1)
            done = [
                p if not p.strip() or _PLAIN.fullmatch(p) else _ms(_evaluate(p, step_s, range_s))
                for p in parts
            ]
            out.append("[" + ":".join(done) + "]")
            i = end
        elif query.startswith("offset", i) and (i == 0 or not query[i - 1].isalnum()):
            start = i + len("offset")
            end = _offset_atom_end(query, start)
            text = query[start:end]
            out.append(
                "offset "
                + (text if _PLAIN.fullmatch(text) else _ms(_evaluate(text, step_s, range_s)))
                + " "
            )
            i = end
        else:
            out.append(c)
            i += 1
    return "".join(out)
