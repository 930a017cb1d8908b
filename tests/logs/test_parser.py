"""Parser tables: one row per format and per kind of odd input."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from monitoringserver.logs.parser import TRUNCATION_MARKER, LogParser, ParserOptions
from monitoringserver.model.logs import LogBatch, LogRecord, normalize_level

NOW_MS = int(dt.datetime(2026, 1, 10, 12, 0, tzinfo=dt.UTC).timestamp() * 1000)


def _ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    return int(dt.datetime(y, mo, d, h, mi, s, tzinfo=dt.UTC).timestamp() * 1000)


@pytest.fixture
def parser() -> LogParser:
    return LogParser(clock=lambda: NOW_MS / 1000)


@pytest.mark.parametrize(
    ("line", "fmt", "level", "logger", "ts_ms", "attrs"),
    [
        (
            '{"ts":"2026-01-10T11:00:00Z","level":"WARN","logger":"api","msg":"slow",'
            '"trace_id":"abc123","req":{"id":7}}',
            "json",
            "warning",
            "api",
            _ms(2026, 1, 10, 11),
            {"trace_id": "abc123", "req_id": "7"},
        ),
        (
            '{"message":"x","severity":"E","time":1767999600}',
            "json",
            "error",
            "",
            _ms(2026, 1, 9, 23),
            {},
        ),
        (
            'time=2026-01-10T11:00:00Z level=error logger=db msg="conn lost" retry=3',
            "logfmt",
            "error",
            "db",
            _ms(2026, 1, 10, 11),
            {"retry": "3"},
        ),
        (
            '10.0.0.1 - bob [10/Jan/2026:11:00:00 +0000] "GET /api/x?id=1 HTTP/1.1" 503 12 '
            '"-" "curl/8"',
            "access",
            "error",
            "access",
            _ms(2026, 1, 10, 11),
            {"method": "GET", "status": "503"},
        ),
        (
            '1.2.3.4 - - [10/Jan/2026:12:00:00 +0100] "POST /login HTTP/2.0" 404 -',
            "access",
            "warning",
            "access",
            _ms(2026, 1, 10, 11),
            {"method": "POST", "status": "404"},
        ),
        (
            '<165>1 2026-01-10T11:00:00.5Z web1 nginx 42 ID47 [ex@1 k="v\\"q"] hello',
            "syslog",
            "info",
            "nginx",
            _ms(2026, 1, 10, 11) + 500,
            {"facility": "20", "procid": "42", "msgid": "ID47", "k": 'v"q'},
        ),
        ("<11>1 - - - - - -", "syslog", "error", "", None, {"facility": "1"}),
        (
            "<34>Jan 10 11:00:00 mymachine su[12]: 'su root' failed",
            "syslog",
            "critical",
            "su",
            _ms(2026, 1, 10, 11),
            {"facility": "4", "procid": "12"},
        ),
        (
            "Dec 31 23:59:59 host cron: ERROR job failed",
            "syslog",
            "error",
            "cron",
            _ms(2025, 12, 31, 23, 59, 59),
            {},
        ),
        (
            "2026-01-10 11:00:00,250 ERROR [com.acme.Svc] boom trace_id=0123456789abcdef",
            "plain",
            "error",
            "com.acme.Svc",
            _ms(2026, 1, 10, 11) + 250,
            {"trace_id": "0123456789abcdef"},
        ),
        ("WARNING:urllib3.pool:retrying", "plain", "warning", "urllib3.pool", None, {}),
        ("INFO app.web.server - started", "plain", "info", "app.web.server", None, {}),
        ("[ERROR] disk full", "plain", "error", "", None, {}),
        ("something bad: error while reading", "plain", "error", "", None, {}),
        ("just text", "plain", "unknown", "", None, {}),
        ("{not json", "plain", "unknown", "", None, {}),
        ("<999>1 x", "plain", "unknown", "", None, {}),
    ],
)
def test_parse_line_table(
    parser: LogParser,
    line: str,
    fmt: str,
    level: str,
    logger: str,
    ts_ms: int | None,
    attrs: dict[str, str],
) -> None:
    p = parser.parse_line(line, NOW_MS)
    assert (p.format, p.level, p.logger, p.ts_ms) == (fmt, level, logger, ts_ms)
    assert p.attrs == attrs


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("WARN", "warning"),
        ("err", "error"),
        ("Fatal", "critical"),
        ("E", "error"),
        ("notice", "info"),
        ("", "unknown"),
        ("zzz", "unknown"),
        ("x", "unknown"),
    ],
)
def test_normalize_level(value: str, level: str) -> None:
    assert normalize_level(value) == level


PY_TB = [
    "2026-01-10 11:00:00 ERROR app: request failed",
    "Traceback (most recent call last):",
    '  File "a.py", line 1, in <module>',
    "    f()",
    "ValueError: bad",
    "",
    "During handling of the above exception, another exception occurred:",
    "",
    "Traceback (most recent call last):",
    '  File "b.py", line 2, in g',
    "KeyError: 'k'",
    "2026-01-10 11:00:01 INFO app: next",
]
JAVA_TB = [
    "2026-01-10 11:00:00 ERROR [main] c.a.Svc - failed",
    "java.lang.IllegalStateException: boom",
    "\tat com.acme.Svc.run(Svc.java:10)",
    "Caused by: java.io.IOException: disk",
    "\t... 3 more",
    "2026-01-10 11:00:02 INFO [main] c.a.Svc - ok",
]


@pytest.mark.parametrize(("lines", "first_len"), [(PY_TB, 11), (JAVA_TB, 5)])
def test_tracebacks_join(parser: LogParser, lines: list[str], first_len: int) -> None:
    batch = parser.parse_lines(lines, server_id="h1", source="f.log")
    assert len(batch) == 2
    assert batch.message[0].split("\n") == lines[:first_len]
    assert batch.level[0] == "error"
    assert batch.level[1] == "info"
    assert batch.server_id == ["h1", "h1"]
    assert parser.stats()["joined"] == first_len - 1


def test_bad_bytes_and_long_lines_are_kept_and_counted() -> None:
    parser = LogParser(ParserOptions(max_line_bytes=64), clock=lambda: NOW_MS / 1000)
    batch = parser.parse_lines([b"ok \xff\xfe end", "x" * 200, "é" * 100], default_ts_ms=5)
    assert batch.message[0] == "ok \ufffd\ufffd end"
    assert batch.message[1].endswith(TRUNCATION_MARKER)
    assert len(batch.message[1].encode()) <= 64
    assert len(batch.message[2].encode()) <= 64
    assert batch.ts_ms.tolist() == [5, 5, 5]
    stats = parser.stats()
    assert (stats["invalid_utf8"], stats["truncated"]) == (1, 2)
    assert parser.sanitize("a\udc80b") == "a\ufffdb"
    assert parser.stats()["invalid_utf8"] == 2


def test_join_disabled_keeps_lines_apart() -> None:
    parser = LogParser(ParserOptions(join_multiline=False))
    assert len(parser.parse_lines(["a", "  b", "", "c"])) == 3


def test_format_bug_keeps_line_raw(parser: LogParser, monkeypatch: pytest.MonkeyPatch) -> None:
    import monitoringserver.logs.parser as mod

    def boom(line: str) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(mod, "parse_json", boom)
    p = parser.parse_line("{}", NOW_MS)
    assert (p.format, p.message) == ("raw", "{}")
    assert parser.stats()["errors"] == 1


def test_enrich_parses_raw_lines_and_joins_per_stream(parser: LogParser) -> None:
    recs = [
        LogRecord(0, "2026-01-10 11:00:00 ERROR x: fail", server_id="a", level="", source="s"),
        LogRecord(0, "INFO other host", server_id="b", level="", source="s"),
        LogRecord(0, "Traceback (most recent call last):", server_id="a", level="", source="s"),
        LogRecord(0, '  File "x.py", line 1', server_id="a", level="", source="s"),
        LogRecord(0, "ValueError: v", server_id="a", level="", source="s"),
        LogRecord(123, "given", server_id="a", level="warning", logger="L", attrs={"k": "v"}),
        LogRecord(9, '{"level":"debug","msg":"m","host":"hj"}', level="", attrs={"z": "1"}),
    ]
    out = parser.enrich(LogBatch.from_records(recs))
    assert len(out) == 4
    assert out.message[0].count("\n") == 3
    assert out.level == ["error", "info", "warning", "debug"]
    assert out.ts_ms.tolist() == [_ms(2026, 1, 10, 11), NOW_MS, 123, 9]
    assert out.server_id == ["a", "b", "a", "hj"]
    assert out.attrs[2] == {"k": "v"}
    assert out.attrs[3] == {"z": "1"}
    assert out.message[3] == "m"


def test_enrich_fast_path_without_raw_lines(parser: LogParser) -> None:
    batch = LogBatch.from_records(
        [LogRecord(0, "m", level="info"), LogRecord(7, "n", level="error")]
    )
    out = parser.enrich(batch)
    assert out.ts_ms.tolist() == [NOW_MS, 7]
    assert out.message == ["m", "n"]


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_enrich_fast_path_keeps_or_converts_timestamps(parser: LogParser, dtype: type) -> None:
    batch = LogBatch(
        np.array([5, 7], dtype=dtype), ["h", "h"], ["info", "error"], ["", ""], ["", ""],
        ["m", "x" * 70_000], [{}, {}],
    )  # fmt: skip
    out = parser.enrich(batch)
    assert out.ts_ms.dtype == np.int64
    assert out.ts_ms.tolist() == [5, 7]
    assert out.message[1].endswith(TRUNCATION_MARKER)


def test_logbatch_helpers() -> None:
    b = LogBatch.from_records([LogRecord(1, "a", level="info"), LogRecord(2, "bé", level="error")])
    assert [r.message for r in b.records()] == ["a", "bé"]
    assert b.take([1]).message == ["bé"]
    assert len(b.take([])) == 0
    assert b.raw_bytes() == 4
    c = LogBatch.concat([b, b])
    assert len(c) == 4
    assert c.ts_ms.dtype == np.int64
    assert LogBatch.concat([]).message == []
    assert LogBatch.concat([b]) is b
    with pytest.raises(Exception, match="differ in length"):
        LogBatch(np.zeros(1, dtype=np.int64), [], [], [], [], [], [])


def test_plain_logger_before_colon(parser: LogParser) -> None:
    p = parser.parse_line("ERROR db: boom", NOW_MS)
    assert (p.level, p.logger) == ("error", "db")
    p = parser.parse_line("ERROR disk full: boom", NOW_MS)
    assert (p.level, p.logger) == ("error", "")


def test_enrich_treats_bare_unknown_lines_as_raw(parser: LogParser) -> None:
    batch = LogBatch.from_records(
        [
            LogRecord(5, "WARN disk low", level="unknown"),
            LogRecord(6, "WARN kept", level="unknown", logger="x"),
            LogRecord(7, "WARN kept too", level="unknown", attrs={"job": "j"}),
            LogRecord(8, '{"level": "error"}', level="unknown", source="loki"),
        ]
    )
    assert parser.enrich(batch).level == ["warning", "unknown", "unknown", "unknown"]
