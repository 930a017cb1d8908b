"""``select_packed_cached``: the answer of ``select_packed`` when it is at hand in memory
at a bounded cost, else ``None`` (never a file read, never a wait)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.metrics.api import PackedSeries
from monitoringserver.model.matchers import Matcher, MatchOp
from tests.pipeline.storehelp import DAY_MS, T0_MS, Harness, grid, open_store, series

STEP = 10_000
CPU = [series("cpu", host=f"h{i}", mode=m) for i in range(6) for m in ("idle", "user")]
START, END = T0_MS - 5 * STEP, T0_MS + 100 * STEP


def _same(a: PackedSeries | None, b: PackedSeries) -> None:
    assert a is not None
    assert a.labels == b.labels
    assert a.offsets.tolist() == b.offsets.tolist()
    assert a.ts_ms.tolist() == b.ts_ms.tolist()
    assert a.values.tolist() == b.values.tolist()


async def _flushed(h: Harness) -> None:
    vals = np.arange(len(CPU) * 50, dtype=np.float64)
    await h.handle.appender.append(grid(CPU, T0_MS, 50, STEP, vals))
    await h.handle.flush_now()


M = Matcher
CASES = [
    [M.eq("host", "h1"), M.eq("mode", "idle")],
    [M.eq("__name__", "cpu"), M("host", MatchOp.RE, "h[12]")],
    [M.eq("host", "h3"), M("mode", MatchOp.NEQ, "idle")],
    [M.eq("host", "nope")],
]


@pytest.mark.parametrize("matchers", CASES, ids=lambda ms: ",".join(map(str, ms)))
async def test_warm_selections_equal_select_packed(data_dir: Path, matchers: list[Matcher]) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await _flushed(h)
        store = h.handle.store
        want = store.select_packed(matchers, START, END)  # fills the read cache
        got = store.select_packed_cached(matchers, START, END, max_series=64, max_rows=10_000)
        _same(got, want)


async def test_what_is_not_at_hand_cheaply_is_none(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await _flushed(h)
        store = h.handle.store
        one = [M.eq("host", "h1"), M.eq("mode", "idle")]
        # A cold read cache: the rows are only in a file.
        assert store.select_packed_cached(one, START, END, max_series=64, max_rows=10_000) is None
        store.select_packed(one, START, END)
        assert store.select_packed_cached(one, START, END, max_series=64, max_rows=10_000)
        # More rows than allowed, more series than allowed, no equality matcher.
        assert store.select_packed_cached(one, START, END, max_series=64, max_rows=10) is None
        cpu = [M.eq("__name__", "cpu")]
        store.select_packed(cpu, START, END)
        assert store.select_packed_cached(cpu, START, END, max_series=4, max_rows=10_000) is None
        regex = [M("host", MatchOp.RE, "h1")]
        assert store.select_packed_cached(regex, START, END, max_series=64, max_rows=10_000) is None
        # A head with more rows than allowed is not read (a merge may be due).
        await h.handle.appender.append(grid(CPU, T0_MS + 60 * STEP, 10, STEP, np.ones(120)))
        await h.handle.writer.commit_pending()
        assert store.select_packed_cached(one, START, END, max_series=64, max_rows=100) is None
        store.select_packed(one, START, END)  # merges the head
        small = store.select_packed_cached(one, START, END, max_series=64, max_rows=100)
        _same(small, store.select_packed(one, START, END))
        got = store.select_packed_cached(one, START, END, max_series=64, max_rows=10_000)
        _same(got, store.select_packed(one, START, END))
        assert got is not None
        assert len(got.ts_ms) == 60  # 50 from the part, 10 from the head


async def test_rollup_stand_ins_come_from_the_cache_only(data_dir: Path) -> None:
    """Raw rows aged out: rollups' last values stand in, from memory once read."""
    async with open_store(
        data_dir,
        now_ms=T0_MS + DAY_MS // 2,
        raw_retention_s=86400.0,
        m5_retention_s=3 * 86400.0,
        m5_partition_s=86400.0,
    ) as h:
        await h.handle.appender.append(grid(CPU[:2], T0_MS, 720, STEP, np.ones(1440)))
        h.clock.now_ms = T0_MS + 2 * DAY_MS + 1
        await h.handle.compact_now()
        store = h.handle.store
        one = [M.eq("host", "h0"), M.eq("mode", "user")]
        end = T0_MS + DAY_MS
        assert store.select_packed_cached(one, T0_MS, end, max_series=64, max_rows=1000) is None
        want = store.select_packed(one, T0_MS, end)
        assert len(want.ts_ms) == 24  # one per 5-minute bucket
        _same(store.select_packed_cached(one, T0_MS, end, max_series=64, max_rows=1000), want)
        assert store.select_packed_cached(one, T0_MS, end, max_series=64, max_rows=10) is None


async def test_two_parts_and_a_publication_running(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await _flushed(h)
        await h.handle.appender.append(grid(CPU, T0_MS + 50 * STEP, 5, STEP, np.ones(60)))
        await h.handle.flush_now()
        store = h.handle.store
        one = [M.eq("host", "h4"), M.eq("mode", "idle")]
        want = store.select_packed(one, START, END)
        assert len(want.ts_ms) == 55
        _same(store.select_packed_cached(one, START, END, max_series=64, max_rows=10_000), want)
        assert store.select_packed_cached(one, START, END, max_series=64, max_rows=20) is None
        with store._manifest.publishing():  # a flush or merge between its two commits
            assert (
                store.select_packed_cached(one, START, END, max_series=64, max_rows=10_000) is None
            )
