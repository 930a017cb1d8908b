"""An in-memory ``MetricQuerier`` for engine and API tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monitoringserver.metrics.api import (
    PackedSeries,
    Resolution,
    RollupSeries,
    SeriesData,
    StoreStats,
)
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher, matches_all


class MemoryQuerier:
    """Holds series as sorted numpy arrays; ``select_packed`` returns creation order.

    ``flagged`` maps series to a reason they cannot be fully represented here (native
    histogram samples, start timestamps: such data is not stored). ``touched`` collects the
    reasons of flagged series a ``select`` returned, so the conformance runner can skip
    cases that depend on them.
    """

    def __init__(self) -> None:
        self._data: dict[Labels, tuple[list[int], list[float]]] = {}
        self._frozen: dict[Labels, SeriesData] = {}
        self.flagged: dict[Labels, str] = {}
        self.touched: set[str] = set()

    def add(self, labels: Labels, ts_ms: int, value: float) -> None:
        ts, vals = self._data.setdefault(labels, ([], []))
        ts.append(ts_ms)
        vals.append(value)
        self._frozen.pop(labels, None)

    def flag(self, labels: Labels, reason: str) -> None:
        self.flagged[labels] = reason

    def clear(self) -> None:
        self._data.clear()
        self._frozen.clear()
        self.flagged.clear()

    def _series(self, labels: Labels) -> SeriesData:
        cached = self._frozen.get(labels)
        if cached is None:
            ts, vals = self._data.get(labels, ([], []))
            t = np.asarray(ts, dtype=np.int64)
            v = np.asarray(vals, dtype=np.float64)
            order = np.argsort(t, kind="stable")
            t, v = t[order], v[order]
            if len(t) > 1:
                last = np.append(t[1:] != t[:-1], True)
                t, v = t[last], v[last]
            cached = SeriesData(labels, t, v)
            self._frozen[labels] = cached
        return cached

    def _matching(self, matchers: Sequence[Matcher]) -> list[Labels]:
        keys = set(self._data) | set(self.flagged)
        return sorted(k for k in keys if matches_all(list(matchers), k))

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        out = []
        for labels in self._matching(matchers):
            if labels in self.flagged:
                self.touched.add(self.flagged[labels])
            s = self._series(labels)
            lo = int(np.searchsorted(s.ts_ms, start_ms, side="left"))
            hi = int(np.searchsorted(s.ts_ms, end_ms, side="right"))
            if hi > lo:
                out.append(SeriesData(labels, s.ts_ms[lo:hi], s.values[lo:hi]))
        return out

    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        """The same series as :meth:`select`, packed, in creation order like a store's
        series ids (not label order: the engine must sort them itself)."""
        wanted = set(self._matching(matchers))
        created = [*self._data, *(k for k in self.flagged if k not in self._data)]
        got = self.select(matchers, start_ms, end_ms)
        by_labels = {s.labels: s for s in got}
        ordered = [by_labels[k] for k in created if k in wanted and k in by_labels]
        offsets = np.zeros(len(ordered) + 1, dtype=np.int64)
        np.cumsum([len(s.ts_ms) for s in ordered], out=offsets[1:])
        if not ordered:
            return PackedSeries.empty()
        return PackedSeries(
            [s.labels for s in ordered],
            offsets,
            np.concatenate([s.ts_ms for s in ordered]),
            np.concatenate([s.values for s in ordered]),
        )

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        raise NotImplementedError

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, start_ms, end_ms)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        if matchers:
            sets = self.series(matchers, start_ms, end_ms)
        else:
            sets = (
                [s.labels for s in self.select([], start_ms, end_ms)]
                if False
                else [k for k in self._data]
            )
        return sorted({name for lbl in sets for name, _ in lbl})

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        sets = self.series(matchers, start_ms, end_ms) if matchers else list(self._data)
        return sorted({v for lbl in sets for k, v in lbl if k == name})

    def stats(self) -> StoreStats:
        return StoreStats(
            series=len(self._data),
            head_samples=sum(len(t) for t, _ in self._data.values()),
            resolutions={},
            wal_bytes=0,
            last_compaction_ms=None,
            last_compaction_duration_s=None,
        )
