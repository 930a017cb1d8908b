"""The seed-002 JSON decoder: flattening, timestamps, window split, cache bound, fuzzing."""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.json_metrics import (
    JsonMetricsDecoder,
    SeriesCache,
    split_by_window,
)
from monitoringserver.util.timestamps import parse_timestamp_ms

NOW_MS = 1_750_000_000_000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, NOW_MS),
        (1_750_000_000, 1_750_000_000_000),
        (1_750_000_000.25, 1_750_000_000_250),
        (1_750_000_000_123, 1_750_000_000_123),
        ("2025-06-15T15:06:40Z", 1_750_000_000_000),
        ("2025-06-15T17:06:40+02:00", 1_750_000_000_000),
        ("2025-06-15T15:06:40.5", 1_750_000_000_500),
        ("1750000000", 1_750_000_000_000),
    ],
)
def test_parse_timestamp(value: str | float | None, expected: int) -> None:
    assert parse_timestamp_ms(value, now_ms=NOW_MS) == expected


@pytest.mark.parametrize("value", ["soon", "", float("nan"), float("inf"), 1e19, True])
def test_parse_timestamp_bad(value: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_timestamp_ms(value, now_ms=NOW_MS)  # type: ignore[arg-type]


def test_flatten_sanitize_and_series_reuse() -> None:
    dec = JsonMetricsDecoder()
    body = {
        "server_id": "s1",
        "metrics": {"a": {"b": {"c": 1}}, "disk-io.read": 2, "x": 3.5},
        "labels": {"dc": "eu", "empty": ""},
    }
    parsed = dec.decode(json.dumps(body).encode(), now_ms=NOW_MS)
    names = sorted(dict(s)["__name__"] for s in parsed.batch.series)
    assert names == ["a_b_c", "disk_io_read", "x"]
    assert all(dict(s)["dc"] == "eu" and "empty" not in dict(s) for s in parsed.batch.series)
    assert len(dec.cache) == 3
    again = dec.decode(json.dumps([body, body]).encode(), now_ms=NOW_MS)
    assert len(dec.cache) == 3  # label sets built once
    assert len(again.batch) == 6
    assert len(again.batch.series) == 3
    assert again.item_of_sample.tolist() == [0, 0, 0, 1, 1, 1]


def test_cache_is_bounded() -> None:
    dec = JsonMetricsDecoder(SeriesCache(max_series=10))
    for i in range(5):
        body = {"server_id": f"s{i}", "metrics": {f"m{j}": j for j in range(8)}}
        parsed = dec.decode(json.dumps(body).encode(), now_ms=NOW_MS)
        assert len(parsed.batch) == 8
        assert {dict(s)["server_id"] for s in parsed.batch.series} == {f"s{i}"}
        assert len(dec.cache) <= 16


def test_too_deep_is_refused() -> None:
    deep: dict[str, object] = {"v": 1}
    for _ in range(10):
        deep = {"n": deep}
    with pytest.raises(BadDataError, match="nested deeper"):
        JsonMetricsDecoder().decode(
            json.dumps({"server_id": "s", "metrics": deep}).encode(), now_ms=NOW_MS
        )


def test_split_by_window_limits_error_list() -> None:
    items = [{"server_id": "s", "timestamp": 1000 + i, "metrics": {"a": i}} for i in range(30)]
    parsed = JsonMetricsDecoder().decode(json.dumps(items).encode(), now_ms=NOW_MS)
    result = split_by_window(parsed, min_ms=NOW_MS - 1000, max_ms=NOW_MS + 1000, max_errors=5)
    assert result.rejected == {"too_old": 30}
    assert len(result.errors) == 5
    assert len(result.batch) == 0
    kept = split_by_window(parsed, min_ms=0, max_ms=NOW_MS)
    assert kept.batch is parsed.batch


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_parsed_or_refused_cleanly(doc: object) -> None:
    dec = JsonMetricsDecoder()
    message = ""
    try:
        parsed = dec.decode(json.dumps(doc).encode(), now_ms=NOW_MS)
    except BadDataError as exc:
        message = str(exc)
    if message:
        assert message.startswith("cannot parse metrics body: $")
    else:
        assert np.isfinite(parsed.batch.values).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_are_parsed_or_refused_cleanly(raw: bytes) -> None:
    with contextlib.suppress(BadDataError):
        JsonMetricsDecoder().decode(raw, now_ms=NOW_MS)


items = st.fixed_dictionaries(
    {
        "server_id": st.text(max_size=4),
        "metrics": st.dictionaries(st.text(max_size=4), json_values),
    },
    optional={
        "timestamp": json_values,
        "labels": st.dictionaries(st.text(max_size=4), st.text(max_size=3) | st.integers()),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(items, max_size=4) | items)
def test_item_shaped_bodies_are_parsed_or_refused_cleanly(doc: object) -> None:
    message = ""
    try:
        parsed = JsonMetricsDecoder().decode(json.dumps(doc).encode(), now_ms=NOW_MS)
    except BadDataError as exc:
        message = str(exc)
    if message:
        assert message.startswith("cannot parse metrics body: $")
    else:
        assert len(parsed.batch.values) == len(parsed.batch.ts_ms)
        assert np.isfinite(parsed.batch.values).all()


def test_stored_flags_grow_with_the_cache() -> None:
    cache = SeriesCache()
    names = cache.names_for("s", ())
    numbers = np.array([cache.add(names, f"m{i}", "s", ()) for i in range(3000)])
    cache.mark_stored(numbers, cache.generation)
    assert cache.all_stored(numbers, cache.generation)
