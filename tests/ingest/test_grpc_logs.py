"""The agent's LogBatch message as a columnar LogBatch."""

from __future__ import annotations

import pytest

from monitoringserver.ingest.grpc_logs import log_batch_from_pb
from monitoringserver.proto import monitoring_pb2 as pb


def test_empty_batch() -> None:
    assert len(log_batch_from_pb(pb.LogBatch(agent_id="a"), "a", 5)) == 0


@pytest.mark.parametrize(
    ("record", "ts", "level", "attrs"),
    [
        (pb.LogRecord(timestamp_ms=1_700_000_000, level="WARN"), 1_700_000_000, "warning", {}),
        (pb.LogRecord(level="", message="m"), 42, "unknown", {}),
        (pb.LogRecord(level="err", attrs={"_PID": "7"}), 42, "error", {"_PID": "7"}),
        (pb.LogRecord(level="info", attrs={"a": "1", "b": ""}), 42, "info", {"a": "1", "b": ""}),
    ],
)  # fmt: skip
def test_record_fields(record: pb.LogRecord, ts: int, level: str, attrs: dict[str, str]) -> None:
    plain = pb.LogRecord(level="debug", logger="l", source="s", message="other")
    batch = log_batch_from_pb(pb.LogBatch(agent_id="web-1", records=[record, plain]), "web-1", 42)
    assert batch.ts_ms.tolist() == [ts, 42]
    assert batch.level == [level, "debug"]
    assert batch.attrs == [attrs, {}]
    assert batch.server_id == ["web-1", "web-1"]
    assert batch.message == [record.message, "other"]
    assert batch.logger == [record.logger, "l"]
    assert batch.source == [record.source, "s"]


def test_attrs_dicts_are_distinct_objects() -> None:
    req = pb.LogBatch(agent_id="a", records=[pb.LogRecord(message="x"), pb.LogRecord(message="y")])
    batch = log_batch_from_pb(req, "a", 1)
    batch.attrs[0]["k"] = "v"
    assert batch.attrs[1] == {}
