from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from monitoringserver.errors import CardinalityLimitError, OverloadedError, UnavailableError
from monitoringserver.metrics.api import DedupKey, MetricAppender
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import STALE_NAN
from tests.pipeline.storehelp import T0_MS, batch, open_store, series

CPU = series("cpu", host="a")


async def test_append_acknowledges_and_commits(data_dir: Path) -> None:
    async with open_store(data_dir) as h:
        appender: MetricAppender = h.handle.appender
        res = await appender.append(batch([(CPU, T0_MS - 1000, 1.0), (CPU, T0_MS, 2.0)]))
        assert (res.accepted, res.rejected, res.duplicate) == (2, {}, False)
        assert h.handle.writer.queued_rows == 2
        assert await h.handle.writer.commit_pending() == 2
        assert await h.handle.writer.commit_pending() == 0
        [got] = h.handle.querier.select([Matcher.eq("host", "a")], 0, T0_MS)
        assert got.values.tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    ("offset_ms", "reason"),
    [(11 * 60_000, "too_far_in_future"), (-16 * 86_400_000, "too_old")],
)
async def test_time_window_rejects_by_reason(data_dir: Path, offset_ms: int, reason: str) -> None:
    async with open_store(data_dir) as h:
        res = await h.handle.appender.append(
            batch(
                [
                    (CPU, T0_MS, 1.0),
                    (CPU, T0_MS + offset_ms, 2.0),
                    (series("x"), T0_MS + offset_ms, 3.0),
                ]
            )
        )
        assert res.accepted == 1
        assert res.rejected == {reason: 2}
        assert len(h.handle.querier.series([], 0, 2**62)) == 1  # no series for rejected samples
        text = h.registry.get_sample_value(
            "monitoring_store_samples_rejected_total", {"reason": reason}
        )
        assert text == 2.0


async def test_special_floats_are_kept_bit_exact(data_dir: Path) -> None:
    values = [float("nan"), float("inf"), float("-inf"), STALE_NAN, -0.0, 1e-300]
    rows = [(CPU, T0_MS - 10_000 * i, v) for i, v in enumerate(values)]
    async with open_store(data_dir) as h:
        await h.handle.appender.append(batch(rows))
        await h.handle.writer.commit_pending()
        for stage in ("head", "part"):
            if stage == "part":
                await h.handle.flush_now()
            [got] = h.handle.querier.select([], 0, T0_MS)
            expected = np.array(values[::-1], dtype=np.float64)
            assert np.array_equal(got.values.view(np.uint64), expected.view(np.uint64)), stage


async def test_dedup_survives_restart(data_dir: Path) -> None:
    async with open_store(data_dir) as h:
        app = h.handle.appender
        assert not (await app.append(batch([(CPU, T0_MS, 1.0)]), dedup=DedupKey("ag", 5))).duplicate
        again = await app.append(batch([(CPU, T0_MS, 9.0)]), dedup=DedupKey("ag", 5))
        assert again.duplicate
        assert again.accepted == 0
        assert (await app.append(batch([(CPU, T0_MS, 9.0)]), dedup=DedupKey("ag", 4))).duplicate
        assert not (
            await app.append(batch([(CPU, T0_MS, 1.0)]), dedup=DedupKey("other", 1))
        ).duplicate
        await h.handle.writer.commit_pending()
        await app.append(batch([(CPU, T0_MS - 1, 1.0)]), dedup=DedupKey("ag", 6))  # WAL only
        h.handle.writer._queue.clear()  # simulate a crash: nothing more reaches DuckDB
        h.handle.writer._queued_rows = 0
    async with open_store(data_dir) as h:
        app = h.handle.appender
        for seq in (5, 6):
            assert (
                await app.append(batch([(CPU, T0_MS, 7.0)]), dedup=DedupKey("ag", seq))
            ).duplicate
        assert not (await app.append(batch([(CPU, T0_MS, 3.0)]), dedup=DedupKey("ag", 7))).duplicate
        await h.handle.writer.commit_pending()
        [got] = h.handle.querier.select([], 0, T0_MS)
        assert got.values.tolist() == [1.0, 3.0]


async def test_overload_refuses_with_retry_after(data_dir: Path) -> None:
    async with open_store(data_dir, batch_rows=2, max_pending_rows=3) as h:
        await h.handle.appender.append(batch([(CPU, T0_MS - i, 1.0) for i in range(3)]))
        with pytest.raises(OverloadedError, match="write queue") as err:
            await h.handle.appender.append(batch([(CPU, T0_MS - 10, 1.0)]))
        assert err.value.retry_after_s >= 1
        await h.handle.writer.commit_pending()
        assert (await h.handle.appender.append(batch([(CPU, T0_MS - 10, 1.0)]))).accepted == 1


async def test_cardinality_limit_refuses_batch(data_dir: Path) -> None:
    async with open_store(data_dir, max_series_per_source=2) as h:
        rows = [(series("m", i=str(i)), T0_MS, 1.0) for i in range(3)]
        with pytest.raises(CardinalityLimitError, match="per-source limit is 2"):
            await h.handle.appender.append(batch(rows), source="agent")
        assert h.handle.writer.queued_rows == 0
        assert (await h.handle.appender.append(batch(rows[:2]), source="other")).accepted == 2


async def test_crash_before_commit_is_replayed_with_new_series(data_dir: Path) -> None:
    async with open_store(data_dir, wal_fsync="always") as h:
        await h.handle.appender.append(
            batch([(CPU, T0_MS, 1.0), (series("new", x="1"), T0_MS, 2.0)])
        )
        h.handle.writer._queue.clear()
        h.handle.writer._queued_rows = 0
    async with open_store(data_dir) as h:
        got = h.handle.querier.select([], 0, T0_MS)
        assert sorted((s.labels, s.values.tolist()) for s in got) == [
            (CPU, [1.0]),
            (series("new", x="1"), [2.0]),
        ]
        assert h.handle.querier.stats().series == 2


async def test_background_batcher_and_close(data_dir: Path) -> None:
    async with open_store(data_dir, batch_interval_s=0.05) as h:
        runner = asyncio.create_task(h.handle.run())
        await h.handle.appender.append(batch([(CPU, T0_MS, 1.0)]))
        deadline = time.monotonic() + 10
        while h.handle.querier.stats().head_samples < 1:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        await h.handle.appender.append(batch([(CPU, T0_MS - 1, 1.0)]))
        await h.handle.aclose()
        await asyncio.wait_for(runner, 10)
        with pytest.raises(UnavailableError):
            await h.handle.appender.append(batch([(CPU, T0_MS, 1.0)]))
    async with open_store(data_dir) as h:
        [got] = h.handle.querier.select([], 0, T0_MS)
        assert len(got.ts_ms) == 2
        assert h.handle.querier.stats().wal_bytes >= 0


async def test_append_yields_to_the_event_loop_and_writes_the_wal_inline(data_dir: Path) -> None:
    """A tight producer must not starve the batcher: every append lets other tasks run,
    also when its WAL write happened inline (no thread hop)."""
    async with open_store(data_dir) as h:
        ran = asyncio.Event()
        asyncio.get_running_loop().call_soon(ran.set)
        wal = h.handle.writer._wal
        before = wal.end
        await h.handle.appender.append(batch([(CPU, T0_MS, 1.0)]))
        assert ran.is_set()
        assert wal.end > before
        assert [p for _, p in wal.replay(before)] != []


async def test_appends_are_refused_while_the_head_is_twice_its_bound(data_dir: Path) -> None:
    labels = [series("m", i=str(i)) for i in range(4)]
    async with open_store(data_dir, batch_rows=10, head_max_rows=20) as h:
        app = h.handle.appender
        await app.append(batch([(s, T0_MS - k, 1.0) for s in labels for k in range(10)]))
        await h.handle.writer.commit_pending()  # 40 rows in the head
        with pytest.raises(OverloadedError, match="twice head_max_rows") as err:
            await app.append(batch([(CPU, T0_MS, 1.0)]))
        assert err.value.retry_after_s == 5.0
        await h.handle.flush_now()
        assert (await app.append(batch([(CPU, T0_MS, 1.0)]))).accepted == 1
