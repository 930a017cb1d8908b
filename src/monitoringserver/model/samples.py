"""Columnar sample batches: what every ingest format decodes into.

No per-sample Python objects: a batch is four arrays plus the list of distinct
label sets it refers to. Sample ``i`` belongs to ``series[series_idx[i]]``, has the
timestamp ``ts_ms[i]`` (milliseconds since the Unix epoch, UTC) and ``values[i]``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import Labels

__all__ = ["STALE_NAN", "STALE_NAN_BITS", "SampleBatch", "is_stale_nan"]

#: The bit pattern Prometheus uses to mark a series stale (a signalling NaN).
STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN: float = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]


def is_stale_nan(values: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Element-wise: is this value the staleness marker (not just any NaN)?"""
    bits = np.asarray(values, dtype=np.float64).view(np.uint64)
    result: NDArray[np.bool_] = bits == np.uint64(STALE_NAN_BITS)
    return result


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """A columnar batch of samples.

    ``series`` lists distinct label sets; ``series_idx`` (uint32) indexes into it per
    sample. ``ts_ms`` is int64 milliseconds, ``values`` float64. The arrays have equal
    length; the batch owns them (callers must not mutate them afterwards).
    """

    series: Sequence[Labels]
    series_idx: NDArray[np.uint32]
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]

    def __post_init__(self) -> None:
        n = len(self.ts_ms)
        if len(self.series_idx) != n or len(self.values) != n:
            raise BadDataError(
                "cannot build sample batch: series_idx, ts_ms and values differ in length "
                f"({len(self.series_idx)}, {n}, {len(self.values)})"
            )
        if n and int(self.series_idx.max()) >= len(self.series):
            raise BadDataError("cannot build sample batch: series index out of range")

    def __len__(self) -> int:
        return len(self.ts_ms)

    @classmethod
    def empty(cls) -> SampleBatch:
        return cls(
            series=(),
            series_idx=np.empty(0, dtype=np.uint32),
            ts_ms=np.empty(0, dtype=np.int64),
            values=np.empty(0, dtype=np.float64),
        )

    @classmethod
    def from_rows(cls, rows: Iterable[tuple[Labels, int, float]]) -> SampleBatch:
        """Build from ``(labels, ts_ms, value)`` rows; for tests and small edge formats."""
        index: dict[Labels, int] = {}
        idx: list[int] = []
        ts: list[int] = []
        vals: list[float] = []
        for labels, t, v in rows:
            i = index.setdefault(labels, len(index))
            idx.append(i)
            ts.append(t)
            vals.append(v)
        return cls(
            series=list(index),
            series_idx=np.asarray(idx, dtype=np.uint32),
            ts_ms=np.asarray(ts, dtype=np.int64),
            values=np.asarray(vals, dtype=np.float64),
        )

    def rows(self) -> Iterable[tuple[Labels, int, float]]:
        """Iterate ``(labels, ts_ms, value)``; slow, for tests and small batches only."""
        for i, t, v in zip(
            self.series_idx.tolist(), self.ts_ms.tolist(), self.values.tolist(), strict=True
        ):
            yield self.series[i], t, v

    def select(self, mask: NDArray[np.bool_]) -> SampleBatch:
        """The samples where ``mask`` is true (series list is kept as is)."""
        return SampleBatch(self.series, self.series_idx[mask], self.ts_ms[mask], self.values[mask])

    @staticmethod
    def concat(batches: Sequence[SampleBatch]) -> SampleBatch:
        """Merge batches, deduplicating their label sets."""
        if not batches:
            return SampleBatch.empty()
        if len(batches) == 1:
            return batches[0]
        index: dict[Labels, int] = {}
        idx_parts: list[NDArray[np.uint32]] = []
        for b in batches:
            remap = np.fromiter(
                (index.setdefault(lbl, len(index)) for lbl in b.series),
                dtype=np.uint32,
                count=len(b.series),
            )
            idx_parts.append(remap[b.series_idx] if len(b) else np.empty(0, dtype=np.uint32))
        return SampleBatch(
            series=list(index),
            series_idx=np.concatenate(idx_parts),
            ts_ms=np.concatenate([b.ts_ms for b in batches]),
            values=np.concatenate([b.values for b in batches]),
        )
