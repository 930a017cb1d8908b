"""The log write path: WAL before ack, batcher, dedup, replay, time window, rate limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitoringserver.errors import BadDataError, OverloadedError, UnavailableError
from monitoringserver.logs.api import DedupKey, LogQuery
from monitoringserver.logs.store import LogStoreOptions
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.log_pipeline import LogPipeline, open_log_pipeline
from monitoringserver.pipeline.log_writer import LogWriterOptions, RateLimiter
from monitoringserver.storage.db import Database

from .conftest import FakeClock

NOW = 1_767_000_000.0


def _batch(n: int, *, t_ms: int = int(NOW * 1000), level: str = "info") -> LogBatch:
    return LogBatch.from_records(
        LogRecord(t_ms, f"line {i}", server_id="h", level=level) for i in range(n)
    )


def _open(db: Database, d: Path, clock: FakeClock, **writer: object) -> LogPipeline:
    return open_log_pipeline(
        db,
        d,
        store_options=LogStoreOptions(retention_s=3600, flush_lines=50),
        writer_options=LogWriterOptions(batch_lines=10, **writer),  # type: ignore[arg-type]
        wal_fsync="never",
        clock=clock,
    )


async def test_append_commit_flush_and_query(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = _open(db, tmp_path / "logs", clock)
    sub = p.bus.subscribe()
    res = await p.writer.append(_batch(5), source="a")
    assert (res.accepted, res.duplicate) == (5, False)
    assert len(await sub.get()) == 5
    assert p.writer.queued_lines == 5
    assert await p.writer.commit_pending() == 5
    assert await p.writer.commit_pending() == 0
    assert p.store.head_lines() == 5
    raw = LogBatch.from_records(
        [LogRecord(0, "2026-01-01T00:00:00Z ERROR db: boom", level="", server_id="h")]
    )
    clock.t = 1_767_225_600.0
    res = await p.writer.append(raw)
    assert res.accepted == 1
    await p.writer.maintain(force_flush=True)
    assert p.store.head_lines() == 0
    page = p.querier.query(LogQuery(limit=10))
    assert page.batch.level[0] == "error"
    assert page.batch.logger[0] == "db"
    assert p.aggregator.get_stats().lines_total == 6
    assert p.querier.stats().archived_lines == 6
    await p.aclose()
    db.close()


async def test_window_rejects_and_repairs_are_counted(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = _open(db, tmp_path / "logs", clock)
    now_ms = int(NOW * 1000)
    batch = LogBatch.from_records(
        [
            LogRecord(now_ms, "ok", level="info"),
            LogRecord(now_ms - 7_200_000, "old", level="info"),
            LogRecord(now_ms + 3_600_000, "future", level="info"),
            LogRecord(now_ms, "x" * 100_000, level="info"),
        ]
    )
    res = await p.writer.append(batch)
    assert res.accepted == 2
    assert res.rejected == {"too_old": 1, "too_far_in_future": 1}
    assert res.repaired == {"truncated": 1}
    assert p.writer.counters()[1:] == ({"too_old": 1, "too_far_in_future": 1}, {"truncated": 1})
    await p.aclose()
    db.close()


async def test_dedup_and_replay_after_crash(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db_path = tmp_path / "db"
    db = Database(db_path, threads=1)
    p = _open(db, tmp_path / "logs", clock)
    assert (await p.writer.append(_batch(3), dedup=DedupKey("ag", 1))).accepted == 3
    assert (await p.writer.append(_batch(3), dedup=DedupKey("ag", 1))).duplicate
    await p.writer.append(_batch(2), dedup=DedupKey("ag", 2))
    # crash: nothing committed to DuckDB, WAL closed without commit
    p.wal.close()
    again = _open(db, tmp_path / "logs", clock)
    assert again.replayed_lines == 5
    assert again.store.head_lines() == 5
    assert (await again.writer.append(_batch(1), dedup=DedupKey("ag", 2))).duplicate
    again.wal.close()
    third = _open(db, tmp_path / "logs", clock)
    assert third.replayed_lines == 0
    assert third.store.dedup_state() == {"ag": 2}
    await third.aclose()
    db.close()


async def test_one_commit_stores_the_highest_sequence_of_each_agent(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = _open(db, tmp_path / "logs", clock)
    for agent, seq in [("a", 1), ("b", 7), ("a", 2), ("a", 3), ("b", 8)]:
        assert (await p.writer.append(_batch(1), dedup=DedupKey(agent, seq))).accepted == 1
    assert await p.writer.commit_pending() == 5
    assert p.store.dedup_state() == {"a": 3, "b": 8}
    for agent, seq in [("a", 3), ("b", 2)]:
        assert (await p.writer.append(_batch(1), dedup=DedupKey(agent, seq))).duplicate
    await p.aclose()
    db.close()


async def test_run_loop_commits_and_closing_refuses(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    sent: list[SampleBatch] = []

    async def sink(b: SampleBatch) -> None:
        sent.append(b)

    p = open_log_pipeline(
        db,
        tmp_path / "logs",
        writer_options=LogWriterOptions(batch_lines=10, batch_interval_s=0.01),
        store_options=LogStoreOptions(retention_s=None),
        metrics_sink=sink,
        clock=clock,
    )
    task = asyncio.create_task(p.run())
    await p.writer.append(_batch(20))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while p.store.head_lines() < 20 and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert p.store.head_lines() == 20
    await p.aclose()
    await task
    assert sent
    with pytest.raises(UnavailableError):
        await p.writer.append(_batch(1))
    db.close()


async def test_overload_and_rate_limit(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = _open(
        db, tmp_path / "logs", clock, max_pending_lines=6, rate_lines_per_s=10.0, rate_burst_lines=8
    )
    await p.writer.append(_batch(5), source="a")
    with pytest.raises(OverloadedError, match="write queue"):
        await p.writer.append(_batch(5), source="b")
    await p.writer.commit_pending()
    with pytest.raises(OverloadedError, match="rate limit") as exc:
        await p.writer.append(_batch(5), source="a")
    assert exc.value.retry_after_s >= 1.0
    await p.writer.append(_batch(5), source="b")
    clock.t += 1
    await p.writer.commit_pending()
    await p.writer.append(_batch(5), source="a")
    await p.aclose()
    db.close()


def test_rate_limiter_forgets_old_sources_and_bad_options() -> None:
    clock = FakeClock(0)
    rl = RateLimiter(1.0, 2, max_sources=2, clock=clock)
    for s in "abc":
        rl.take(s, 2)
    rl.take("a", 2)  # "a" was forgotten: a fresh bucket
    with pytest.raises(OverloadedError):
        rl.take("c", 1)
    with pytest.raises(BadDataError):
        LogWriterOptions(batch_lines=0)


async def test_run_loop_archives_in_the_background(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = open_log_pipeline(
        db,
        tmp_path / "logs",
        writer_options=LogWriterOptions(
            batch_lines=5, batch_interval_s=0.01, maintenance_interval_s=0.0
        ),
        store_options=LogStoreOptions(retention_s=None, flush_lines=5),
        clock=clock,
    )
    calls = {"n": 0}
    real = p.store.flush

    def flaky_flush() -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("disk hiccup")
        return real()

    p.store.flush = flaky_flush  # type: ignore[assignment,method-assign]
    task = asyncio.create_task(p.writer.run())
    await p.writer.append(_batch(10))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not p.store.archives() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert p.store.archives()[0].lines == 10
    assert "cannot archive or rotate" in caplog.text
    await p.aclose()
    await task
    db.close()


@pytest.mark.parametrize(
    ("fsync", "level", "n"),
    [
        ("never", "info", 5),  # on the loop: Wal.try_append
        ("always", "info", 5),  # try_append refuses (would fsync): WAL write on a thread
        ("never", "", 5),  # raw lines to parse: a worker thread
        ("never", "info", 6_000),  # over the inline bound: a worker thread
    ],
)
async def test_every_append_path_writes_the_wal_before_ack(
    tmp_path: Path, fsync: str, level: str, n: int
) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = open_log_pipeline(
        db,
        tmp_path / "logs",
        store_options=LogStoreOptions(retention_s=3600),
        wal_fsync=fsync,  # type: ignore[arg-type]
        clock=clock,
    )
    res = await p.writer.append(_batch(n, level=level), dedup=DedupKey("a", 1))
    assert res.accepted == n
    p.wal.close()  # a crash before the batcher ran: only the WAL holds the lines
    again = open_log_pipeline(db, tmp_path / "logs", clock=clock)
    assert again.replayed_lines == n
    await again.aclose()
    db.close()


async def test_compaction_waits_while_ingest_is_busy_up_to_a_bound(tmp_path: Path) -> None:
    clock = FakeClock(NOW)
    db = Database(tmp_path / "db", threads=1)
    p = open_log_pipeline(
        db,
        tmp_path / "logs",
        store_options=LogStoreOptions(retention_s=3600, compact_min_archives=2),
        writer_options=LogWriterOptions(compact_busy_lines_per_s=100, compact_max_deferred=3),
        wal_fsync="never",
        clock=clock,
    )
    counts = []
    for lines in (500, 500, 500):  # 500 lines/s: busy
        clock.t += 1
        await p.writer.append(_batch(lines))
        await p.writer.maintain(force_flush=True)
        counts.append(p.store.archive_count())
    # Two fresh archives wait; the third reaches the bound and the backlog is merged.
    assert counts == [1, 2, 1]
    for _ in range(2):  # 2 lines/s: idle, so the two fresh archives merge at once
        clock.t += 10
        await p.writer.append(_batch(20))
        await p.writer.maintain(force_flush=True)
    assert p.store.archive_count() == 2
    assert p.querier.stats().archived_lines == 1540
    await p.aclose()
    db.close()


@pytest.mark.parametrize(
    "kwargs", [{"compact_busy_lines_per_s": -1.0}, {"compact_max_deferred": 0}]
)
def test_bad_compaction_options(kwargs: dict[str, float]) -> None:
    with pytest.raises(BadDataError):
        LogWriterOptions(**kwargs)  # type: ignore[arg-type]
