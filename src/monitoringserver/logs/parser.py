"""Turn raw log lines into records: detect the format, extract level, logger, time,
trace id and fields, join tracebacks into one record.

Contract: parsing never fails a batch. A line no format recognises is kept as plain
text (level detected from its words); a format parser that raises is counted under
``errors`` and the line is kept raw. Invalid UTF-8 is replaced (U+FFFD) and counted;
lines longer than ``max_line_bytes`` are cut and end with :data:`TRUNCATION_MARKER`.

In a :class:`~monitoringserver.model.logs.LogBatch`, ``level == ""`` (or ``"unknown"``
with no logger and no attrs) marks a raw line the server still has to parse
(:meth:`LogParser.enrich`); ``ts_ms == 0`` means "no
timestamp known" (the parsed one, else the receive time, is used).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitoringserver.logs.formats import (
    Parsed,
    parse_combined,
    parse_json,
    parse_logfmt,
    parse_plain,
    parse_syslog,
)
from monitoringserver.model.logs import LogBatch

__all__ = ["TRUNCATION_MARKER", "LogParser", "ParserOptions"]

TRUNCATION_MARKER = "…[truncated]"

_JAVA_EXC_HEADER = re.compile(
    r"(?:[a-z_$][\w$]*\.)+[A-Z][\w$]*(?:Exception|Error|Throwable)(?::.*)?"
)
_PY_EXC_LINE = re.compile(r"[A-Za-z_][\w.]*(?::.*)?")
_SURROGATES = re.compile("[\ud800-\udfff]")
_CHAIN_LINES = (
    "Traceback (most recent call last):",
    "Caused by:",
    "Suppressed:",
    "During handling of the above exception",
    "The above exception was the direct cause",
)


@dataclass(frozen=True, slots=True)
class ParserOptions:
    """``max_line_bytes``: UTF-8 bytes kept per record (after joining);
    ``max_joined_lines``: lines a traceback record may absorb."""

    max_line_bytes: int = 65_536
    join_multiline: bool = True
    max_joined_lines: int = 1000


@dataclass(slots=True)
class _Columns:
    server_id: list[str] = field(default_factory=list)
    level: list[str] = field(default_factory=list)
    logger: list[str] = field(default_factory=list)
    source: list[str] = field(default_factory=list)
    message: list[str] = field(default_factory=list)
    attrs: list[dict[str, str]] = field(default_factory=list)

    def build(self, ts: NDArray[np.int64]) -> LogBatch:
        return LogBatch(
            ts, self.server_id, self.level, self.logger, self.source, self.message, self.attrs
        )


class LogParser:
    """Thread-safe (counters are guarded by ``_lock``)."""

    def __init__(
        self,
        options: ParserOptions | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options or ParserOptions()
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}  # guarded by _lock

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + n

    def stats(self) -> dict[str, int]:
        """Counters: ``lines``, ``format_<name>``, ``invalid_utf8``, ``truncated``,
        ``joined`` (lines absorbed into a previous record), ``errors``."""
        with self._lock:
            return dict(self._counts)

    def decode(self, raw: bytes) -> str:
        """UTF-8 decode, replacing invalid sequences (counted as ``invalid_utf8``)."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self._count("invalid_utf8")
            return raw.decode("utf-8", "replace")

    def sanitize(self, line: str) -> str:
        """Cut a line over ``max_line_bytes`` (marker appended, counted as ``truncated``);
        lone surrogates (from lenient decoders) become U+FFFD (counted as ``invalid_utf8``)."""
        limit = self.options.max_line_bytes
        try:
            encoded_len = len(line) if len(line) * 4 <= limit else len(line.encode("utf-8"))
            if encoded_len == len(line) and not line.isascii():
                line.encode("utf-8")  # surrogates raise here
        except UnicodeEncodeError:
            self._count("invalid_utf8")
            line = _SURROGATES.sub("\ufffd", line)
            encoded_len = len(line.encode("utf-8"))
        if encoded_len <= limit:
            return line
        self._count("truncated")
        keep = max(0, limit - len(TRUNCATION_MARKER.encode("utf-8")))
        cut = line.encode("utf-8")[:keep].decode("utf-8", "ignore")
        return cut + TRUNCATION_MARKER

    def parse_line(self, line: str, now_ms: int | None = None) -> Parsed:
        """Recognise one (already joined) record. Never raises."""
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        self._count("lines")
        try:
            parsed = (
                parse_json(line)
                or parse_syslog(line, now)
                or parse_combined(line)
                or parse_logfmt(line)
                or parse_plain(line)
            )
        except Exception:  # noqa: BLE001 -- a format bug must not lose the line: keep it raw, count it
            self._count("errors")
            parsed = Parsed(format="raw", message=line)
        self._count("format_" + parsed.format)
        return parsed

    # -- multiline ---------------------------------------------------------------

    @staticmethod
    def _continues(line: str, in_trace: bool, prev_indented: bool) -> bool:
        """Does ``line`` continue the record before it? ``in_trace``: that record holds
        a traceback; ``prev_indented``: its last line is indented (a stack frame)."""
        if not line:
            return in_trace
        if line[0] in " \t":
            return True
        if line.startswith(_CHAIN_LINES) or _JAVA_EXC_HEADER.fullmatch(line):
            return True
        return in_trace and prev_indented and _PY_EXC_LINE.fullmatch(line) is not None

    @staticmethod
    def _starts_trace(line: str) -> bool:
        return line.startswith(_CHAIN_LINES[0]) or line.startswith("\tat ")

    def join_lines(self, lines: Iterable[str]) -> list[str]:
        """Group lines into records: tracebacks (Python, Java) and indented continuation
        lines join the record before them with ``\\n``. Blank lines outside tracebacks
        are dropped."""
        records: list[list[str]] = []
        in_trace = False
        prev_indented = False
        limit = self.options.max_joined_lines
        joined = 0
        for raw_line in lines:
            line = raw_line.rstrip("\r\n")
            if (
                self.options.join_multiline
                and records
                and len(records[-1]) < limit
                and self._continues(line, in_trace, prev_indented)
            ):
                records[-1].append(line)
                joined += 1
                in_trace = in_trace or self._starts_trace(line)
                prev_indented = bool(line) and line[0] in " \t"
                continue
            if not line.strip():
                continue
            records.append([line])
            in_trace = self._starts_trace(line)
            prev_indented = False
        if joined:
            self._count("joined", joined)
        return ["\n".join(r).rstrip("\n") for r in records]

    # -- batches -----------------------------------------------------------------

    def parse_lines(
        self,
        lines: Iterable[str | bytes],
        *,
        server_id: str = "",
        source: str = "",
        default_ts_ms: int | None = None,
    ) -> LogBatch:
        """Parse lines read from one stream (file, socket) into a batch.

        A line's own timestamp wins; ``default_ts_ms`` (else now) stands in. A host
        named in the line (syslog, JSON ``host``) is used only when ``server_id`` is empty.
        """
        texts = (self.decode(x) if isinstance(x, bytes) else x for x in lines)
        now = int(self._clock() * 1000)
        fallback = now if default_ts_ms is None else default_ts_ms
        records = self.join_lines(texts)
        ts = np.empty(len(records), dtype=np.int64)
        out = _Columns()
        for i, rec in enumerate(records):
            p = self.parse_line(self.sanitize(rec), now)
            ts[i] = p.ts_ms if p.ts_ms is not None else fallback
            out.server_id.append(server_id or p.host)
            out.level.append(p.level)
            out.logger.append(p.logger)
            out.source.append(source)
            out.message.append(p.message)
            out.attrs.append(p.attrs)
        return out.build(ts)

    def _sanitized(self, batch: LogBatch, now: int) -> LogBatch:
        """``batch`` with messages sanitized and ``ts_ms == 0`` made ``now``; no parsing."""
        msgs = batch.message
        short = max(map(len, msgs), default=0) * 4 <= self.options.max_line_bytes
        if not (short and all(map(str.isascii, msgs))):  # the common case costs no call
            msgs = [self.sanitize(m) for m in msgs]
        ts = batch.ts_ms
        if ts.dtype != np.int64 or not ts.all():
            ts = np.where(ts == 0, now, ts).astype(np.int64)
        return LogBatch(
            ts, batch.server_id, batch.level, batch.logger, batch.source, msgs, batch.attrs
        )

    def enrich(self, batch: LogBatch) -> LogBatch:
        """Parse the raw lines of ``batch`` and sanitize every message.

        Raw lines have ``level == ""``, or ``"unknown"`` with no logger and no attrs
        (what a sender that knows nothing about the line produces), except Loki pushes
        (``source == "loki"``), which are stored verbatim.

        Consecutive raw lines of the same ``(server_id, source)`` that continue a
        traceback are joined into the record before them. Given levels, loggers and
        attrs win over parsed ones; a parsed timestamp is used only where ``ts_ms == 0``.
        """
        now = int(self._clock() * 1000)
        levels = set(batch.level)
        if "" not in levels and "unknown" not in levels:  # every level given: nothing raw
            return self._sanitized(batch, now)
        raw = [
            not lv
            or (
                lv == "unknown"
                and not batch.logger[i]
                and not batch.attrs[i]
                and batch.source[i] != "loki"
            )
            for i, lv in enumerate(batch.level)
        ]
        if not any(raw):
            return self._sanitized(batch, now)
        groups: list[list[int]] = []
        last_raw: dict[tuple[str, str], int] = {}
        in_trace: dict[int, tuple[bool, bool]] = {}
        for i, msg in enumerate(batch.message):
            key = (batch.server_id[i], batch.source[i])
            g = last_raw.get(key)
            if raw[i]:
                if g is not None and self.options.join_multiline:
                    tr, ind = in_trace[g]
                    if len(groups[g]) < self.options.max_joined_lines and self._continues(
                        msg, tr, ind
                    ):
                        groups[g].append(i)
                        tr = tr or self._starts_trace(msg)
                        in_trace[g] = (tr, bool(msg) and msg[0] in " \t")
                        self._count("joined")
                        continue
                last_raw[key] = len(groups)
                in_trace[len(groups)] = (self._starts_trace(msg), False)
            else:
                last_raw.pop(key, None)
            groups.append([i])
        ts = np.empty(len(groups), dtype=np.int64)
        out = _Columns()
        for j, members in enumerate(groups):
            i = members[0]
            text = "\n".join(batch.message[k] for k in members)
            text = self.sanitize(text)
            given_ts = int(batch.ts_ms[i])
            if not raw[i]:
                ts[j] = given_ts or now
                out.server_id.append(batch.server_id[i])
                out.level.append(batch.level[i])
                out.logger.append(batch.logger[i])
                out.message.append(text)
                out.attrs.append(batch.attrs[i])
            else:
                p = self.parse_line(text, now)
                ts[j] = given_ts or (p.ts_ms if p.ts_ms is not None else now)
                out.server_id.append(batch.server_id[i] or p.host)
                out.level.append(p.level)
                out.logger.append(batch.logger[i] or p.logger)
                out.message.append(p.message)
                out.attrs.append({**p.attrs, **batch.attrs[i]} if batch.attrs[i] else p.attrs)
            out.source.append(batch.source[i])
        return out.build(ts)
