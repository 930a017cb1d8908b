"""Apply a LogQL log selector to a batch in Python: for live tail subscribers.

Stored data is searched inside DuckDB (:mod:`monitoringserver.logs.query`); lines
arriving on the bus are filtered here, in the subscriber's task, so the cost falls on
tailing clients and never on ingest. Regexes use Python's ``re`` (RE2 syntax is nearly
a subset); label semantics match the store (missing label = empty string).
"""

from __future__ import annotations

import re

import msgspec

from monitoringserver.logs.api import LineOp
from monitoringserver.logs.formats import parse_logfmt
from monitoringserver.logs.logql import LogSelector
from monitoringserver.model.logs import LogBatch

__all__ = ["TailFilter"]

_OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
}


class TailFilter:
    """Compiled once per subscriber; ``apply`` returns the matching lines."""

    def __init__(self, selector: LogSelector) -> None:
        self.selector = selector
        self._regex = {
            f.value: re.compile(f.value)
            for f in selector.filters
            if f.op in (LineOp.REGEX, LineOp.NOT_REGEX)
        }

    def _fields(self, message: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for parser in self.selector.parsers:
            if parser == "json" and message.startswith("{"):
                try:
                    obj = msgspec.json.decode(message)
                except msgspec.DecodeError:
                    continue
                if isinstance(obj, dict):
                    for k, v in obj.items():
                        out.setdefault(
                            k, v if isinstance(v, str) else msgspec.json.encode(v).decode()
                        )
            elif parser == "logfmt":
                p = parse_logfmt(message)
                if p is not None:
                    for k, v in p.attrs.items():
                        out.setdefault(k, v)
        return out

    def _label(self, batch: LogBatch, i: int, name: str, fields: dict[str, str] | None) -> str:
        if name == "detected_level":
            name = "level"
        if name in ("server_id", "level", "logger", "source"):
            return str(getattr(batch, name)[i])
        v = batch.attrs[i].get(name)
        if v:
            return v
        if fields is not None:
            return fields.get(name, "")
        return ""

    def matches(self, batch: LogBatch, i: int) -> bool:
        sel = self.selector
        msg = batch.message[i]
        for f in sel.filters:
            if f.op is LineOp.CONTAINS and f.value not in msg:
                return False
            if f.op is LineOp.NOT_CONTAINS and f.value in msg:
                return False
            if f.op is LineOp.REGEX and self._regex[f.value].search(msg) is None:
                return False
            if f.op is LineOp.NOT_REGEX and self._regex[f.value].search(msg) is not None:
                return False
        fields = self._fields(msg) if sel.parsers else None
        for m in sel.matchers:
            if not m.matches(self._label(batch, i, m.name, fields)):
                return False
        for n in sel.numeric:
            try:
                value = float(self._label(batch, i, n.name, fields))
            except ValueError:
                return False
            if not _OPS[n.op](value, n.value):
                return False
        return True

    def apply(self, batch: LogBatch) -> LogBatch:
        keep = [i for i in range(len(batch)) if self.matches(batch, i)]
        return batch if len(keep) == len(batch) else batch.take(keep)
