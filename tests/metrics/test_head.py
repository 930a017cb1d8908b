"""The in-memory head: incremental merge per commit, rebuild per flush, WAL replay."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from numpy.typing import NDArray

from monitoringserver.metrics.head import MemHead, _pick
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


@pytest.mark.parametrize("cache_bytes", [128 << 20, 0])  # part cache on, off
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
        assert store.stats().head_samples == 43  # rewrites of a key count until a flush
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

        reads = [0]

        def reader() -> None:
            # Paced: a reader that never waits holds the GIL between numpy calls and
            # starves the writer's threads (each of their GIL hand-backs waits out the
            # switch interval), which made this test take minutes on a busy machine.
            while not done.wait(0.0005):
                before = committed[0]
                got = h.handle.store.select_packed([Matcher.eq("__name__", "s")], *ALL)
                for s in got.series():
                    if len(s.ts_ms) < before:
                        problems.append(f"missing: {len(s.ts_ms)} < {before}")
                    if np.any(np.diff(s.ts_ms) <= 0):
                        problems.append("duplicate or unsorted timestamps")
                    if not np.array_equal(s.values, (s.ts_ms - T0_MS) / STEP):
                        problems.append("wrong values")
                reads[0] += 1

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
                # Every step overlaps at least one read (a condition, not a duration).
                seen, deadline = reads[0], time.monotonic() + 30
                while reads[0] == seen:
                    assert time.monotonic() < deadline, "the readers stopped reading"
                    await asyncio.sleep(0.001)
        finally:
            done.set()
            for t in threads:
                t.join()
        assert problems == []
        final = h.handle.store.select_packed([Matcher.eq("__name__", "s")], *ALL)
        assert len(final.ts_ms) == len(labels) * committed[0]


def _cols(
    sids: list[int], ts: list[int], values: list[float]
) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]:
    return np.array(sids, np.uint64), np.array(ts, np.int64), np.array(values, np.float64)


def test_mem_head_batches_views_and_drops() -> None:
    head = MemHead()
    assert head.flush_view() is None
    assert (len(head), head.last_batch, head.flushed_lsn) == (0, 0, 0)
    head.add(1, 100, *_cols([3, 1, 3], [20, 10, 10], [3.2, 1.0, 3.1]))
    head.add(2, 150, *_cols([], [], []))  # an empty batch still moves the WAL position
    with pytest.raises(ValueError, match="cannot add head batch 2: batch 2 is already in"):
        head.add(2, 160, *_cols([1], [5], [0.0]))
    ids = np.array([1, 3], np.uint64)
    assert head.rows(ids, 0, 100).values.tolist() == [1.0, 3.1, 3.2]
    head.add(3, 200, *_cols([3, 1], [20, 30], [9.0, 1.5]))  # rewrites (3, 20)
    assert len(head) == 5
    got = head.rows(ids, 0, 100)
    assert (got.sids.tolist(), got.lengths.tolist()) == ([1, 3], [2, 2])
    assert got.values.tolist() == [1.0, 1.5, 3.1, 9.0]
    assert head.rows(ids, 15, 25).values.tolist() == [9.0]
    assert head.partitions(20) == {0, 20}
    view = head.flush_view()
    assert view is not None
    assert (view.through, view.lsn, len(view.rows(0, 9, 0, 100))) == (3, 200, 4)
    head.add(4, 250, *_cols([2], [40], [2.0]))
    head.drop_through(view.through)
    assert (len(head), head.last_batch, head.flushed_lsn) == (1, 4, 200)
    assert head.rows(np.array([1, 2, 3], np.uint64), 0, 100).values.tolist() == [2.0]
    assert head.partitions(20) == {40}
    head.drop_through(view.through)  # nothing left to drop
    assert head.flushed_lsn == 200


_BATCHES = [  # (sids, ts, values) per batch, oldest first
    _cols([3, 1, 3, 1], [20, 10, 10, 10], [3.2, 1.0, 3.1, 1.1]),  # unsorted, (1, 10) twice
    _cols([1, 2, 3], [30, 40, 20], [1.5, 2.0, 9.0]),  # sorted; rewrites (3, 20)
    _cols([2, 5], [50, 45], [2.5, 5.0]),
]


@pytest.mark.parametrize("read_first", [0, 1, 3])  # batches a reader merged before the flush
@pytest.mark.parametrize(
    ("lo", "hi", "start", "end", "want"),
    [
        (0, 9, 0, 100, {1: [1.1, 1.5], 2: [2.0, 2.5], 3: [3.1, 9.0], 5: [5.0]}),
        (2, 3, 0, 100, {2: [2.0, 2.5], 3: [3.1, 9.0]}),
        (0, 9, 15, 45, {1: [1.5], 2: [2.0], 3: [9.0], 5: [5.0]}),
        (4, 4, 0, 100, {}),
        (0, 9, 60, 100, {}),
    ],
)
def test_flush_view_reads_series_ranges_of_sorted_pieces(
    read_first: int, lo: int, hi: int, start: int, end: int, want: dict[int, list[float]]
) -> None:
    head = MemHead()
    for i, cols in enumerate(_BATCHES[:read_first]):
        head.add(i + 1, 100 * (i + 1), *cols)
    head.rows(np.array([1, 2, 3, 5], np.uint64), 0, 100)  # merges what is held so far
    for i, cols in enumerate(_BATCHES[read_first:], start=read_first):
        head.add(i + 1, 100 * (i + 1), *cols)
    everything = np.array([1, 2, 3, 5], np.uint64)
    twin = MemHead()  # the same batches, never flushed
    for i, cols in enumerate(_BATCHES):
        twin.add(i + 1, 100 * (i + 1), *cols)
    before = twin.rows(everything, 0, 100)
    view = head.flush_view()
    assert view is not None
    assert (view.through, view.lsn) == (3, 300)
    # The batches are sorted runs now: reads and the row count are unchanged.
    assert len(head) == 9
    after = head.rows(everything, 0, 100)
    assert (after.sids.tolist(), after.values.tolist()) == (
        before.sids.tolist(),
        before.values.tolist(),
    )
    again = head.flush_view()
    assert again is not None
    assert again.rows(0, 9, 0, 100).values.tolist() == before.values.tolist()
    got = view.rows(lo, hi, start, end)
    per_series = np.split(got.values, np.cumsum(got.lengths)[:-1]) if len(got) else []
    assert {s: v.tolist() for s, v in zip(got.sids.tolist(), per_series, strict=True)} == want
    assert view.partitions(20) == [0, 20, 40]
    sids, counts = view.series_rows(0, 100)
    assert sids.tolist() == [1, 2, 3, 5]
    assert counts.sum() >= 7  # a key rewritten by a newer piece may count twice
    sids, counts = view.series_rows(15, 35)
    assert dict(zip(sids.tolist(), counts.tolist(), strict=True)) == {1: 1, 3: 1 + (read_first < 2)}
    head.drop_through(view.through)
    assert (len(head), head.flushed_lsn) == (0, 300)


async def test_restart_rebuilds_the_head_from_the_wal_until_a_flush(data_dir: Path) -> None:
    now = T0_MS + DAY_MS // 2
    async with open_store(data_dir, now_ms=now, wal_segment_bytes=4096) as h:
        for k in range(6):
            await h.handle.appender.append(
                grid(HOSTS, T0_MS + k * 10 * STEP, 10, STEP, np.full((4, 10), k))
            )
            await h.handle.writer.commit_pending()
        assert h.handle.store.stats().head_samples == 240
    async with open_store(data_dir, now_ms=now, wal_segment_bytes=4096) as h:
        stats = h.handle.store.stats()
        assert (stats.head_samples, stats.resolutions["raw"].files) == (240, 0)
        wal_before = stats.wal_bytes
        assert await h.handle.flush_now() == 240
        stats = h.handle.store.stats()
        assert stats.head_samples == 0
        assert stats.wal_bytes < wal_before  # the flushed records' segments are gone
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS + 60 * STEP, 1, STEP, [9.0]))
        await h.handle.writer.commit_pending()
    async with open_store(data_dir, now_ms=now) as h:
        assert h.handle.store.stats().head_samples == 1  # only the record after the flush
        [got] = h.handle.store.select_packed([Matcher.eq("host", "h0")], *ALL).series()
        assert got.values.tolist() == [float(k) for k in range(6) for _ in range(10)] + [9.0]


async def test_a_full_head_is_flushed_before_the_interval(data_dir: Path) -> None:
    async with open_store(
        data_dir, now_ms=T0_MS + DAY_MS // 2, batch_rows=10, head_max_rows=30
    ) as h:
        runner = asyncio.create_task(h.handle.run())
        try:
            await h.handle.appender.append(grid(HOSTS, T0_MS, 10, STEP, np.ones((4, 10))))
            await h.handle.writer.commit_pending()
            deadline = time.monotonic() + 30
            while h.handle.store.stats().resolutions["raw"].files == 0:
                assert time.monotonic() < deadline, "the full head was not flushed"
                await asyncio.sleep(0.01)
        finally:
            await h.handle.aclose()
            await asyncio.wait_for(runner, 10)


async def test_an_older_store_keeps_its_head_table_rows(data_dir: Path) -> None:
    now = T0_MS + DAY_MS // 2
    async with open_store(data_dir, now_ms=now) as h:
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 3, STEP, [1.0, 1.0, 1.0]))
        await h.handle.writer.commit_pending()
        await h.handle.flush_now()
        sid = int(h.handle.store._index.select([Matcher.eq("host", "h0")])[0])
    # What an older release left behind: committed rows in metric_head, no head_lsn.
    db = duckdb.connect(str(data_dir / "monitoring.duckdb"))
    try:
        rows = [(sid, T0_MS + 3 * STEP, 2.0, 7), (sid, T0_MS + 4 * STEP, 5.0, 7)]
        rows.append((sid, T0_MS + 4 * STEP, 3.0, 8))  # a later batch rewrote it
        for s, ts, v, b in rows:
            bits = int(np.array([v]).view(np.int64)[0])
            db.execute("INSERT INTO metric_head VALUES (?, ?, ?, ?)", [s, ts, bits, b])
        db.execute("DELETE FROM metric_state WHERE key = 'head_lsn'")
    finally:
        db.close()
    async with open_store(data_dir, now_ms=now) as h:
        [got] = h.handle.store.select_packed([Matcher.eq("host", "h0")], *ALL).series()
        assert got.values.tolist() == [1.0, 1.0, 1.0, 2.0, 3.0]
        assert await h.handle.flush_now() == 2
    async with open_store(data_dir, now_ms=now) as h:
        [got] = h.handle.store.select_packed([Matcher.eq("host", "h0")], *ALL).series()
        assert got.values.tolist() == [1.0, 1.0, 1.0, 2.0, 3.0]
        assert h.handle.store.stats().head_samples == 0


@pytest.mark.parametrize(
    ("hosts", "max_file_rows", "files"),
    [(4, 1000, 1), (60, 1000, 3), (60, 2000, 2), (60, 100_000, 1)],  # 40 rows per host
)
async def test_a_flush_gathers_its_chunk_files_up_to_max_file_rows(
    data_dir: Path, hosts: int, max_file_rows: int, files: int
) -> None:
    labels = [series("m", host=f"h{i:02}") for i in range(hosts)]
    values = np.arange(hosts * 40, dtype=np.float64).reshape(hosts, 40)
    async with open_store(
        data_dir,
        now_ms=T0_MS + DAY_MS // 2,
        merge_chunk_rows=1000,
        max_file_rows=max_file_rows,
    ) as h:
        await h.handle.appender.append(grid(labels, T0_MS, 40, STEP, values))
        await h.handle.writer.commit_pending()
        assert await h.handle.flush_now() == hosts * 40
        raw = h.handle.store.stats().resolutions["raw"]
        assert (raw.files, raw.samples) == (files, hosts * 40)
        got = h.handle.store.select_packed([Matcher.eq("__name__", "m")], *ALL)
        assert got.values.tolist() == values.reshape(-1).tolist()
        assert sorted(p.name for p in data_dir.rglob("*.parquet") if p.name.startswith(".")) == []


async def test_a_flush_across_partitions_keeps_the_newest_write_of_each_key(
    data_dir: Path,
) -> None:
    labels = [series("m", host=f"h{i:03}") for i in range(50)]
    step = 600_000  # 30 points over 5 h: rows in 5 or 6 partitions of 1 h
    values = np.arange(50 * 30, dtype=np.float64).reshape(50, 30)
    async with open_store(
        data_dir,
        now_ms=T0_MS + DAY_MS,
        raw_partition_s=3600,
        merge_chunk_rows=1000,
        max_file_rows=1000,
    ) as h:
        await h.handle.appender.append(grid(labels, T0_MS, 30, step, values))
        await h.handle.writer.commit_pending()
        await h.handle.appender.append(grid(labels[:5], T0_MS + 3 * step, 1, step, -np.ones(5)))
        await h.handle.writer.commit_pending()
        assert await h.handle.flush_now() == 1500
        got = h.handle.store.select_packed([Matcher.eq("__name__", "m")], *ALL)
        values[:5, 3] = -1.0
        assert got.values.tolist() == values.reshape(-1).tolist()
        assert h.handle.store.stats().resolutions["raw"].files >= 5
