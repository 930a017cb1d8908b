"""The agent's LogBatch message as a columnar LogBatch."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.grpc_logs import decode_log_batch, log_batch_from_pb
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


def test_records_with_attrs_own_their_dicts_the_others_share_an_empty_one() -> None:
    records = [pb.LogRecord(message="x"), pb.LogRecord(message="y", attrs={"k": "v"})]
    records += [pb.LogRecord(message="z", attrs={"k": "v"}), pb.LogRecord(message="w")]
    batch = log_batch_from_pb(pb.LogBatch(agent_id="a", records=records), "a", 1)
    assert batch.attrs == [{}, {"k": "v"}, {"k": "v"}, {}]
    assert batch.attrs[1] is not batch.attrs[2]
    assert batch.attrs[0] is batch.attrs[3]
    plain = log_batch_from_pb(pb.LogBatch(agent_id="a", records=records[:1] * 3), "a", 1)
    assert plain.attrs == [{}, {}, {}]
    assert plain.attrs[0] is not batch.attrs[0]  # one per batch: batches stay independent


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"\xff\xff\xff", BadDataError),
        (pb.LogBatch(agent_id="").SerializeToString(), BadDataError),
    ],
)
def test_decode_log_batch_rejects(raw: bytes, error: type[Exception]) -> None:
    def check(agent_id: str) -> str:
        if not agent_id:
            raise BadDataError("cannot accept agent_id '': empty")
        return agent_id

    with pytest.raises(error):
        decode_log_batch(raw, 1, check)


def test_decode_log_batch_reads_agent_and_sequence() -> None:
    raw = pb.LogBatch(agent_id="web-1", batch_seq=7, records=[pb.LogRecord(message="m")])
    got = decode_log_batch(raw.SerializeToString(), 42)
    assert (got.agent_id, got.batch_seq, got.batch.server_id, got.batch.ts_ms.tolist()) == (
        "web-1",
        7,
        ["web-1"],
        [42],
    )
