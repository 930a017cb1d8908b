"""Test helpers: a controllable clock and a small embedded store around it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.metric_store import MetricStoreHandle, open_metric_store
from monitoringserver.storage.options import StorageOptions

#: 2023-11-14 00:00:00 UTC, a partition boundary for 1-day partitions.
T0_MS = 1_699_920_000_000
DAY_MS = 86_400_000


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> float:
        return self.now_ms / 1000


@dataclass
class Harness:
    handle: MetricStoreHandle
    clock: Clock
    registry: CollectorRegistry


def series(name: str, **labels: str) -> Labels:
    return make_labels({"__name__": name, **labels})


def batch(rows: Iterable[tuple[Labels, int, float]]) -> SampleBatch:
    return SampleBatch.from_rows(rows)


def grid(labels: list[Labels], start_ms: int, count: int, step_ms: int, values: Any) -> SampleBatch:
    """Every series gets ``count`` samples; ``values[i, j]`` is series i, sample j."""
    vals = np.asarray(values, dtype=np.float64).reshape(len(labels), count)
    return SampleBatch(
        series=labels,
        series_idx=np.repeat(np.arange(len(labels), dtype=np.uint32), count),
        ts_ms=np.tile(start_ms + np.arange(count, dtype=np.int64) * step_ms, len(labels)),
        values=vals.ravel(),
    )


@contextlib.asynccontextmanager
async def open_store(
    data_dir: Path, now_ms: int = T0_MS, clock: Clock | None = None, **opts: Any
) -> AsyncIterator[Harness]:
    clock = clock or Clock(now_ms)
    registry = CollectorRegistry()
    handle = await open_metric_store(
        data_dir, StorageOptions(**opts), registry=registry, clock=clock
    )
    try:
        yield Harness(handle, clock, registry)
    finally:
        await handle.aclose()
