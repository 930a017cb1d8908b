"""The head mirror: incremental refresh per commit, rebuild per publication, bound."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from monitoringserver.metrics.headmirror import _pick
from monitoringserver.metrics.runs import Run
from monitoringserver.model.matchers import Matcher
from tests.pipeline.storehelp import DAY_MS, T0_MS, grid, open_store, series

HOSTS = [series("m", host=f"h{i}") for i in range(4)]
STEP = 10_000
ALL = (T0_MS - DAY_MS, T0_MS + DAY_MS)


@pytest.mark.parametrize(
    ("ids", "want"),
    [([2], [2]), ([1, 2, 9], [2]), ([0, 5, 7], [5, 7]), ([9], []), ([2, 5, 7], [2, 5, 7])],
)
def test_pick_takes_whole_series(ids: list[int], want: list[int]) -> None:
    run = Run(
        np.array([2, 5, 7], np.uint64),
        np.array([2, 1, 3], np.int64),
        np.array([1, 2, 1, 1, 2, 3], np.int64),
        np.array([20.0, 21.0, 50.0, 70.0, 71.0, 72.0]),
    )
    got = _pick(run, np.array(ids, np.uint64))
    assert got.sids.tolist() == want
    expected = {2: [20.0, 21.0], 5: [50.0], 7: [70.0, 71.0, 72.0]}
    assert got.values.tolist() == [v for s in want for v in expected[s]]
    assert _pick(Run.empty(), np.array(ids, np.uint64)).sids.tolist() == []


@pytest.mark.parametrize("cache_bytes", [128 << 20, 32 * 25, 0])  # mirror, over bound, off
async def test_selects_follow_commits_overrides_and_flushes(
    data_dir: Path, cache_bytes: int
) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2, read_cache_bytes=cache_bytes) as h:
        store = h.handle.store

        def values(host: str) -> list[float]:
            got = store.select_packed([Matcher.eq("host", host)], *ALL)
            return [float(v) for v in got.values]

        app = h.handle.appender
        await app.append(grid(HOSTS, T0_MS, 10, STEP, np.ones((4, 10))))
        await h.handle.writer.commit_pending()
        assert values("h1") == [1.0] * 10
        # A later batch: new samples and an override of an existing key.
        await app.append(grid(HOSTS[1:2], T0_MS + 10 * STEP, 2, STEP, [2.0, 3.0]))
        await app.append(grid(HOSTS[1:2], T0_MS + 4 * STEP, 1, STEP, [-4.0]))
        await h.handle.writer.commit_pending()
        assert values("h1") == [1.0] * 4 + [-4.0] + [1.0] * 5 + [2.0, 3.0]
        assert values("h0") == [1.0] * 10
        mirrored = store._mirror._state
        assert mirrored is not None
        assert (mirrored.run is not None) == (cache_bytes == 128 << 20)  # 43 rows vs 25, 0
        # Flushed rows leave the head and come back from the file, exactly once.
        await h.handle.flush_now()
        await app.append(grid(HOSTS[1:2], T0_MS + 12 * STEP, 1, STEP, [5.0]))
        await h.handle.writer.commit_pending()
        assert values("h1") == [1.0] * 4 + [-4.0] + [1.0] * 5 + [2.0, 3.0, 5.0]
        # A range inside the head only, and ids the head does not have.
        part = store.select_packed([Matcher.eq("host", "h1")], T0_MS + 12 * STEP, ALL[1])
        assert part.values.tolist() == [5.0]
        assert store.select_packed([Matcher.eq("host", "zz")], *ALL).labels == []


async def test_concurrent_selects_see_every_committed_sample_once(data_dir: Path) -> None:
    labels = [series("s", i=str(i)) for i in range(20)]
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2, merge_fan_in=2) as h:
        committed = [0]
        done = threading.Event()
        problems: list[str] = []

        def reader() -> None:
            while not done.is_set():
                before = committed[0]
                got = h.handle.store.select_packed([Matcher.eq("__name__", "s")], *ALL)
                for s in got.series():
                    if len(s.ts_ms) < before:
                        problems.append(f"missing: {len(s.ts_ms)} < {before}")
                    if np.any(np.diff(s.ts_ms) <= 0):
                        problems.append("duplicate or unsorted timestamps")
                    if not np.array_equal(s.values, (s.ts_ms - T0_MS) / STEP):
                        problems.append("wrong values")

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for step in range(40):
                k = committed[0]
                vals = np.tile(np.arange(k, k + 3, dtype=np.float64), (len(labels), 1))
                await h.handle.appender.append(grid(labels, T0_MS + k * STEP, 3, STEP, vals))
                await h.handle.writer.commit_pending()
                committed[0] = k + 3
                if step % 8 == 7:
                    await h.handle.flush_now()
                if step % 16 == 15:
                    await h.handle.maintain_now()
        finally:
            done.set()
            for t in threads:
                t.join()
        assert problems == []
        final = h.handle.store.select_packed([Matcher.eq("__name__", "s")], *ALL)
        assert len(final.ts_ms) == len(labels) * committed[0]
