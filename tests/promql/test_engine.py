"""Engine API, limits and error classes (the conformance files cover the language)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from monitoringserver.errors import (
    BadDataError,
    CanceledError,
    ExecutionError,
    QueryLimitError,
    QueryTimeoutError,
)
from monitoringserver.model.labels import make_labels
from monitoringserver.model.samples import STALE_NAN
from monitoringserver.promql import Engine, EngineOptions, format_query, parse
from monitoringserver.promql.parser import translate_regex
from tests.promql.memory_querier import MemoryQuerier


@pytest.fixture
def engine() -> Engine:
    q = MemoryQuerier()
    for i in range(0, 11):
        t = i * 60_000
        q.add(make_labels({"__name__": "c_total", "job": "a"}), t, float(i * 60))
        q.add(make_labels({"__name__": "c_total", "job": "b"}), t, float(i * 120))
    q.add(make_labels({"__name__": "g", "job": "a"}), 0, 1.0)
    q.add(make_labels({"__name__": "g", "job": "a"}), 60_000, STALE_NAN)
    return Engine(q)


def test_instant_vector_result(engine: Engine) -> None:
    r = engine.instant("sum(rate(c_total[5m]))", 600_000)
    assert r.result_type == "vector"
    assert len(r.series) == 1
    assert r.series[0].labels == ()
    assert r.series[0].values[0] == pytest.approx(3.0)
    assert r.stats.samples_loaded > 0
    assert r.stats.steps == 1


def test_range_result_is_sorted_matrix(engine: Engine) -> None:
    r = engine.range("c_total", 0, 600_000, 60_000)
    assert r.result_type == "matrix"
    assert [dict(s.labels)["job"] for s in r.series] == ["a", "b"]
    assert r.series[0].ts_ms.tolist() == list(range(0, 600_001, 60_000))


def test_scalar_range_query_is_one_series(engine: Engine) -> None:
    r = engine.range("time()", 0, 120_000, 60_000)
    assert r.result_type == "matrix"
    assert r.series[0].labels == ()
    assert r.series[0].values.tolist() == [0.0, 60.0, 120.0]


def test_stale_marker_ends_series(engine: Engine) -> None:
    assert len(engine.instant("g", 30_000).series) == 1
    assert engine.instant("g", 90_000).series == []


def test_string_and_scalar_instant(engine: Engine) -> None:
    assert engine.instant('"x"', 5_000).string == "x"
    r = engine.instant("1 + 2 * 3", 5_000)
    assert (r.result_type, r.scalar, r.time_ms) == ("scalar", 7.0, 5_000)


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("sum(", BadDataError),
        ("", BadDataError),
        ('{job=~"("}', BadDataError),
        ('{job=""}', BadDataError),
        ("c_total + on() c_total", ExecutionError),
        ('label_replace(c_total, "x", "$1", "job", "(")', ExecutionError),
        ('label_replace(c_total, "1x", "$1", "job", "(.*)")', ExecutionError),
        ('count_values("1x", c_total)', ExecutionError),
        ("topk(NaN, c_total)", ExecutionError),
        ("double_exponential_smoothing(c_total[5m], 2, 0.5)", ExecutionError),
    ],
)
def test_error_classes(engine: Engine, query: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        engine.instant(query, 600_000)


@pytest.mark.parametrize(("start", "end", "step"), [(0, 10, 0), (10, 0, 1), (0, 100_000_000, 1)])
def test_range_parameters_are_checked(engine: Engine, start: int, end: int, step: int) -> None:
    with pytest.raises(BadDataError):
        engine.range("c_total", start, end, step)


def test_range_vector_and_string_not_allowed_in_range_query(engine: Engine) -> None:
    with pytest.raises(BadDataError):
        engine.range("c_total[5m]", 0, 60_000, 60_000)
    with pytest.raises(BadDataError):
        engine.range('"s"', 0, 60_000, 60_000)


def test_sample_and_series_limits() -> None:
    q = MemoryQuerier()
    for i in range(5):
        q.add(make_labels({"__name__": "m", "i": str(i)}), 0, 1.0)
    with pytest.raises(QueryLimitError, match="too many samples"):
        Engine(q, EngineOptions(max_samples=4)).instant("m", 0)
    with pytest.raises(QueryLimitError, match="more than 3 series"):
        Engine(q, EngineOptions(max_series=3)).instant("m", 0)
    assert len(Engine(q, EngineOptions(max_samples=5)).instant("m", 0).series) == 5


def test_timeout_and_cancel(engine: Engine) -> None:
    with pytest.raises(QueryTimeoutError):
        engine.instant("c_total", 0, timeout_s=-1)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CanceledError):
        engine.instant("c_total", 0, cancel=cancel)


@pytest.mark.parametrize(
    "kwargs",
    [{"lookback_delta_ms": 0}, {"timeout_s": 0}, {"max_samples": 0}, {"max_series": -1}],
)
def test_options_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadDataError):
        EngineOptions(**kwargs)  # type: ignore[arg-type]


def test_lookback_override(engine: Engine) -> None:
    assert len(engine.instant("c_total", 660_000).series) == 2
    assert engine.instant("c_total", 660_000, lookback_delta_ms=30_000).series == []


def test_large_range_query_is_vectorised_per_node(engine: Engine) -> None:
    r = engine.range("rate(c_total[2m]) * 60", 120_000, 600_000, 1_000)
    assert r.stats.steps == 481
    values = np.concatenate([s.values for s in r.series])
    assert set(np.round(values, 6).tolist()) == {60.0, 120.0}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("plain", "plain"),
        ("(?i)abc", "(?i:abc)"),
        ("a((?i)b)c", "a((?i:b))c"),
        ("a(?i)b|c", "a(?i:b)|(?i:c)"),
        ("[(?i)]", "[(?i)]"),
        ("\\(?i)", "\\(?i)"),
    ],
)
def test_translate_regex(pattern: str, expected: str) -> None:
    assert translate_regex(pattern) == expected


def test_format_and_parse() -> None:
    assert format_query("sum(up)by(job)") == "sum by (job) (up)"
    assert type(parse("holt_winters(x[5m], 0.5, 0.5)")).__name__ == "Call"


@pytest.mark.parametrize(
    ("query", "step_ms", "range_ms", "expected"),
    [
        ("rate(x[5m+1m])", 0, 0, "rate(x[360000ms])"),
        ("x[1h/2:step()]", 15_000, 0, "x[1800000ms:15000ms]"),
        ("x[5m:]", 0, 0, "x[5m:]"),
        ("x offset -step()*2", 10_000, 0, "x offset -10000ms *2"),
        ("x offset (min_of(range(), 8s))", 5_000, 10_000, "x offset 8000ms "),
        ('x{a="[1+1]"} offset range()', 0, 0, 'x{a="[1+1]"} offset 0 '),
        ("x[2^3s]", 0, 0, "x[8000ms]"),
        ("x[10 % 3]", 0, 0, "x[1000ms]"),
    ],
)
def test_duration_expressions(query: str, step_ms: int, range_ms: int, expected: str) -> None:
    from monitoringserver.promql.durations import rewrite

    assert rewrite(query, step_ms, range_ms) == expected


@pytest.mark.parametrize("query", ["x[1/0]", "x[foo()]", "x[1 +]", "x[(1]"])
def test_bad_duration_expressions(query: str) -> None:
    from monitoringserver.promql.durations import rewrite

    with pytest.raises(BadDataError):
        rewrite(query, 0, 0)


def test_duration_expression_query(engine: Engine) -> None:
    r = engine.range("count_over_time(c_total[step() * 2])", 120_000, 240_000, 60_000)
    assert r.series[0].values.tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(BadDataError):
        engine.instant("c_total[nope()]", 0)


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", 0xEF46DB3751D8E999),
        (b"a", 0xD24EC4F1A98C6E5B),
        (b"abc", 0x44BC2CF5AD770999),
        (b"Nobody inspects the spammish repetition", 0xFBCEA83C8A378BF1),
    ],
)
def test_xxh64_known_vectors(data: bytes, digest: int) -> None:
    from monitoringserver.promql.xxhash import xxh64

    assert xxh64(data) == digest


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("increase(x[1m] smoothed)", 'increase(x{__ext_mode__="x_smoothed"}[1m])'),
        ('rate(x{a="b"}[5m] anchored)', 'rate(x{__ext_mode__="x_anchored",a="b"}[5m])'),
        ("x @ 100 smoothed + 0", 'x{__ext_mode__="x_smoothed"} @ 100 + 0'),
        ("x offset -1m smoothed", 'x{__ext_mode__="x_smoothed"} offset -1m'),
    ],
)
def test_extended_selector_rewrite(query: str, expected: str) -> None:
    from monitoringserver.promql.extended import rewrite

    assert rewrite(query) == expected


def test_extended_selectors(engine: Engine) -> None:
    smoothed = engine.instant("c_total smoothed", 90_000)
    assert sorted(s.values[0] for s in smoothed.series) == [90.0, 180.0]
    anchored = engine.instant("increase(c_total[1m] anchored)", 90_000)
    assert sorted(s.values[0] for s in anchored.series) == [60.0, 120.0]
    with pytest.raises(ExecutionError, match="smoothed modifier can only be used with"):
        engine.instant("deriv(c_total[5m] smoothed)", 600_000)
    with pytest.raises(BadDataError):
        engine.instant("(1) smoothed", 0)


@pytest.mark.parametrize(
    ("values", "query", "expected"),
    [
        ([1e100, 1.0, -1e100], "sum(m)", 1.0),
        ([1e308, 1e308], "avg(m)", 1e308),
        ([1e100, 1.0, -1e100], "sum_over_time(s[5m])", 1.0),
        ([1e308, 1e308], "avg_over_time(s[5m])", 1e308),
        ([3.0, 1.0, 2.0], "stddev(m)", 0.816496580927726),
        ([3.0, 1.0, 2.0], "quantile(0.5, m)", 2.0),
        ([3.0, 1.0, 2.0], "mad_over_time(s[5m])", 1.0),
        ([3.0, float("nan"), 2.0], "quantile_over_time(0, s[5m])", float("nan")),
    ],
)
def test_numerically_hard_aggregations(values: list[float], query: str, expected: float) -> None:
    q = MemoryQuerier()
    for i, v in enumerate(values):
        q.add(make_labels({"__name__": "m", "i": str(i)}), 0, v)
        q.add(make_labels({"__name__": "s"}), i * 1000, v)
    r = Engine(q).instant(query, 10_000)
    got = float(r.series[0].values[0])
    if np.isnan(expected):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(expected, rel=1e-12)


def test_public_api() -> None:
    import monitoringserver.promql as promql

    assert sorted(promql.__all__) == [
        "Engine",
        "EngineOptions",
        "QueryStats",
        "Result",
        "ResultSeries",
        "format_query",
        "parse",
    ]
    for name in promql.__all__:
        assert getattr(promql, name) is not None


@pytest.mark.parametrize(
    ("start", "end"),
    [(10**23, 10**23), (-(10**23), 0), (0, 2**62 + 1)],
)
def test_times_outside_the_int64_range_are_bad_data(start: int, end: int) -> None:
    engine = Engine(MemoryQuerier())

    def run() -> object:
        if start == end:
            return engine.instant("0", start)
        return engine.range("0", start, end, 10**20)

    with pytest.raises(BadDataError, match="outside the supported range"):
        run()
