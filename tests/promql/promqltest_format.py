"""Reader for Prometheus' promqltest scenario files (the format in README.promqltest.md).

``parse_file(path)`` turns a file into commands: ``("load", LoadCmd)``, ``("clear", None)``
and ``("eval", Case)``; ``expand_points`` implements promtool's series notation.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import promql_parser as pp

from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.samples import STALE_NAN

_DUR = re.compile(r"(-?)((?:\d+(?:\.\d+)?(?:ms|y|w|d|h|m|s))+)$")
_DUR_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|y|w|d|h|m|s)")
_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 604_800_000,
    "y": 31_536_000_000,
}
_EVAL_INSTANT = re.compile(r"^eval(?:_(fail|warn|info|ordered))?\s+instant\s+at\s+(\S+)\s+(.+)$")
_EVAL_RANGE = re.compile(
    r"^eval(?:_(fail|warn|info|ordered))?\s+range\s+from\s+(\S+)\s+to\s+(\S+)\s+step\s+(\S+)\s+(.+)$"
)
_TOKEN = re.compile(r"\{\{.*?\}\}(?:[+-]\{\{.*?\}\})?(?:x\d+)?|\S+")
SERIES_LINE = re.compile(r"^((?:[^{\s]*\{(?:[^}\"]|\"(?:[^\"\\]|\\.)*\")*\})|[^\s{]+)\s*(.*)$")

EPSILON = 1e-6


class Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    """The case cannot run here (native histograms, unsupported syntax)."""


def parse_duration_ms(text: str) -> int:
    """``1m30s``, ``-5m``, ``0``, ``10`` (seconds) → milliseconds."""
    text = text.strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return round(float(text) * 1000)
    m = _DUR.fullmatch(text)
    if not m:
        raise ValueError(f"bad duration {text!r}")
    total = sum(round(float(n) * _UNIT_MS[u]) for n, u in _DUR_PART.findall(m.group(2)))
    return -total if m.group(1) else total


def _number(tok: str) -> float:
    low = tok.lower()
    if low in ("nan",):
        return math.nan
    if low in ("inf", "+inf"):
        return math.inf
    if low == "-inf":
        return -math.inf
    if low == "stale":
        return STALE_NAN
    if re.fullmatch(r"[+-]?0x[0-9a-f]+", low):
        return float(int(low, 16))
    return float(tok)


def expand_points(spec: str) -> list[float | None]:
    """Promtool series notation: ``1+2x3 _ stale NaN 5x2 _x3``; ``None`` means no sample."""
    out: list[float | None] = []
    for tok in _TOKEN.findall(spec):
        if tok.startswith("{{"):
            raise Skip("native histogram sample")
        if tok == "_":
            out.append(None)
            continue
        m = re.fullmatch(r"_x(\d+)", tok)
        if m:
            out.extend([None] * int(m.group(1)))
            continue
        m = re.fullmatch(r"(.+?)([+-])(.+?)x(\d+)", tok)
        if m and not re.fullmatch(r"[+-]?\d+(\.\d+)?e[+-]\d+", tok, re.I):
            start, sign, step, n = m.groups()
            a, d = _number(start), _number(step) * (1 if sign == "+" else -1)
            out.extend(a + i * d for i in range(int(n) + 1))
            continue
        m = re.fullmatch(r"(.+?)x(\d+)", tok)
        if m:
            v = _number(m.group(1))
            out.extend([v] * (int(m.group(2)) + 1))
            continue
        out.append(_number(tok))
    return out


def parse_series(text: str) -> Labels:
    if text.startswith("{") and text.strip() == "{}":
        return ()
    try:
        expr = pp.parse(text)
    except BaseException as exc:  # Rust panics surface as BaseException
        raise Skip(f"cannot parse series {text!r}: {exc}") from None
    if not isinstance(expr, pp.VectorSelector):
        raise Skip(f"not a series: {text!r}")
    pairs = [(m.name, m.value) for m in expr.matchers.matchers]
    if expr.name:
        pairs.append(("__name__", expr.name))
    return make_labels(pairs)


@dataclass
class LoadCmd:
    interval_ms: int
    lines: list[str]
    nhcb: bool


@dataclass
class Case:
    line: int
    query: str
    start_ms: int
    end_ms: int
    step_ms: int  # 0 for instant
    expect_fail: bool = False
    fail_msg: str | None = None
    fail_regex: str | None = None
    ordered: bool = False
    warn: list[tuple[str, str | None]] = field(default_factory=list)
    info: list[tuple[str, str | None]] = field(default_factory=list)
    no_warn: bool = False
    no_info: bool = False
    expect_string: str | None = None
    range_vector: tuple[int, int, int] | None = None
    expected: list[tuple[Labels | None, list[float | None]]] = field(default_factory=list)
    skip: str | None = None


@dataclass
class CaseResult:
    file: str
    line: int
    query: str
    status: str  # passed / failed / skipped
    reason: str = ""


def _expect_line(case: Case, text: str) -> bool:
    if text.startswith("expect string"):
        s = text[len("expect string") :].strip()
        case.expect_string = s[1:-1]
        return True
    rm = re.match(r"^expect range vector from (\S+) to (\S+) step (\S+)$", text)
    if rm:
        start, end, step = (parse_duration_ms(x) for x in rm.groups())
        case.range_vector = (start, end, step)
        return True
    m = re.match(r"^expect\s+(\w+)(?:\s+(msg|regex)\s*:\s*(.*))?$", text)
    if not m:
        return False
    kind, mtype, val = m.group(1), m.group(2), m.group(3)
    if kind == "fail":
        case.expect_fail = True
        if mtype == "msg":
            case.fail_msg = (val or "").strip().strip('"')
        elif mtype == "regex":
            case.fail_regex = (val or "").strip().strip('"')
    elif kind == "ordered":
        case.ordered = True
    elif kind == "warn":
        case.warn.append((mtype or "", val))
    elif kind == "info":
        case.info.append((mtype or "", val))
    elif kind == "no_warn":
        case.no_warn = True
    elif kind == "no_info":
        case.no_info = True
    elif kind == "string":
        s = text[len("expect string") :].strip()
        case.expect_string = s[1:-1]
    elif kind == "range":
        rm = re.match(r"^expect range vector from (\S+) to (\S+) step (\S+)$", text)
        if not rm:
            return False
        case.range_vector = tuple(parse_duration_ms(x) for x in rm.groups())  # type: ignore[assignment]
    else:
        return False
    return True


def expanded_tokens(spec: str) -> list[float | None]:
    out: list[float | None] = []
    for tok in _TOKEN.findall(spec):
        if tok.startswith("{{"):
            m = re.search(r"x(\d+)$", tok)
            out.extend([None] * ((int(m.group(1)) + 1) if m else 1))
        else:
            out.extend(expand_points(tok))
    return out


def parse_file(path: Path) -> list[tuple[str, object]]:
    """A list of commands: ('load', (interval, lines)), ('clear', None), ('eval', Case)."""
    raw = path.read_text().splitlines()
    cmds: list[tuple[str, object]] = []
    i = 0
    while i < len(raw):
        line = raw[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        if line.startswith("load"):
            parts = line.split()
            interval = parse_duration_ms(parts[1])
            body: list[str] = []
            while i < len(raw) and raw[i].strip() and (raw[i][:1].isspace()):
                if not raw[i].strip().startswith("#"):
                    body.append(raw[i].strip())
                i += 1
            cmds.append(("load", LoadCmd(interval, body, parts[0] == "load_with_nhcb")))
            continue
        if line == "clear":
            cmds.append(("clear", None))
            continue
        if line.startswith("eval"):
            case = _parse_eval(line, i)
            while (
                i < len(raw)
                and raw[i].strip()
                and (raw[i][:1].isspace() or raw[i].lstrip().startswith("expect"))
            ):
                body_line = raw[i].strip()
                i += 1
                if body_line.startswith("#"):
                    continue
                if body_line.startswith("expect") and _expect_line(case, body_line):
                    continue
                _expected_line(case, body_line)
            cmds.append(("eval", case))
            continue
    return cmds


def _parse_eval(line: str, lineno: int) -> Case:
    m = _EVAL_INSTANT.match(line)
    if m:
        variant, at, query = m.groups()
        t = parse_duration_ms(at)
        case = Case(lineno, query, t, t, 0)
    else:
        r = _EVAL_RANGE.match(line)
        if not r:
            return Case(lineno, line, 0, 0, 0, skip=f"unparsed eval line {line!r}")
        variant, start, end, step, query = r.groups()
        case = Case(
            lineno, query, parse_duration_ms(start), parse_duration_ms(end), parse_duration_ms(step)
        )
    if variant == "fail":
        case.expect_fail = True
    elif variant == "ordered":
        case.ordered = True
    elif variant == "warn":
        case.warn.append(("", None))
    elif variant == "info":
        case.info.append(("", None))
    return case


def _expected_line(case: Case, text: str) -> None:
    if text.startswith("expected_fail_message"):
        case.fail_msg = text.split(" ", 1)[1].strip()
        return
    if text.startswith("expected_fail_regexp"):
        case.fail_regex = text.split(" ", 1)[1].strip()
        return
    if "{{" in text:
        case.skip = "native histogram in expected result"
        return
    looks_numeric = re.fullmatch(r"[-+]?(\d|\.|_)[\w.+\-]*", text) is not None
    if looks_numeric or text.lower() in ("nan", "inf", "-inf", "+inf"):
        try:
            case.expected.append((None, expand_points(text)))
            return
        except (Skip, ValueError):
            pass
    m = SERIES_LINE.match(text)
    if not m:
        case.skip = f"unparsed expectation {text!r}"
        return
    try:
        labels = parse_series(m.group(1))
        case.expected.append((labels, expand_points(m.group(2))))
    except Skip as exc:
        case.skip = str(exc)
    except ValueError as exc:
        case.skip = f"unparsed expectation {text!r}: {exc}"
