"""Decode ``monitoringserver.v1.MetricsBatch`` into a columnar :class:`SampleBatch`.

Samples arrive as three little-endian byte strings (``u32`` series ids, ``i64``
timestamps in ms, ``f64`` values) and are viewed with ``numpy.frombuffer``: no
per-sample Python objects. Series ids are resolved against a :class:`SeriesTable`
(one per agent session, or a throw-away one for ``self_contained`` batches).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, CardinalityLimitError
from monitoringserver.model.labels import (
    METRIC_NAME,
    Labels,
    validate_label_name,
    validate_metric_name,
)
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["MetricMeta", "SeriesTable", "decode_columns", "decode_samples"]

#: Resolves label sets to store series ids (``SeriesIdAppender.resolve_series``).
Resolver = Callable[[Sequence[Labels]], NDArray[np.uint64]]
#: Marks a session series whose store id is not known yet.
_UNRESOLVED = np.uint64(2**64 - 1)

_U32 = np.dtype("<u4")
_I64 = np.dtype("<i8")
_F64 = np.dtype("<f8")


@dataclass(frozen=True, slots=True)
class MetricMeta:
    """Self-description of a metric name, as the agent sent it."""

    type: str
    unit: str
    help: str


class SeriesTable:
    """``series id -> Labels`` for one session; ids are small integers chosen by the agent.

    Bounded by ``max_series`` (a definition past it raises ``CardinalityLimitError``).
    Every series gets ``server_id=<agent id>`` when it does not carry one. Beside the
    labels it remembers each series' store id once :meth:`store_ids` resolved it, so a
    session's later batches map ids with one array lookup.
    """

    def __init__(self, agent_id: str, *, max_series: int = 100_000) -> None:
        self.agent_id = agent_id
        self._max_series = max_series
        self._labels: list[Labels | None] = []
        self._holes = 0
        self._snapshot: tuple[Labels, ...] | None = None
        self._store = np.empty(0, dtype=np.uint64)  # session id -> store id or _UNRESOLVED
        self._valid_names: set[str] = set()  # bounded by the session's series

    def __len__(self) -> int:
        return len(self._labels) - self._holes

    def define(self, defs: Iterable[pb.SeriesDef], meta: dict[str, MetricMeta]) -> None:
        """Add or replace definitions; records metric metadata into ``meta``."""
        for d in defs:
            if d.id >= self._max_series:
                raise CardinalityLimitError(
                    f"cannot define series id {d.id}: a session holds at most "
                    f"{self._max_series} series"
                )
            labels = _labels_of(d, self.agent_id, self._valid_names)
            if d.help or d.unit or d.type:
                meta[dict(labels)[METRIC_NAME]] = MetricMeta(d.type, d.unit, d.help)
            if d.id >= len(self._labels):
                missing = d.id + 1 - len(self._labels)
                self._labels.extend([None] * missing)
                self._holes += missing
            if self._labels[d.id] is None:
                self._holes -= 1
            self._labels[d.id] = labels
            self._snapshot = None
            if d.id < len(self._store):
                self._store[d.id] = _UNRESOLVED

    def store_ids(self, ids: NDArray[np.uint32], resolve: Resolver) -> NDArray[np.uint64]:
        """Store series id per sample for the session ids ``ids``; series not resolved
        yet go through ``resolve`` once (its errors propagate; nothing is remembered
        then). Raises ``BadDataError`` for an id that was never defined."""
        if len(ids) == 0:
            return np.empty(0, dtype=np.uint64)
        top = int(ids.max())
        if top >= len(self._labels):
            raise BadDataError(f"cannot decode metrics batch: unknown series id {top}")
        if len(self._store) < len(self._labels):
            grown = np.full(len(self._labels), _UNRESOLVED, dtype=np.uint64)
            grown[: len(self._store)] = self._store
            self._store = grown
        sids = self._store[ids]
        missing = sids == _UNRESOLVED
        if not missing.any():
            return sids
        local = np.unique(ids[missing])
        series: list[Labels] = []
        for sid in local.tolist():
            lbl = self._labels[sid]
            if lbl is None:
                raise BadDataError(f"cannot decode metrics batch: unknown series id {sid}")
            series.append(lbl)
        self._store[local] = resolve(series)
        result: NDArray[np.uint64] = self._store[ids]
        return result

    def resolve(self, ids: NDArray[np.uint32]) -> tuple[tuple[Labels, ...], NDArray[np.uint32]]:
        """``(series, series_idx)`` for a :class:`SampleBatch`; raises on unknown ids."""
        n = len(self._labels)
        if len(ids) == 0:
            return (), np.empty(0, dtype=np.uint32)
        top = int(ids.max())
        if top >= n:
            raise BadDataError(f"cannot decode metrics batch: unknown series id {top}")
        if self._holes == 0 and len(ids) >= n:
            # Dense table and a batch at least as long as it: use the table as is.
            if self._snapshot is None:
                self._snapshot = tuple(lbl for lbl in self._labels if lbl is not None)
            return self._snapshot, ids
        uniq, inverse = np.unique(ids, return_inverse=True)
        series: list[Labels] = []
        for sid in uniq.tolist():
            lbl = self._labels[sid]
            if lbl is None:
                raise BadDataError(f"cannot decode metrics batch: unknown series id {sid}")
            series.append(lbl)
        return tuple(series), inverse.astype(np.uint32, copy=False)


def _labels_of(d: pb.SeriesDef, agent_id: str, valid: set[str]) -> Labels:
    """The series' label set; ``valid`` caches the names (metric names prefixed ``=``)
    that passed validation already, so a session's thousand series check each once."""
    pairs: dict[str, str] = {}
    for lbl in d.labels:
        label = lbl.name
        if label in pairs:
            raise BadDataError(f"cannot define series id {d.id}: label {label!r} appears twice")
        if label not in valid:
            validate_label_name(label)
            valid.add(label)
        if lbl.value:
            pairs[label] = lbl.value
    name = pairs.get(METRIC_NAME, "")
    if not name:
        raise BadDataError(f"cannot define series id {d.id}: it has no __name__ label")
    if "=" + name not in valid:
        validate_metric_name(name)
        valid.add("=" + name)
    pairs.setdefault("server_id", agent_id)
    return tuple(sorted(pairs.items()))


def _view(raw: bytes, dtype: np.dtype[np.generic], what: str) -> NDArray[np.generic]:
    if len(raw) % dtype.itemsize:
        raise BadDataError(
            f"cannot decode metrics batch: {what} has {len(raw)} bytes, "
            f"not a multiple of {dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype)


def decode_columns(
    msg: pb.MetricsBatch,
) -> tuple[NDArray[np.uint32], NDArray[np.int64], NDArray[np.float64]]:
    """``(session series ids, timestamps ms, values)`` viewed on the message's bytes
    (read-only, native byte order on little-endian hosts).

    Raises ``BadDataError`` for malformed byte lengths and differing element counts.
    """
    ids = _view(msg.series_ids, _U32, "series_ids")
    ts = _view(msg.timestamps_ms, _I64, "timestamps_ms")
    values = _view(msg.values, _F64, "values")
    if not len(ids) == len(ts) == len(values):
        raise BadDataError(
            "cannot decode metrics batch: series_ids, timestamps_ms and values hold "
            f"{len(ids)}, {len(ts)} and {len(values)} elements"
        )
    return (
        ids.astype(np.uint32, copy=False),
        ts.astype(np.int64, copy=False),
        values.astype(np.float64, copy=False),
    )


def decode_samples(msg: pb.MetricsBatch, table: SeriesTable) -> SampleBatch:
    """Turn the sample bytes of ``msg`` into a batch, resolving ids through ``table``.

    Raises ``BadDataError`` for malformed byte lengths, differing element counts and
    unknown series ids.
    """
    ids, ts, values = decode_columns(msg)
    series, idx = table.resolve(ids)
    return SampleBatch(
        series=series,
        series_idx=idx,
        ts_ms=ts,
        values=values,
    )
