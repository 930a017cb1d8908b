"""Per-format line parsers: JSON, logfmt, nginx/Apache combined, syslog, plain text.

Each ``parse_*`` function takes one decoded line and returns a :class:`Parsed` or
``None`` when the line is not in that format. They never raise for bad input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import msgspec

from monitoringserver.logs.timestamps import (
    parse_clf_time,
    parse_iso_ms,
    parse_syslog_bsd_time,
    parse_ts_value,
)
from monitoringserver.model.logs import normalize_level

__all__ = [
    "Parsed",
    "parse_combined",
    "parse_json",
    "parse_logfmt",
    "parse_plain",
    "parse_syslog",
]


@dataclass(slots=True)
class Parsed:
    """What a format recognised. Empty strings / None mean "not present"."""

    format: str
    message: str
    level: str = "unknown"
    logger: str = ""
    ts_ms: int | None = None
    host: str = ""
    attrs: dict[str, str] = field(default_factory=dict)


_MSG_KEYS = ("message", "msg", "log", "text", "@message")
_LEVEL_KEYS = ("level", "lvl", "severity", "levelname", "log.level", "loglevel", "@level")
_LOGGER_KEYS = ("logger", "logger_name", "loggerName", "log.logger", "name", "component")
_TIME_KEYS = ("timestamp", "time", "ts", "@timestamp", "datetime", "asctime", "t")
_TRACE_KEYS = ("trace_id", "traceId", "traceid", "trace.id", "dd.trace_id")
_HOST_KEYS = ("host", "hostname", "server_id")


def _stringify(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    return msgspec.json.encode(value).decode()


def _flatten(obj: dict[str, object], prefix: str, out: dict[str, str], depth: int) -> None:
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 3:
            _flatten(v, f"{key}_", out, depth + 1)
        else:
            out[key] = _stringify(v)


def _pick(d: dict[str, str], keys: tuple[str, ...]) -> str:
    for k in keys:
        v = d.pop(k, None)
        if v:
            return v
    return ""


def _from_fields(fmt: str, fields: dict[str, str], fallback_message: str) -> Parsed:
    message = _pick(fields, _MSG_KEYS) or fallback_message
    level = normalize_level(_pick(fields, _LEVEL_KEYS))
    logger = _pick(fields, _LOGGER_KEYS)
    ts_text = _pick(fields, _TIME_KEYS)
    trace = _pick(fields, _TRACE_KEYS)
    host = _pick(fields, _HOST_KEYS)
    if trace:
        fields["trace_id"] = trace
    return Parsed(
        format=fmt,
        message=message,
        level=level,
        logger=logger,
        ts_ms=parse_ts_value(ts_text) if ts_text else None,
        host=host,
        attrs=fields,
    )


def parse_json(line: str) -> Parsed | None:
    """A JSON object per line; nested objects flatten with ``_`` into attrs."""
    if not line.startswith("{"):
        return None
    try:
        obj = msgspec.json.decode(line)
    except msgspec.DecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    fields: dict[str, str] = {}
    _flatten(obj, "", fields, 0)
    return _from_fields("json", fields, line)


_LOGFMT_PAIR = re.compile(r'([\w.@/-]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_logfmt(line: str) -> Parsed | None:
    """``key=value key="quoted value"``; needs at least two pairs and a leading pair."""
    if "=" not in line or not (line[:1].isalpha() or line[:1] in "_@"):
        return None
    pairs = _LOGFMT_PAIR.findall(line)
    if len(pairs) < 2 or not line.startswith(pairs[0][0] + "="):
        return None
    fields: dict[str, str] = {}
    for key, raw in pairs:
        quoted = raw.startswith('"') and raw.endswith('"') and len(raw) >= 2
        fields[key] = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\") if quoted else raw
    return _from_fields("logfmt", fields, line)


_COMBINED = re.compile(
    r"(?P<addr>\S+) (?P<ident>\S+) (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<request>[^"\\]*(?:\\.[^"\\]*)*)" (?P<status>\d{3}) (?P<size>\d+|-)'
    r'(?: "(?P<referer>[^"\\]*(?:\\.[^"\\]*)*)" "(?P<agent>[^"\\]*(?:\\.[^"\\]*)*)")?(?P<rest>.*)'
)


def parse_combined(line: str) -> Parsed | None:
    """nginx/Apache common and combined access-log lines; level from the status code.

    The line stays the message, so only ``status`` and ``method`` become attrs (for
    label filters); the other fields are in the message already (``|=``, ``regex``)
    and storing them twice would double the stored size of access logs."""
    if "[" not in line or '"' not in line:
        return None
    m = _COMBINED.fullmatch(line)
    if m is None:
        return None
    status = int(m["status"])
    attrs = {"status": m["status"]}
    method = m["request"].partition(" ")[0]
    if method:
        attrs["method"] = method
    level = "error" if status >= 500 else "warning" if status >= 400 else "info"
    return Parsed(
        format="access",
        message=line,
        level=level,
        logger="access",
        ts_ms=parse_clf_time(m["time"]),
        attrs=attrs,
    )


_SYSLOG_SEVERITY = ("critical", "critical", "critical", "error", "warning", "info", "info", "debug")
_RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?",
    re.DOTALL,
)
_RFC3164 = re.compile(
    r"(?:<(?P<pri>\d{1,3})>)?(?P<ts>\w{3} [ \d]\d \d{2}:\d{2}:\d{2}(?:\.\d+)?) (?P<host>\S+) "
    r"(?P<tag>[^:\[\s]+)(?:\[(?P<pid>[^\]]*)\])?: ?(?P<msg>.*)",
    re.DOTALL,
)
_SD_PARAM = re.compile(r'(\S+?)="((?:[^"\\]|\\.)*)"')


def _nil(v: str) -> str:
    return "" if v == "-" else v


def _pri_attrs(pri: str | None, attrs: dict[str, str]) -> str:
    if pri is None:
        return "unknown"
    p = int(pri)
    if p > 191:
        return "unknown"
    attrs["facility"] = str(p >> 3)
    return _SYSLOG_SEVERITY[p & 7]


def parse_syslog(line: str, now_ms: int) -> Parsed | None:
    """RFC 5424 (``<PRI>1 ...``) and RFC 3164 / BSD (``<PRI>Mmm dd hh:mm:ss host tag[pid]: ...``,
    PRI optional as in /var/log/syslog). Severity becomes the level, APP-NAME the logger."""
    if line.startswith("<"):
        m = _RFC5424.fullmatch(line)
        if m is not None:
            attrs: dict[str, str] = {}
            level = _pri_attrs(m["pri"], attrs)
            if _nil(m["proc"]):
                attrs["procid"] = m["proc"]
            if _nil(m["msgid"]):
                attrs["msgid"] = m["msgid"]
            if m["sd"] != "-":
                for key, val in _SD_PARAM.findall(m["sd"]):
                    attrs[key] = val.replace('\\"', '"').replace("\\]", "]").replace("\\\\", "\\")
            msg = (m["msg"] or "").removeprefix("\ufeff")
            return Parsed(
                format="syslog",
                message=msg,
                level=level,
                logger=_nil(m["app"]),
                ts_ms=parse_iso_ms(m["ts"]) if m["ts"] != "-" else None,
                host=_nil(m["host"]),
                attrs=attrs,
            )
    elif not line[:1].isupper():
        return None
    m = _RFC3164.fullmatch(line)
    if m is None:
        return None
    attrs = {}
    level = _pri_attrs(m["pri"], attrs)
    if m["pid"]:
        attrs["procid"] = m["pid"]
    msg = m["msg"]
    if level == "unknown":
        level = detect_level(msg)
    return Parsed(
        format="syslog",
        message=msg,
        level=level,
        logger=m["tag"],
        ts_ms=parse_syslog_bsd_time(m["ts"], now_ms),
        host=m["host"],
        attrs=attrs,
    )


# Matched against lower-cased text: a case-insensitive alternation behind ``\b`` costs
# the regex engine about three times as much per character. The lookahead on the first
# letters lets it skip most positions quickly.
_LEVEL_WORD = re.compile(
    r"(?<!\w)(?=[acdefinpstw])(trace|debug|info|notice|warn(?:ing)?|error|err|crit(?:ical)?"
    r"|fatal|severe|emerg|alert|panic)\b"
)
_LEADING_TS = re.compile(
    r"\[?(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)\]?\s*"
)
# "LEVEL [logger] msg", "LEVEL logger: msg", "LEVEL:logger:msg" (Python logging default)
_PLAIN_HEAD = re.compile(
    r"\[?(?P<level>[A-Za-z]+)\]?(?::(?P<pylogger>[\w.\-]+):| +\[(?P<blogger>[^\]\s]+)\] *"
    r"| +(?P<dlogger>[\w.\-]+): +| +(?P<clogger>[\w.\-]+(?:\.[\w\-]+)+)(?: +-)? *"
    r"| *[:\-] *| +)(?P<msg>.*)",
    re.DOTALL,
)
_TRACE_IN_TEXT = re.compile(r"\btrace[_-]?id[=:]\s*([0-9a-fA-F]{16,32})\b")


def detect_level(text: str) -> str:
    """The first level word in the first 200 characters, else ``unknown``."""
    m = _LEVEL_WORD.search(text[:200].lower())
    return normalize_level(m.group(1)) if m else "unknown"


def parse_plain(line: str) -> Parsed:
    """Anything else: optional leading ISO timestamp, then a level word and a logger."""
    ts_ms: int | None = None
    rest = line
    m = _LEADING_TS.match(line)
    if m is not None:
        ts_ms = parse_iso_ms(m.group(1))
        rest = line[m.end() :]
    level = "unknown"
    logger = ""
    h = _PLAIN_HEAD.match(rest)
    if h is not None and normalize_level(h["level"]) != "unknown" and h["level"].isupper():
        level = normalize_level(h["level"])
        logger = h["pylogger"] or h["blogger"] or h["dlogger"] or h["clogger"] or ""
    else:
        level = detect_level(rest)
    attrs: dict[str, str] = {}
    t = _TRACE_IN_TEXT.search(line)
    if t is not None:
        attrs["trace_id"] = t.group(1)
    return Parsed(
        format="plain", message=line, level=level, logger=logger, ts_ms=ts_ms, attrs=attrs
    )
