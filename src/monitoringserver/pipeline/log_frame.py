"""The log WAL record used by :mod:`~monitoringserver.pipeline.log_writer`.

One WAL record holds one accepted batch, column by column (msgpack, array-like: the
timestamps as little-endian int64 bytes, the other columns as lists) plus the agent's
dedup key (``agent_id`` "" and ``batch_seq`` -1 when there is none).
"""

from __future__ import annotations

import msgspec
import numpy as np

from monitoringserver.logs.api import DedupKey
from monitoringserver.model.logs import LogBatch

__all__ = ["decode_frame", "encode_frame"]


class _Frame(msgspec.Struct, array_like=True):
    ts: bytes
    server_id: list[str]
    level: list[str]
    logger: list[str]
    source: list[str]
    message: list[str]
    attrs: list[dict[str, str]]
    agent_id: str
    batch_seq: int


def encode_frame(batch: LogBatch, dedup: DedupKey | None) -> bytes:
    return msgspec.msgpack.encode(
        _Frame(
            np.ascontiguousarray(batch.ts_ms, dtype="<i8").tobytes(),
            batch.server_id,
            batch.level,
            batch.logger,
            batch.source,
            batch.message,
            batch.attrs,
            dedup.agent_id if dedup else "",
            dedup.batch_seq if dedup else -1,
        )
    )


def decode_frame(payload: bytes) -> tuple[LogBatch, DedupKey | None]:
    f = msgspec.msgpack.decode(payload, type=_Frame)
    batch = LogBatch(
        np.frombuffer(f.ts, dtype="<i8").astype(np.int64),
        f.server_id,
        f.level,
        f.logger,
        f.source,
        f.message,
        f.attrs,
    )
    return batch, (DedupKey(f.agent_id, f.batch_seq) if f.agent_id else None)
