"""The fast query-result encoder produces exactly what the generic encoder does."""

from __future__ import annotations

import math

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoringserver.promql import Result, ResultSeries
from monitoringserver.web.routers.prometheus_encode import encode_data, format_times, format_values
from monitoringserver.web.routers.prometheus_params import encode_result, format_sample_value


def _reference(result: Result) -> object:
    return msgspec.json.decode(msgspec.json.encode(encode_result(result)))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1.0, "1"),
        (-0.0, "-0"),
        (0.0, "0"),
        (0.1, "0.1"),
        (1e-5, "0.00001"),
        (1.5e16, "15000000000000000"),
        (123456.789, "123456.789"),
        (math.nan, "NaN"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (5e-324, format_sample_value(5e-324)),
    ],
)
def test_format_values_matches_go_positional(value: float, text: str) -> None:
    assert format_values(np.array([value])) == [text]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=30))
def test_format_values_equals_slow_formatter(values: list[float]) -> None:
    assert format_values(np.array(values, dtype=np.float64)) == [
        format_sample_value(v) for v in values
    ]


_ts = st.integers(min_value=-(10**12), max_value=10**13)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.text(min_size=1, max_size=5), st.text(max_size=5), max_size=3),
            st.lists(st.tuples(_ts, st.floats()), max_size=6),
        ),
        max_size=5,
    ),
    st.sampled_from(["matrix", "vector"]),
)
def test_encode_data_equals_generic_encoder(
    series: list[tuple[dict[str, str], list[tuple[int, float]]]], kind: str
) -> None:
    out = []
    for labels, given_points in series:
        points = (given_points[:1] or [(0, 1.0)]) if kind == "vector" else given_points
        out.append(
            ResultSeries(
                tuple(sorted(labels.items())),
                np.array([t for t, _ in points], dtype=np.int64),
                np.array([v for _, v in points], dtype=np.float64),
            )
        )
    result = Result(kind, series=out)  # type: ignore[arg-type]
    assert msgspec.json.decode(encode_data(result)) == _reference(result)


def test_shared_timestamps_and_extra_keys() -> None:
    ts = np.array([1000, 2500, 4000], dtype=np.int64)
    result = Result(
        "matrix",
        series=[
            ResultSeries((("a", "1"),), ts, np.array([1.0, 2.5, math.nan])),
            ResultSeries((("a", "2"),), ts, np.array([0.0, -1.0, 1e20])),
            ResultSeries((("a", "3"),), ts[:0], np.array([])),
        ],
    )
    body = msgspec.json.decode(encode_data(result, {"stats": {"x": 1}}))
    assert body == {**_reference(result), "stats": {"x": 1}}  # type: ignore[dict-item]
    assert body["result"][0]["values"] == [[1, "1"], [2.5, "2.5"], [4, "NaN"]]


@pytest.mark.parametrize(
    "result",
    [
        Result("scalar", scalar=2.5, time_ms=1500),
        Result("string", string="x", time_ms=1000),
        Result("vector"),
        Result("matrix"),
    ],
)
def test_other_result_types(result: Result) -> None:
    assert msgspec.json.decode(encode_data(result)) == _reference(result)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_format_values_across_magnitudes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = 10 ** rng.uniform(-8, 20, 5000) * rng.choice([1.0, -1.0], 5000)
    values = np.concatenate([values, np.round(values), np.round(values, 2), [1e-4, 1e16]])
    assert format_values(values) == [format_sample_value(v) for v in values.tolist()]


@pytest.mark.parametrize("size", [1, 7, 256, 257])  # both sides of the small-input path
def test_format_values_small_and_large_paths(size: int) -> None:
    rng = np.random.default_rng(size)
    values = 10 ** rng.uniform(-8, 20, size) * rng.choice([1.0, -1.0], size)
    values[::5] = np.round(values[::5])
    values[1::7] = np.nan
    values[2::11] = np.inf
    assert format_values(values) == [format_sample_value(v) for v in values.tolist()]


@pytest.mark.parametrize("size", [3, 300])
def test_format_times_small_and_large_paths(size: int) -> None:
    ts = np.arange(size, dtype=np.int64) * 1_500 - 10_000
    assert format_times(ts) == [
        str(t // 1000) if t % 1000 == 0 else str(t / 1000) for t in ts.tolist()
    ]
