"""An in-memory metric store implementing ``MetricAppender`` and ``MetricQuerier``.

For router tests only: no WAL, no rollup files. Rollups are computed on the fly from the
raw samples so queries at 5 m / 1 h resolution answer consistently with raw data.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from monitoringserver.errors import CardinalityLimitError, OverloadedError
from monitoringserver.metrics.api import (
    AppendResult,
    DedupKey,
    Resolution,
    ResolutionStats,
    RollupSeries,
    SeriesData,
    StoreStats,
)
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher, matches_all
from monitoringserver.model.samples import SampleBatch


class FakeStore:
    """Thread-safe dict of series → {ts: value} (last write wins)."""

    def __init__(self, *, max_series: int = 0) -> None:
        self.max_series = max_series
        self.overloaded = False
        self.appends = 0
        self.sources: list[str] = []
        self._lock = threading.Lock()
        self._data: dict[Labels, dict[int, float]] = {}
        self._seen: set[DedupKey] = set()

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        if self.overloaded:
            raise OverloadedError("cannot append samples: write queue is full", retry_after_s=2)
        with self._lock:
            if dedup is not None:
                if dedup in self._seen:
                    return AppendResult(accepted=0, duplicate=True)
                self._seen.add(dedup)
            used = {batch.series[i] for i in set(batch.series_idx.tolist())}
            new = {lbl for lbl in used if lbl not in self._data}
            if self.max_series and len(self._data) + len(new) > self.max_series:
                raise CardinalityLimitError(
                    f"cannot append samples: {len(self._data) + len(new)} series is over "
                    f"the limit of {self.max_series}"
                )
            for labels, ts, value in batch.rows():
                self._data.setdefault(labels, {})[ts] = value
            self.appends += 1
            self.sources.append(source)
        return AppendResult(accepted=len(batch))

    def _matching(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[tuple[Labels, np.ndarray, np.ndarray]]:
        out = []
        with self._lock:
            items = [(lbl, dict(points)) for lbl, points in self._data.items()]
        for labels, points in sorted(items):
            if not matches_all(list(matchers), labels):
                continue
            ts = np.array(sorted(t for t in points if start_ms <= t <= end_ms), dtype=np.int64)
            if not len(ts):
                continue
            vals = np.array([points[t] for t in ts.tolist()], dtype=np.float64)
            out.append((labels, ts, vals))
        return out

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        return [SeriesData(lbl, ts, v) for lbl, ts, v in self._matching(matchers, start_ms, end_ms)]

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        assert resolution is not Resolution.RAW
        step = resolution.step_ms
        out = []
        for labels, ts, vals in self._matching(matchers, start_ms, end_ms):
            buckets = ts // step * step
            uniq, inv = np.unique(buckets, return_inverse=True)
            n = len(uniq)
            mins = np.full(n, np.inf)
            maxs = np.full(n, -np.inf)
            np.minimum.at(mins, inv, vals)
            np.maximum.at(maxs, inv, vals)
            last = np.zeros(n)
            last[inv] = vals  # later samples overwrite earlier ones
            out.append(
                RollupSeries(
                    labels=labels,
                    ts_ms=uniq.astype(np.int64),
                    min=mins,
                    max=maxs,
                    sum=np.bincount(inv, weights=vals, minlength=n).astype(np.float64),
                    count=np.bincount(inv, minlength=n).astype(np.int64),
                    last=last,
                )
            )
        return out

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [lbl for lbl, _, _ in self._matching(matchers, start_ms, end_ms)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return sorted({k for lbl in self.series(matchers, start_ms, end_ms) for k, _ in lbl})

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        values = {dict(lbl).get(name, "") for lbl in self.series(matchers, start_ms, end_ms)}
        return sorted(v for v in values if v)

    def stats(self) -> StoreStats:
        with self._lock:
            samples = sum(len(p) for p in self._data.values())
            all_ts = [t for p in self._data.values() for t in p]
            series = len(self._data)
        raw = ResolutionStats(
            samples=samples,
            bytes=0,
            files=0,
            oldest_ms=min(all_ts) if all_ts else None,
            newest_ms=max(all_ts) if all_ts else None,
        )
        return StoreStats(
            series=series,
            head_samples=samples,
            resolutions={"raw": raw},
            wal_bytes=0,
            last_compaction_ms=None,
            last_compaction_duration_s=None,
        )
