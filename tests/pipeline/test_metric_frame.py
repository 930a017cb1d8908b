from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.errors import StorageError
from monitoringserver.metrics.index import NewSeries
from monitoringserver.pipeline.metric_frame import MetricFrame, decode_frame, encode_frame


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
