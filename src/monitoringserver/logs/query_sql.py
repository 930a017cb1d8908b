"""SQL pieces of log searches: the WHERE clause of a :class:`LogQuery`, label
expressions, and the opaque paging cursor.

Conditions on the message are preceded by the cheap template-column prefilters of
:func:`~monitoringserver.logs.templates.needle_prefilter`; the relation they run over
must provide :data:`~monitoringserver.logs.archive.PREFILTER_COLUMNS`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

import msgspec

from monitoringserver.errors import BadDataError
from monitoringserver.logs.api import COLUMN_LABELS, LineOp, LogQuery
from monitoringserver.logs.templates import needle_prefilter
from monitoringserver.model.matchers import MatchOp

__all__ = ["Sql", "conditions", "decode_cursor", "encode_cursor", "label_expr"]

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _re2_escape(text: str) -> str:
    return re.sub(r"([^A-Za-z0-9_])", r"\\\1", text)


class Sql:
    """Collects a WHERE clause and its parameters."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.params: list[Any] = []

    def add(self, sql: str, *params: Any) -> None:
        self.parts.append(sql)
        self.params.extend(params)

    def where(self) -> str:
        return " AND ".join(self.parts) if self.parts else "true"


def label_expr(name: str, parsers: Sequence[str]) -> str:
    """SQL for a label's value ('' when absent): a column, an attrs key, or a field of
    the message when a parser is active."""
    if name in COLUMN_LABELS:
        return name
    if name == "detected_level":  # Loki 3 / Grafana name for the level we detect
        return "level"
    if not _LABEL_NAME.fullmatch(name):
        raise BadDataError(f"cannot query label {name!r}: invalid label name")
    path = _quote(f'$."{name}"')
    alts = [
        f"CASE WHEN attrs = '' THEN NULL ELSE nullif(json_extract_string(attrs, {path}), '') END"
    ]
    for parser in parsers:
        if parser == "json":
            alts.append(
                f"CASE WHEN json_valid(message) THEN json_extract_string(message, {path}) END"
            )
        elif parser == "logfmt":
            pat = _quote(rf'(?:^|\s){_re2_escape(name)}=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
            alts.append(
                f"coalesce(nullif(regexp_extract(message, {pat}, 1), ''), "
                f"nullif(regexp_extract(message, {pat}, 2), ''))"
            )
        else:
            raise BadDataError(f"cannot use log parser {parser!r}: expected json or logfmt")
    return f"coalesce({', '.join(alts)}, '')"


def conditions(q: LogQuery, sql: Sql) -> None:
    if q.start_ms is not None:
        sql.add("ts >= ?", q.start_ms)
    if q.end_ms is not None:
        sql.add("ts <= ?", q.end_ms)
    for m in q.matchers:
        expr = label_expr(m.name, q.parsers)
        if m.op is MatchOp.EQ:
            sql.add(f"{expr} = ?", m.value)
        elif m.op is MatchOp.NEQ:
            sql.add(f"{expr} <> ?", m.value)
        elif m.op is MatchOp.RE:
            sql.add(f"regexp_full_match({expr}, ?)", m.value)
        else:
            sql.add(f"NOT regexp_full_match({expr}, ?)", m.value)
    for f in q.filters:
        if f.op is LineOp.CONTAINS:
            # Cheap conditions on the stored template columns first, so archives in
            # the template layout rebuild only the lines that may match.
            for cond, params in needle_prefilter(f.value):
                sql.add(cond, *params)
            sql.add("contains(message, ?)", f.value)
        elif f.op is LineOp.NOT_CONTAINS:
            sql.add("NOT contains(message, ?)", f.value)
        elif f.op is LineOp.REGEX:
            sql.add("regexp_matches(message, ?)", f.value)
        else:
            sql.add("NOT regexp_matches(message, ?)", f.value)
    for n in q.numeric:
        op = "=" if n.op == "==" else n.op
        sql.add(f"TRY_CAST({label_expr(n.name, q.parsers)} AS DOUBLE) {op} ?", n.value)


def encode_cursor(ts: int, skip: int) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode([ts, skip])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, skip = msgspec.json.decode(raw, type=tuple[int, int])
    except (ValueError, msgspec.DecodeError) as exc:
        raise BadDataError(f"cannot parse cursor {cursor!r}: {exc}") from exc
    return ts, skip
