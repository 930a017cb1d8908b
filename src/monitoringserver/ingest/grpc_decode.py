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
        # id -> labels in a dict, not a list: once its label tuples are untracked the
        # garbage collector stops traversing it (10,000 sessions x 100 series would
        # otherwise add ~50 ms to every full collection). ``_size`` is the top id + 1.
        self._labels: dict[int, Labels] = {}
        self._size = 0
        self._snapshot: tuple[Labels, ...] | None = None
        self._store = np.empty(0, dtype=np.uint64)  # session id -> store id or _UNRESOLVED

    def __len__(self) -> int:
        return len(self._labels)

    def define(self, defs: Iterable[pb.SeriesDef], meta: dict[str, MetricMeta]) -> None:
        """Add or replace definitions; records metric metadata into ``meta``."""
        for d in defs:
            if d.id >= self._max_series:
                raise CardinalityLimitError(
                    f"cannot define series id {d.id}: a session holds at most "
                    f"{self._max_series} series"
                )
            labels = _labels_of(d, self.agent_id)
            if d.help or d.unit or d.type:
                meta[dict(labels)[METRIC_NAME]] = MetricMeta(d.type, d.unit, d.help)
            if d.id >= self._size:
                self._size = d.id + 1
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
        if top >= self._size:
            raise BadDataError(f"cannot decode metrics batch: unknown series id {top}")
        if len(self._store) < self._size:
            grown = np.full(self._size, _UNRESOLVED, dtype=np.uint64)
            grown[: len(self._store)] = self._store
            self._store = grown
        sids = self._store[ids]
        missing = sids == _UNRESOLVED
        if not missing.any():
            return sids
        local = np.unique(ids[missing])
        series: list[Labels] = []
        get = self._labels.get
        for sid in local.tolist():
            lbl = get(sid)
            if lbl is None:
                raise BadDataError(f"cannot decode metrics batch: unknown series id {sid}")
            series.append(lbl)
        self._store[local] = resolve(series)
        result: NDArray[np.uint64] = self._store[ids]
        return result

    def resolve(self, ids: NDArray[np.uint32]) -> tuple[tuple[Labels, ...], NDArray[np.uint32]]:
        """``(series, series_idx)`` for a :class:`SampleBatch`; raises on unknown ids."""
        n = self._size
        if len(ids) == 0:
            return (), np.empty(0, dtype=np.uint32)
        top = int(ids.max())
        if top >= n:
            raise BadDataError(f"cannot decode metrics batch: unknown series id {top}")
        if len(self._labels) == n and len(ids) >= n:
            # Dense table and a batch at least as long as it: use the table as is.
            if self._snapshot is None:
                self._snapshot = tuple(self._labels[i] for i in range(n))
            return self._snapshot, ids
        uniq, inverse = np.unique(ids, return_inverse=True)
        series: list[Labels] = []
        get = self._labels.get
        for sid in uniq.tolist():
            lbl = get(sid)
            if lbl is None:
                raise BadDataError(f"cannot decode metrics batch: unknown series id {sid}")
            series.append(lbl)
        return tuple(series), inverse.astype(np.uint32, copy=False)


#: Label and metric names (the latter prefixed ``=``) that passed validation, shared by
#: every session: a fleet defines the same few hundred names thousands of times. Bounded:
#: cleared when it reaches ``_VALID_CAP`` entries (names are then validated again).
_VALID_NAMES: set[str] = set()
_VALID_CAP = 65_536


def _remember_valid(name: str) -> None:
    if len(_VALID_NAMES) >= _VALID_CAP:
        _VALID_NAMES.clear()
    _VALID_NAMES.add(name)


def _labels_of(d: pb.SeriesDef, agent_id: str) -> Labels:
    """The series' label set; names that passed validation (the shared bounded cache)
    are not checked again."""
    raw = [(lbl.name, lbl.value) for lbl in d.labels]
    pairs = dict(raw)
    if len(pairs) != len(raw):
        seen: set[str] = set()
        for label, _ in raw:
            if label in seen:
                raise BadDataError(f"cannot define series id {d.id}: label {label!r} appears twice")
            seen.add(label)
    for label in pairs:
        if label not in _VALID_NAMES:
            validate_label_name(label)
            _remember_valid(label)
    if "" in pairs.values():
        pairs = {k: v for k, v in pairs.items() if v}
    name = pairs.get(METRIC_NAME, "")
    if not name:
        raise BadDataError(f"cannot define series id {d.id}: it has no __name__ label")
    key = "=" + name
    if key not in _VALID_NAMES:
        validate_metric_name(name)
        _remember_valid(key)
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
