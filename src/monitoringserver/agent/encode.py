"""Columnar encoding of one cycle's samples into ``monitoringserver.v1.MetricsBatch``.

Series ids are small integers assigned by :class:`SeriesIds` for the lifetime of the
agent process. Samples are packed with :mod:`array` (machine order, converted to
little-endian on big-endian hosts): ``u32`` ids, ``i64`` ms timestamps, ``f64`` values.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from monitoringserver.agent.metrics import MetricDesc, Sample
from monitoringserver.model.labels import Labels
from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["EncodedBatch", "SeriesIds"]

_BIG_ENDIAN = sys.byteorder == "big"


def _le(a: array.array[int] | array.array[float]) -> bytes:
    if _BIG_ENDIAN:  # pragma: no cover - exercised on big-endian hosts only
        a = array.array(a.typecode, a)
        a.byteswap()
    return a.tobytes()


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One batch: its sequence number, referenced ids and the packed sample bytes."""

    batch_seq: int
    ids: frozenset[int]
    series_ids: bytes
    timestamps_ms: bytes
    values: bytes
    count: int


class SeriesIds:
    """``Labels -> id`` (and back), with each metric's description."""

    def __init__(self, max_series: int = 100_000) -> None:
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels] = []
        self._desc: list[MetricDesc] = []
        self._max = max_series

    def __len__(self) -> int:
        return len(self._labels)

    def id_of(self, labels: Labels, desc: MetricDesc) -> int | None:
        sid = self._ids.get(labels)
        if sid is None:
            if len(self._labels) >= self._max:
                return None
            sid = len(self._labels)
            self._ids[labels] = sid
            self._labels.append(labels)
            self._desc.append(desc)
        return sid

    def definition(self, sid: int) -> pb.SeriesDef:
        desc = self._desc[sid]
        return pb.SeriesDef(
            id=sid,
            labels=[pb.Label(name=k, value=v) for k, v in self._labels[sid]],
            unit=desc.unit,
            help=desc.help,
            type=desc.type,
        )

    def encode(self, samples: Iterable[Sample], ts_ms: int, batch_seq: int) -> EncodedBatch:
        ids = array.array("I")
        values = array.array("d")
        for desc, labels, value in samples:
            sid = self.id_of(labels, desc)
            if sid is not None:
                ids.append(sid)
                values.append(value)
        ts = array.array("q", [ts_ms]) * len(ids)
        return EncodedBatch(
            batch_seq=batch_seq,
            ids=frozenset(ids),
            series_ids=_le(ids),
            timestamps_ms=_le(ts),
            values=_le(values),
            count=len(ids),
        )

    def message(
        self,
        batch: EncodedBatch,
        *,
        agent_id: str,
        session_id: str = "",
        known: set[int] | None = None,
    ) -> pb.MetricsBatch:
        """The wire message. ``known=None``: self-contained (every referenced definition,
        no session); otherwise only definitions not in ``known`` (which is updated)."""
        if known is None:
            defs = [self.definition(i) for i in sorted(batch.ids)]
        else:
            new = sorted(batch.ids - known)
            defs = [self.definition(i) for i in new]
        return pb.MetricsBatch(
            agent_id=agent_id,
            batch_seq=batch.batch_seq,
            session_id="" if known is None else session_id,
            self_contained=known is None,
            series=defs,
            series_ids=batch.series_ids,
            timestamps_ms=batch.timestamps_ms,
            values=batch.values,
        )
