"""The agent's ``LogBatch`` message (``NodeAgent.SendLogs`` / ``StreamLogs``) as a
columnar :class:`~monitoringserver.model.logs.LogBatch`.

Every record belongs to the sending agent: ``server_id`` is the agent id. A record
without ``timestamp_ms`` (0) gets the receive time; its ``level`` is normalised
(``normalize_level``: an empty one becomes ``unknown``); ``attrs`` are copied into plain
dicts. Each field is read once per record with a C-level ``map`` (reading a field of a
protobuf message costs a wrapper and a string copy; the batch reads five of them per
record and builds no per-record Python object besides the attrs dicts).
"""

from __future__ import annotations

import operator

import numpy as np

from monitoringserver.model.logs import LogBatch, normalize_level
from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["log_batch_from_pb"]

_timestamp = operator.attrgetter("timestamp_ms")
_level = operator.attrgetter("level")
_logger = operator.attrgetter("logger")
_source = operator.attrgetter("source")
_message = operator.attrgetter("message")
_attrs = operator.attrgetter("attrs")


def log_batch_from_pb(request: pb.LogBatch, server_id: str, now_ms: int) -> LogBatch:
    """The records of ``request`` as one batch from host ``server_id``; ``now_ms`` (ms
    since the epoch) stands in for missing timestamps."""
    records = list(request.records)
    n = len(records)
    if not n:
        return LogBatch.empty()
    ts = np.fromiter(map(_timestamp, records), dtype=np.int64, count=n)
    ts[ts == 0] = now_ms
    given = list(map(_level, records))
    # Few distinct spellings per batch: normalise each once, then map in C.
    names = {raw: normalize_level(raw) for raw in set(given)}
    maps = list(map(_attrs, records))
    attrs: list[dict[str, str]] = (
        [dict(m.items()) if m else {} for m in maps]
        if any(map(len, maps))
        else [{} for _ in range(n)]
    )
    return LogBatch(
        ts_ms=ts,
        server_id=[server_id] * n,
        level=list(map(names.__getitem__, given)),
        logger=list(map(_logger, records)),
        source=list(map(_source, records)),
        message=list(map(_message, records)),
        attrs=attrs,
    )
