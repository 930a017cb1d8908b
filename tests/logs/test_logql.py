"""LogQL subset: parser table, metric evaluation, tail filter."""

from __future__ import annotations

from typing import cast

import pytest

from monitoringserver.errors import BadDataError, QueryLimitError
from monitoringserver.logs.api import LineOp, LogQuerier, LogQuery, NumericFilter, SeriesCounts
from monitoringserver.logs.logql import (
    LogSelector,
    MetricExpr,
    VectorExpr,
    parse_duration_ms,
    parse_logql,
)
from monitoringserver.logs.logql_eval import evaluate_metric
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore
from monitoringserver.logs.tailfilter import TailFilter
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.matchers import Matcher, MatchOp


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("5m", 300_000),
        ("1h30m", 5_400_000),
        ("250ms", 250),
        ("15", 15_000),
        ("0.5", 500),
        ("1d", 86_400_000),
    ],
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5x", "m5", "1h 2m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(BadDataError):
        parse_duration_ms(text)


def test_drop_and_keep_are_accepted() -> None:
    q = parse_logql(
        'sum by (level) (count_over_time({a="b"} | drop __error__, x="y" | keep a [1m]))'
    )
    assert isinstance(q, MetricExpr)
    assert q.selector.matchers == (Matcher.eq("a", "b"),)


def test_parse_log_selector_with_stages() -> None:
    q = parse_logql(
        '{job="web", level=~"err.*"} |= "boom" != `x` |~ "a\\\\d" !~ "z" | json '
        '| status >= 500 and path="/a", dur > 1s | logfmt | method != "GET"'
    )
    assert isinstance(q, LogSelector)
    assert q.matchers == (
        Matcher("job", MatchOp.EQ, "web"),
        Matcher("level", MatchOp.RE, "err.*"),
        Matcher("path", MatchOp.EQ, "/a"),
        Matcher("method", MatchOp.NEQ, "GET"),
    )
    assert [(f.op, f.value) for f in q.filters] == [
        (LineOp.CONTAINS, "boom"),
        (LineOp.NOT_CONTAINS, "x"),
        (LineOp.REGEX, "a\\d"),
        (LineOp.NOT_REGEX, "z"),
    ]
    assert q.parsers == ("json", "logfmt")
    assert q.numeric == (NumericFilter("status", ">=", 500.0), NumericFilter("dur", ">", 1.0))
    lq = q.to_query(1, 2, limit=5, direction="forward")
    assert (lq.start_ms, lq.end_ms, lq.limit, lq.parsers) == (1, 2, 5, ("json", "logfmt"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'count_over_time({a="b"}[5m])',
            MetricExpr("count_over_time", LogSelector((Matcher.eq("a", "b"),)), 300_000),
        ),
        (
            'sum by (level) (rate({a="b"}[1m]))',
            MetricExpr("rate", LogSelector((Matcher.eq("a", "b"),)), 60_000, "sum", ("level",)),
        ),
        (
            'sum(bytes_over_time({a="b"}[1m])) without (x, y)',
            MetricExpr(
                "bytes_over_time",
                LogSelector((Matcher.eq("a", "b"),)),
                60_000,
                "sum",
                ("x", "y"),
                True,
            ),
        ),
        (
            'max(bytes_rate({a="b"}[10s]))',
            MetricExpr("bytes_rate", LogSelector((Matcher.eq("a", "b"),)), 10_000, "max"),
        ),
        ("vector(1)+vector(1)", VectorExpr(2.0)),
    ],
)
def test_parse_metric(text: str, expected: object) -> None:
    assert parse_logql(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{}",
        '{a=""}',
        '{a="b"',
        '{a>"b"}',
        '{a="b"} | xml',
        '{a="b"} | s > "x"',
        '{a="b"} | s > {',
        'count_over_time({a="b"})',
        'count_over_time({a="b"}[0s])',
        'stddev(rate({a="b"}[1m]))',
        'sum(foo({a="b"}[1m]))',
        'topk(1, rate({a="b"}[1m]))',
        '{a="b"} extra',
        '{a="b"} $',
    ],
)
def test_parse_errors(text: str) -> None:
    with pytest.raises(BadDataError):
        parse_logql(text)


class FakeCounts:
    """A LogQuerier stand-in: lines at the given times with labels."""

    def __init__(self, lines: list[tuple[int, dict[str, str], int]]) -> None:
        self.lines = lines
        self.calls: list[tuple[LogQuery, int]] = []

    def count_series(self, query: LogQuery, step_ms: int, by: object) -> list[SeriesCounts]:
        self.calls.append((query, step_ms))
        assert query.start_ms is not None
        out: dict[tuple[tuple[str, str], ...], SeriesCounts] = {}
        for ts, labels, size in self.lines:
            if not query.start_ms <= ts <= (query.end_ms or ts):
                continue
            key = tuple(sorted(labels.items()))
            sc = out.setdefault(key, SeriesCounts(labels, [], [], []))
            b = query.start_ms + (ts - query.start_ms) // step_ms * step_ms
            sc.ts_ms.append(b)
            sc.lines.append(1)
            sc.bytes.append(size)
        return list(out.values())


def _metric(text: str) -> MetricExpr:
    e = parse_logql(text)
    assert isinstance(e, MetricExpr)
    return e


def test_count_over_time_windows_are_left_open_right_closed() -> None:
    lines = [(t, {"server_id": "a"}, 10) for t in (1000, 2000, 2000, 5000)]
    lines.append((3000, {"server_id": "b"}, 7))
    fake = FakeCounts(lines)
    fq = cast(LogQuerier, fake)
    out = evaluate_metric(fq, _metric('count_over_time({x="y"}[2s])'), 2000, 6000, 1000)
    got = {s.labels["server_id"]: list(zip(s.ts_ms, s.values, strict=True)) for s in out}
    assert got["a"] == [(2000, 3.0), (3000, 2.0), (5000, 1.0), (6000, 1.0)]
    assert got["b"] == [(3000, 1.0), (4000, 1.0)]
    out = evaluate_metric(fq, _metric('sum(rate({x="y"}[2s]))'), 2000, 3000, 1000)
    assert [(s.labels, s.values) for s in out] == [({}, [1.5, 1.5])]
    out = evaluate_metric(
        fq, _metric('sum by (server_id) (bytes_over_time({x="y"}[1s]))'), 2000, 3000, 1000
    )
    assert [(s.labels, s.values) for s in out] == [
        ({"server_id": "a"}, [20.0]),
        ({"server_id": "b"}, [7.0]),
    ]
    for agg, value in (("count", 2.0), ("avg", 1.5), ("min", 1.0), ("max", 2.0)):
        out = evaluate_metric(
            fq, _metric(f'{agg}(count_over_time({{x="y"}}[2s]))'), 3000, 3000, 1000
        )
        assert out[0].values == [value], agg
    out = evaluate_metric(
        fq, _metric('sum without (server_id) (bytes_rate({x="y"}[2s]))'), 3000, 3000, 1000
    )
    assert out[0].labels == {}
    assert out[0].values == [(10 + 10 + 7) / 2]
    with pytest.raises(QueryLimitError):
        evaluate_metric(fq, _metric('count_over_time({x="y"}[1s])'), 0, 10**12, 1)


def test_evaluate_against_the_store(store: LogStore, engine: LogQueryEngine) -> None:
    store.insert(
        LogBatch.from_records(
            LogRecord(t, "m", server_id="h", level="error", attrs={"job": "j"})
            for t in (100, 200, 1100)
        )
    )
    store.flush()
    store.insert(
        LogBatch.from_records(
            [LogRecord(1500, "m", server_id="h", level="error", attrs={"job": "j"})]
        )
    )
    out = evaluate_metric(
        engine, _metric('sum by (job) (count_over_time({job="j"}[1s]))'), 1000, 2000, 1000
    )
    assert [(s.labels, s.ts_ms, s.values) for s in out] == [
        ({"job": "j"}, [1000, 2000], [2.0, 2.0])
    ]


def test_tail_filter() -> None:
    batch = LogBatch.from_records(
        [
            LogRecord(1, '{"status": 503, "path": "/a"}', "h1", "error", attrs={"job": "web"}),
            LogRecord(2, '{"status": 200}', "h1", "info", attrs={"job": "web"}),
            LogRecord(3, "status=404 path=/b", "h2", "warning", attrs={"job": "web"}),
            LogRecord(4, "plain boom", "h2", "error", attrs={"job": "db"}),
            LogRecord(5, "{bad json", "h2", "error", attrs={"job": "web"}),
        ]
    )

    def msgs(text: str) -> list[str]:
        sel = parse_logql(text)
        assert isinstance(sel, LogSelector)
        return TailFilter(sel).apply(batch).message

    assert msgs('{job="web"} | json | status >= 500') == ['{"status": 503, "path": "/a"}']
    assert msgs('{job="web"} | logfmt | path="/b"') == ["status=404 path=/b"]
    assert msgs('{server_id="h2"} |= "boom"') == ["plain boom"]
    assert msgs('{server_id="h2"} != "boom" !~ "bad" |~ "st.t"') == ["status=404 path=/b"]
    assert len(msgs('{job=~".+"}')) == 5
    assert msgs('{level="error", job="web"} | json | path != ""') == [
        '{"status": 503, "path": "/a"}'
    ]
    assert msgs('{job="web"} | json | status == 200') == ['{"status": 200}']
    assert msgs('{detected_level="warning"}') == ["status=404 path=/b"]
