"""The engine over the real embedded store (head and flushed parts), not the fake."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.model.samples import STALE_NAN, SampleBatch
from monitoringserver.promql import Engine
from tests.pipeline.storehelp import T0_MS, grid, open_store, series

STEP = 15_000
HOSTS = [series("node_cpu_seconds_total", instance=f"h{i}", mode="idle") for i in range(3)]


async def test_rate_and_staleness_over_the_store(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + 3_600_000) as h:
        app = h.handle.appender
        n = 120  # 30 minutes of 15 s samples
        rates = np.array([1.0, 2.0, 3.0])
        values = rates[:, None] * (np.arange(n) * STEP / 1000)[None, :]
        await app.append(grid(HOSTS, T0_MS, n, STEP, values))
        await h.handle.flush_now()
        gauge = series("up", instance="h0")
        await app.append(
            SampleBatch.from_rows([(gauge, T0_MS, 1.0), (gauge, T0_MS + 60_000, STALE_NAN)])
        )
        await h.handle.writer.commit_pending()

        engine = Engine(h.handle.querier)
        end = T0_MS + (n - 1) * STEP
        r = engine.instant("sum by (instance) (rate(node_cpu_seconds_total[5m]))", end)
        got = {dict(s.labels)["instance"]: round(float(s.values[0]), 9) for s in r.series}
        assert got == {"h0": 1.0, "h1": 2.0, "h2": 3.0}

        rng = engine.range("sum(rate(node_cpu_seconds_total[5m]))", end - 600_000, end, 60_000)
        assert np.allclose(rng.series[0].values, 6.0)
        assert len(rng.series[0].values) == 11

        assert len(engine.instant("up", T0_MS + 30_000).series) == 1
        assert engine.instant("up", T0_MS + 90_000).series == []
        count = engine.instant("count_over_time(up[5m])", T0_MS + 120_000)
        assert count.series[0].values[0] == pytest.approx(1.0)
