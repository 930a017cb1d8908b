"""Inline evaluation: within its bounds it returns what an ordinary evaluation returns;
beyond them (or when the data is not at hand in memory) it raises ``NotInline``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.model.labels import make_labels
from monitoringserver.promql import Engine
from monitoringserver.promql.engine import InlineBounds, NotInline
from monitoringserver.promql.values import Result
from tests.pipeline.storehelp import T0_MS, grid, open_store, series
from tests.promql.memory_querier import MemoryQuerier

STEP = 15_000
N = 120
HOSTS = [
    series("node_cpu_seconds_total", instance=f"h{i}", mode=m)
    for i in range(4)
    for m in ("idle", "user")
]
END = T0_MS + (N - 1) * STEP
BOUNDS = InlineBounds(max_series=4, max_samples=1_000, max_steps=100, max_query_chars=200)


def _same(a: Result, b: Result) -> None:
    assert (a.result_type, a.scalar) == (b.result_type, b.scalar)
    assert [s.labels for s in a.series] == [s.labels for s in b.series]
    for x, y in zip(a.series, b.series, strict=True):
        assert x.ts_ms.tolist() == y.ts_ms.tolist()
        assert np.allclose(x.values, y.values, equal_nan=True)


WITHIN = [
    'node_cpu_seconds_total{instance="h1",mode="idle"}',
    'rate(node_cpu_seconds_total{instance="h1"}[5m])',
    'sum(node_cpu_seconds_total{instance="h2"}) + 1',
    "1 + 2",
    'node_cpu_seconds_total{instance="h3",mode!="idle"} * 2',
]
BEYOND = [
    "node_cpu_seconds_total",  # 8 series: more than 4
    'node_cpu_seconds_total{mode=~"id.*"}',  # no equality matcher with a value
    'max_over_time(node_cpu_seconds_total{instance="h1",mode="idle"}[10m:1m])',  # subquery
    'node_cpu_seconds_total{instance="h1",mode="idle"}[30m]',  # 121 samples x 1
    'node_cpu_seconds_total{instance="h1"} + node_cpu_seconds_total{instance="h2"}'
    ' + node_cpu_seconds_total{instance="h3"}',  # 6 series in all
]


async def test_inline_within_and_beyond_its_bounds(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + 3_600_000) as h:
        values = np.arange(len(HOSTS) * N, dtype=np.float64).reshape(len(HOSTS), N)
        await h.handle.appender.append(grid(HOSTS, T0_MS, N, STEP, values))
        await h.handle.flush_now()
        engine = Engine(h.handle.querier)
        small = InlineBounds(max_series=4, max_samples=100, max_steps=100, max_query_chars=200)
        for query in WITHIN:
            if "node" in query:  # a cold read cache first
                with pytest.raises(NotInline):
                    engine.range(query, END - 600_000, END, 60_000, inline=BOUNDS)
            want = engine.range(query, END - 600_000, END, 60_000)
            _same(engine.range(query, END - 600_000, END, 60_000, inline=BOUNDS), want)
            want = engine.instant(query, END)
            _same(engine.instant(query, END, inline=BOUNDS), want)
        for query in BEYOND:
            engine.instant(query, END)  # warm
            with pytest.raises(NotInline):
                engine.instant(query, END, inline=small)
        with pytest.raises(NotInline):  # too many steps
            engine.range(WITHIN[0], END - 6_000_000, END, 60_000, inline=BOUNDS)
        with pytest.raises(NotInline):  # too long a query
            engine.instant(WITHIN[0] + " " * 200, END, inline=BOUNDS)


def test_a_querier_without_cached_selects_is_never_inline() -> None:
    q = MemoryQuerier()
    q.add(make_labels({"__name__": "up", "job": "a"}), T0_MS, 1.0)
    engine = Engine(q)
    with pytest.raises(NotInline):
        engine.instant('up{job="a"}', T0_MS, inline=BOUNDS)
    assert engine.instant("1 + 1", T0_MS, inline=BOUNDS).scalar == 2.0
