"""The small interfaces everything above ``metrics`` depends on.

The embedded store, VictoriaMetrics and PostgreSQL backends implement them; the
PromQL engine, HTTP API, alerting and reports use only these names and never import
the DuckDB code.

Threading: :class:`MetricQuerier` methods are synchronous and thread-safe; callers on
the event loop run them with ``asyncio.to_thread``. :class:`MetricAppender.append` is a
coroutine and returns only after the batch is durable in the WAL (the acknowledgement).
All timestamps are int milliseconds since the Unix epoch, UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.delivery import DedupKey
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import SampleBatch

__all__ = [
    "AppendResult",
    "DedupKey",
    "MetricAppender",
    "MetricQuerier",
    "PackedQuerier",
    "PackedSeries",
    "Resolution",
    "ResolutionStats",
    "RollupSeries",
    "SeriesData",
    "SeriesIdAppender",
    "StoreStats",
    "choose_resolution",
]


class Resolution(enum.Enum):
    """Stored resolutions. Rollups keep min, max, sum, count and last per bucket."""

    RAW = "raw"
    M5 = "5m"
    H1 = "1h"

    @property
    def step_ms(self) -> int:
        return {"raw": 0, "5m": 300_000, "1h": 3_600_000}[self.value]


def choose_resolution(step_ms: int) -> Resolution:
    """Pick the coarsest resolution whose bucket is no wider than the query step."""
    if step_ms >= Resolution.H1.step_ms:
        return Resolution.H1
    if step_ms >= Resolution.M5.step_ms:
        return Resolution.M5
    return Resolution.RAW


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What happened to a batch. ``rejected`` counts samples by reason (e.g. ``too_old``)."""

    accepted: int
    rejected: dict[str, int] = field(default_factory=dict)
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class SeriesData:
    """Raw samples of one series, sorted by time, without duplicates."""

    labels: Labels
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class PackedSeries:
    """Raw samples of many series in flat arrays.

    Series ``i`` (labels ``labels[i]``) owns ``ts_ms[offsets[i]:offsets[i + 1]]`` (sorted,
    int64 ms, no duplicates) and the same slice of ``values``; ``offsets`` is int64 with
    ``len(labels) + 1`` entries, starting at 0. Series are in ascending series-id order,
    and every listed series has at least one sample.
    """

    labels: list[Labels]
    offsets: NDArray[np.int64]
    ts_ms: NDArray[np.int64]
    values: NDArray[np.float64]

    @staticmethod
    def empty() -> PackedSeries:
        return PackedSeries(
            [], np.zeros(1, np.int64), np.empty(0, np.int64), np.empty(0, np.float64)
        )

    def series(self) -> list[SeriesData]:
        """One :class:`SeriesData` per series whose arrays are views (no copies)."""
        bounds = self.offsets.tolist()
        ts, values = self.ts_ms, self.values
        return [
            SeriesData(lbl, ts[a:b], values[a:b])
            for lbl, a, b in zip(self.labels, bounds[:-1], bounds[1:], strict=True)
        ]


@dataclass(frozen=True, slots=True)
class RollupSeries:
    """Bucketed aggregates of one series; ``ts_ms`` is the bucket start."""

    labels: Labels
    ts_ms: NDArray[np.int64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    sum: NDArray[np.float64]
    count: NDArray[np.int64]
    last: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ResolutionStats:
    samples: int
    bytes: int
    files: int
    oldest_ms: int | None
    newest_ms: int | None


@dataclass(frozen=True, slots=True)
class StoreStats:
    series: int
    head_samples: int
    resolutions: dict[str, ResolutionStats]
    wal_bytes: int
    last_compaction_ms: int | None
    last_compaction_duration_s: float | None
    #: Read cache of the embedded store: lookups served from memory, lookups that read
    #: files, and bytes held now (0 for stores without one).
    read_cache_hits: int = 0
    read_cache_misses: int = 0
    read_cache_bytes: int = 0


class MetricAppender(Protocol):
    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        """Make ``batch`` durable and queue it for the store.

        Raises ``CardinalityLimitError`` when new series would pass a limit (the whole
        batch is refused), ``OverloadedError`` when the write queue is full, and
        ``BadDataError`` for invalid input. Samples outside the accepted time window are
        counted in ``AppendResult.rejected``; the rest of the batch is kept.
        """
        ...


@runtime_checkable
class SeriesIdAppender(Protocol):
    """Optional extension of :class:`MetricAppender` for senders that define their series
    once and then send samples by series (the gRPC agent protocol): label sets are
    resolved to store series ids once, later batches carry only ids. Callers check
    ``isinstance(appender, SeriesIdAppender)`` and fall back to ``append``.

    Loop affinity: both methods run on the store's event loop.
    """

    def resolve_series(self, series: Sequence[Labels], *, source: str = "") -> NDArray[np.uint64]:
        """Store series id of each label set (same order), creating unknown ones.

        Same rules as ``append``: ``CardinalityLimitError`` when the new series would pass
        a limit (none is created), ``BadDataError`` for an invalid label set. An id stays
        valid for the life of the open store; a series created here becomes durable with
        the next acknowledged batch.
        """
        ...

    async def append_ids(
        self,
        series_ids: NDArray[np.uint64],
        ts_ms: NDArray[np.int64],
        values: NDArray[np.float64],
        *,
        source: str = "",
        dedup: DedupKey | None = None,
    ) -> AppendResult:
        """``append`` for samples whose series ids came from :meth:`resolve_series`:
        sample ``i`` is ``(series_ids[i], ts_ms[i], values[i])`` (equal lengths, int ms).
        Same acknowledgement, dedup, time-window and overload contract as ``append``;
        ``BadDataError`` for unequal lengths or an id the store never issued. The caller
        must not mutate the arrays afterwards."""
        ...


@runtime_checkable
class MetricQuerier(Protocol):
    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        """Raw samples with ``start_ms <= ts <= end_ms`` of every matching series.

        Where raw data has aged out, the ``last`` value of the finest remaining rollup
        stands in, so long ranges still answer. The arrays may be shared with a cache
        and read-only: copy before writing into them.
        """
        ...

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        """Bucketed aggregates; ``Resolution.RAW`` is not allowed here."""
        ...

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        """Label sets of matching series that have samples in the range."""
        ...

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        """Sorted label names; with no matchers, over every series."""
        ...

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        """Sorted values of ``name``; with no matchers, over every series."""
        ...

    def stats(self) -> StoreStats: ...


@runtime_checkable
class PackedQuerier(Protocol):
    """Optional extension of :class:`MetricQuerier`: :meth:`select` without per-series
    arrays (callers check ``isinstance(querier, PackedQuerier)`` and fall back)."""

    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        """Same samples and series as ``select`` (same order), packed flat; the arrays
        may be read-only, as there."""
        ...
