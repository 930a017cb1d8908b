from __future__ import annotations

import json

import numpy as np
import pytest

from monitoringserver.errors import StorageError
from monitoringserver.metrics.index import NewSeries
from monitoringserver.pipeline.metric_frame import (
    MetricFrame,
    decode_frame,
    encode_frame,
    series_columns,
    series_rows,
)


@pytest.mark.parametrize(
    ("sids", "ts"),
    [
        ([1, 2, 3], [1_700_000_000_000, 1_700_000_000_010, 1_700_000_000_005]),
        ([2**40, 1, 2**63], [0, 2**40, -5]),  # wide ids and a wide time span
        ([], []),
    ],
)
def test_frame_round_trip(sids: list[int], ts: list[int]) -> None:
    frame = MetricFrame(
        np.array(sids, dtype=np.uint64),
        np.array(ts, dtype=np.int64),
        np.array([float("nan"), -0.0, 1.5][: len(sids)], dtype=np.float64),
        (NewSeries(7, (("__name__", "m"), ("a", "ü")), "src"),),
        "agent-1",
        42,
    )
    out = decode_frame(encode_frame(frame))
    assert out.series_ids.tolist() == sids
    assert out.ts_ms.tolist() == ts
    assert np.array_equal(out.values.view(np.uint64), frame.values.view(np.uint64))
    assert out.new_series == frame.new_series
    assert (out.agent_id, out.batch_seq) == ("agent-1", 42)


@pytest.mark.parametrize("payload", [b"", b"\x09\x00" + b"\x00" * 8, b"\x01\x03" + b"\x00" * 5])
def test_bad_records_raise_storage_error(payload: bytes) -> None:
    with pytest.raises(StorageError, match="cannot decode WAL record"):
        decode_frame(payload)


def test_prepared_series_rows_encode_alike_and_feed_the_series_columns() -> None:
    new = (
        NewSeries(3, (("__name__", "m"), ("a", "ü")), "src"),
        NewSeries(4, (("__name__", "n"),), "other"),
    )
    empty = np.empty(0, dtype=np.uint64)
    times, values = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    bare = MetricFrame(empty, times, values, new)
    prepared = MetricFrame(empty, times, values, new, rows=series_rows(new))
    assert encode_frame(prepared) == encode_frame(bare)
    later = MetricFrame(empty, times, values, (NewSeries(5, (("__name__", "o"),), "src"),))
    assert series_columns([MetricFrame(empty, times, values)]) is None
    columns = series_columns([prepared, MetricFrame(empty, times, values), later])
    assert columns is not None
    assert columns["id"].tolist() == [3, 4, 5]
    assert [json.loads(t) for t in columns["labels"]] == [
        [["__name__", "m"], ["a", "ü"]],
        [["__name__", "n"]],
        [["__name__", "o"]],
    ]
    assert columns["source"].tolist() == ["src", "other", "src"]


def test_a_queued_frame_without_its_series_objects_still_feeds_the_series_columns() -> None:
    new = (NewSeries(7, (("__name__", "m"),), "src"),)
    empty = np.empty(0, dtype=np.uint64)
    times, values = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64)
    stripped = MetricFrame(empty, times, values, (), rows=series_rows(new))
    columns = series_columns([stripped])
    assert columns is not None
    assert columns["id"].tolist() == [7]
    assert columns["source"].tolist() == ["src"]
    # No rows and no series: nothing to insert.
    assert series_columns([MetricFrame(empty, times, values, (), rows=series_rows(()))]) is None
