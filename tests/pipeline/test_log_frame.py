"""The log WAL record and the batcher's batch joining."""

from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.logs.api import DedupKey
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.pipeline.log_frame import decode_frame, encode_frame


def _batch(*msgs: str, attrs: dict[str, str] | None = None) -> LogBatch:
    return LogBatch.from_records(
        LogRecord(i + 1, m, server_id=f"h{i}", level="info", logger="l", source="s",
                  attrs=dict(attrs or {}))
        for i, m in enumerate(msgs)
    )  # fmt: skip


@pytest.mark.parametrize("parts", [0, 1, 2, 5])
def test_concat_joins_the_batches_in_order(parts: int) -> None:
    batches = [
        _batch(*(f"m{k}.{i}" for i in range(k + 1)), attrs={"k": str(k)}) for k in range(parts)
    ]
    joined = LogBatch.concat(batches)
    expected = [r for b in batches for r in b.records()]
    assert list(joined.records()) == expected
    assert joined.ts_ms.dtype == np.int64
    if parts == 1:
        assert joined is batches[0]


@pytest.mark.parametrize("dedup", [None, DedupKey("agent-1", 42)])
def test_frame_round_trip(dedup: DedupKey | None) -> None:
    batch = _batch("a", "bé", attrs={"trace_id": "t"})
    decoded, key = decode_frame(encode_frame(batch, dedup))
    assert list(decoded.records()) == list(batch.records())
    assert key == dedup
