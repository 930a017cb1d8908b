"""The store's read path: decoded-part cache, head extent check, file layout."""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb
import numpy as np
import pytest

from monitoringserver.metrics.api import Resolution
from monitoringserver.metrics.manifest import Manifest
from monitoringserver.metrics.store import EmbeddedMetricStore
from monitoringserver.model.matchers import Matcher, MatchOp
from tests.pipeline.storehelp import DAY_MS, T0_MS, grid, open_store, series

HOSTS = [series("cpu", host=f"h{i}") for i in range(6)]
STEP = 10_000
ALL = (T0_MS - DAY_MS, T0_MS + DAY_MS)


def _dump(store: EmbeddedMetricStore, matchers: list[Matcher]) -> list[tuple[object, ...]]:
    p = store.select_packed(matchers, *ALL)
    return [(s.labels, s.ts_ms.tolist(), s.values.tolist()) for s in p.series()]


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
async def test_repeated_selects_hit_the_cache_and_equal_uncached(
    data_dir: Path, cache_bytes: int
) -> None:
    async with open_store(
        data_dir, now_ms=T0_MS + DAY_MS // 2, read_cache_bytes=cache_bytes, merge_fan_in=2
    ) as h:
        store = h.handle.store
        vals = np.arange(6 * 30, dtype=np.float64).reshape(6, 30) / 4
        for k in range(3):  # three parts, then data in the head
            chunk = vals[:, k * 10 : (k + 1) * 10]
            await h.handle.appender.append(grid(HOSTS, T0_MS + k * 10 * STEP, 10, STEP, chunk))
            if k < 2:
                await h.handle.flush_now()
        await h.handle.writer.commit_pending()
        odd = [Matcher.eq("__name__", "cpu"), Matcher("host", MatchOp.RE, "h[135]")]
        first = _dump(store, odd)
        assert [s[2] for s in first] == [vals[i].tolist() for i in (1, 3, 5)]
        before = store.cache_stats()
        assert _dump(store, odd) == first
        after = store.cache_stats()
        if cache_bytes:
            # Second select: the two-file merge is found; the head is read again.
            assert after.hits == before.hits + 1
            assert after.misses == before.misses
            assert 0 < after.bytes <= cache_bytes
            reg = h.registry
            assert reg.get_sample_value("monitoring_store_read_cache_hits_total") == after.hits
            misses = reg.get_sample_value("monitoring_store_read_cache_misses_total")
            assert misses == after.misses
            assert reg.get_sample_value("monitoring_store_read_cache_bytes") == after.bytes
        else:
            assert after.entries == 0
            assert after.hits == 0
        # Head rows committed after a select are seen by the next one.
        await h.handle.appender.append(grid(HOSTS[1:2], T0_MS + 30 * STEP, 1, STEP, [-1.0]))
        await h.handle.writer.commit_pending()
        assert _dump(store, odd)[0][2] == [*vals[1].tolist(), -1.0]
        # A merge replaces the parts; their entries go, results stay the same.
        await h.handle.flush_now()
        await h.handle.maintain_now()
        assert len([f for f in store._manifest.files() if f.resolution == "raw"]) == 1
        assert _dump(store, odd)[0][2] == [*vals[1].tolist(), -1.0]
        live = {f.id for f in store._manifest.files()}
        assert all(set(k[0]) <= live for k in store._files.cache._entries)


async def test_head_only_and_empty_ranges(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        store = h.handle.store
        await h.handle.appender.append(grid(HOSTS[:2], T0_MS, 5, STEP, np.ones((2, 5))))
        await h.handle.writer.commit_pending()
        assert len(store.select_packed([Matcher.eq("host", "h1")], *ALL).labels) == 1
        # Outside the head's time extent: nothing, without reading the head.
        assert (
            store.select_packed(
                [Matcher.eq("host", "h1")], T0_MS + DAY_MS, T0_MS + DAY_MS + 1
            ).labels
            == []
        )
        await h.handle.flush_now()
        assert store.select_packed([Matcher.eq("host", "h0")], *ALL).values.tolist() == [1.0] * 5


async def test_files_have_no_bloom_filters(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await h.handle.appender.append(grid(HOSTS, T0_MS, 5, STEP, np.ones((6, 5))))
        await h.handle.flush_now()
        [f] = h.handle.store._manifest.files()
        path = str(h.handle.store.root / f.path)
    with duckdb.connect() as con:
        rows = con.execute(
            "SELECT count(*) FROM parquet_metadata(?) WHERE bloom_filter_offset IS NOT NULL",
            [path],
        ).fetchall()
    assert rows == [(0,)]


async def test_rollup_selects_see_head_commits_between_them(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        store = h.handle.store
        h0 = [Matcher.eq("host", "h0")]
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 30, STEP, np.ones(30)))
        await h.handle.flush_now()
        [before] = store.select_rollup(h0, *ALL, Resolution.M5)
        assert before.count.tolist() == [30]
        assert store.select_rollup(h0, *ALL, Resolution.M5)[0].count.tolist() == [30]
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS + 30 * STEP, 5, STEP, np.ones(5)))
        await h.handle.writer.commit_pending()
        [after] = store.select_rollup(h0, *ALL, Resolution.M5)
        assert after.count.tolist() == [30, 5]


def test_publication_moves_head_epoch_and_waiters_resume(tmp_path: Path) -> None:
    m = Manifest(tmp_path)
    m.wait_settled(0)  # nothing in progress: returns at once
    with m.publishing():
        assert (m.generation, m.head_epoch) == (1, 0)
    entered, release = threading.Event(), threading.Event()

    def publish() -> None:
        with m.publishing(head=True):
            entered.set()
            release.wait()

    publisher = threading.Thread(target=publish)
    publisher.start()
    entered.wait()
    assert (m.generation, m.head_epoch) == (3, 1)
    waiter = threading.Thread(target=m.wait_settled, args=(60.0,))
    waiter.start()
    release.set()
    waiter.join()
    publisher.join()
    assert (m.generation, m.head_epoch) == (4, 2)
