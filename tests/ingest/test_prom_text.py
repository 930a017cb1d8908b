"""Prometheus text / OpenMetrics parsing and writing."""

from __future__ import annotations

import math

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.prom_text import (
    ExpositionParser,
    family_of,
    format_exposition,
    format_value,
    parse_float,
)

TEXT = """# HELP http_requests_total The total.
# TYPE http_requests_total counter
http_requests_total{method="post",code="200"} 1027 1395066363000
http_requests_total{method="post",code="400"}    3 1395066363000
# A comment
msdos_seconds{path="C:\\\\DIR\\\\FILE.TXT",error="Cannot find file:\\n\\"FILE.TXT\\""} 1.458255915e9
metric_without_timestamp_and_labels 12.47
something_weird{problem="division by zero"} +Inf -3982045
empty_labels{} -Inf
nan_value{a="x",} NaN
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
"""


def test_text_format_samples() -> None:
    exp = ExpositionParser().parse(TEXT, default_ts_ms=99)
    rows = list(exp.batch.rows())
    assert len(rows) == 9
    assert rows[0] == (
        (("__name__", "http_requests_total"), ("code", "200"), ("method", "post")),
        1395066363000,
        1027.0,
    )
    assert dict(rows[2][0])["path"] == "C:\\DIR\\FILE.TXT"
    assert dict(rows[2][0])["error"] == 'Cannot find file:\n"FILE.TXT"'
    assert rows[3] == ((("__name__", "metric_without_timestamp_and_labels"),), 99, 12.47)
    assert rows[4][1:] == (-3982045, math.inf)
    assert rows[5][2] == -math.inf
    assert math.isnan(rows[6][2])
    assert exp.has_ts.tolist() == [True, True, False, False, True, False, False, False, False]
    assert exp.types == {"http_requests_total": "counter", "rpc_duration_seconds": "summary"}
    assert exp.helps == {"http_requests_total": "The total."}


def test_openmetrics_seconds_and_exemplars() -> None:
    text = (
        "# TYPE foo counter\n"
        'foo_total{a="b # c"} 17.0 1520879607.789 # {trace_id="KOO5S4vxi0o"} 0.67\n'
        'bar 1 # {x="y"} 2 3\n'
        "# EOF\n"
    )
    exp = ExpositionParser().parse(text, default_ts_ms=5, openmetrics=True)
    rows = list(exp.batch.rows())
    assert rows[0] == ((("__name__", "foo_total"), ("a", "b # c")), 1520879607789, 17.0)
    assert rows[1] == ((("__name__", "bar"),), 5, 1.0)


def test_cache_reuses_label_tuples_and_resets() -> None:
    parser = ExpositionParser(series_cache=1)
    a = parser.parse('x{a="1"} 1\ny 2\n', default_ts_ms=0)
    b = parser.parse('x{a="1"} 3\n', default_ts_ms=0)
    assert a.batch.series[0] == b.batch.series[0]
    assert len(parser._cache) <= 2


@pytest.mark.parametrize(
    "line",
    [
        "1abc 1",
        "x{a=1} 2",
        'x{a="1" 2',
        "x",
        "x 1 2 3",
        "x notanumber",
        'x{a="1",a="2"} 1',
        "x 1 1.5",
        "x 1_000",
    ],
)
def test_errors(line: str) -> None:
    with pytest.raises(BadDataError, match="cannot parse exposition: line 2: "):
        ExpositionParser().parse("ok 1\n" + line + "\n", default_ts_ms=0)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (0.5, "0.5"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
        (1e20, "1e+20"),
        (-3.0, "-3"),
    ],
)
def test_format_value(value: float, text: str) -> None:
    assert format_value(value) == text
    assert math.isnan(parse_float(text)) if math.isnan(value) else parse_float(text) == value


def test_format_roundtrip_and_families() -> None:
    labels = (("__name__", "req_bucket"), ("le", "+Inf"), ("path", 'a"b\\c\nd'))
    text = format_exposition(
        [
            (labels, 3.0, 1000),
            ((("__name__", "req_count"),), 3.0, None),
            ((("__name__", "other"),), 1.5, None),
        ],
        types={"req": "histogram"},
        helps={"req": "Requests\nby path"},
    )
    assert text.splitlines()[:2] == ["# TYPE other untyped", "other 1.5"]
    assert "# HELP req Requests\\nby path" in text
    assert "# TYPE req histogram" in text
    back = ExpositionParser().parse(text, default_ts_ms=7)
    assert list(back.batch.rows())[1] == (labels, 1000, 3.0)
    assert format_exposition([]) == ""
    assert family_of("x_bucket", {"x": "histogram"}) == "x"
    assert family_of("x_bucket", {}) == "x_bucket"
