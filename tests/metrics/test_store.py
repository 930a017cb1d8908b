from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.metrics.api import MetricQuerier, Resolution
from monitoringserver.metrics.manifest import BLOCK_LEVEL
from monitoringserver.model.matchers import Matcher, MatchOp
from tests.pipeline.storehelp import DAY_MS, T0_MS, Clock, batch, grid, open_store, series

HOSTS = [series("cpu", host=f"h{i}") for i in range(4)]
STEP = 10_000


def _expected_rollup(ts: np.ndarray, v: np.ndarray, step: int) -> dict[str, list[float]]:
    buckets = ts - ts % step
    out: dict[str, list[float]] = {k: [] for k in ("ts", "min", "max", "sum", "count", "last")}
    for b in np.unique(buckets):
        sel = v[buckets == b]
        out["ts"].append(float(b))
        out["min"].append(float(sel.min()))
        out["max"].append(float(sel.max()))
        out["sum"].append(float(sel.sum()))
        out["count"].append(float(len(sel)))
        out["last"].append(float(sel[-1]))
    return out


async def test_head_parts_and_blocks_read_as_one_last_write_wins(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        app, q = h.handle.appender, h.handle.querier
        assert isinstance(q, MetricQuerier)
        n = 100
        base = np.arange(4 * n, dtype=np.float64).reshape(4, n)
        await app.append(grid(HOSTS, T0_MS, n, STEP, base))
        await h.handle.flush_now()  # part 1
        await app.append(grid(HOSTS[:1], T0_MS + 50 * STEP, 10, STEP, np.full(10, -1.0)))
        await h.handle.flush_now()  # part 2 overrides 10 samples of h0
        await app.append(grid(HOSTS[:1], T0_MS + 55 * STEP, 1, STEP, [-2.0]))
        await h.handle.writer.commit_pending()  # head overrides one more
        assert h.handle.querier.stats().resolutions["raw"].files == 2
        [got] = q.select([Matcher.eq("host", "h0")], T0_MS, T0_MS + DAY_MS)
        expected = base[0].copy()
        expected[50:60] = -1.0
        expected[55] = -2.0
        assert got.values.tolist() == expected.tolist()
        assert got.ts_ms.tolist() == (T0_MS + np.arange(n) * STEP).tolist()
        # Range pruning and time filtering.
        [part] = q.select([Matcher.eq("host", "h1")], T0_MS + 10 * STEP, T0_MS + 19 * STEP)
        assert part.values.tolist() == base[1, 10:20].tolist()
        assert q.select([Matcher.eq("host", "nope")], T0_MS, T0_MS + DAY_MS) == []
        assert q.select([], T0_MS + DAY_MS, T0_MS) == []


async def test_merge_levels_and_final_block_keep_data(data_dir: Path) -> None:
    async with open_store(
        data_dir,
        now_ms=T0_MS + DAY_MS // 2,
        merge_fan_in=2,
        max_file_rows=1000,
        merge_chunk_rows=1000,
    ) as h:
        rng = np.random.default_rng(1)
        vals = np.round(rng.random((4, 60 * 6)) * 100, 2)
        for k in range(6):
            chunk = vals[:, k * 60 : (k + 1) * 60]
            await h.handle.appender.append(grid(HOSTS, T0_MS + k * 60 * STEP, 60, STEP, chunk))
            await h.handle.flush_now()
            await h.handle.maintain_now()
        levels = {f.level for f in h.handle.store._manifest.files()}
        assert levels & {1, 2}
        h.clock.now_ms = T0_MS + 2 * DAY_MS
        await h.handle.compact_now()
        raw = [f for f in h.handle.store._manifest.files() if f.resolution == "raw"]
        assert {f.level for f in raw} == {BLOCK_LEVEL}  # finals, then the day block
        assert all(f.rolled_up for f in raw)
        assert len(raw) >= 2  # split at max_file_rows
        for i, lbl in enumerate(HOSTS):
            [got] = h.handle.querier.select([Matcher.eq("host", lbl[1][1])], T0_MS, T0_MS + DAY_MS)
            assert got.values.tolist() == vals[i].tolist()
        stats = h.handle.querier.stats()
        assert stats.resolutions["raw"].samples == vals.size
        assert stats.resolutions["5m"].files >= 1
        assert stats.last_compaction_duration_s is not None


@pytest.mark.parametrize("resolution", [Resolution.M5, Resolution.H1])
@pytest.mark.parametrize("compacted", [False, True])
async def test_rollups_match_numpy(data_dir: Path, resolution: Resolution, compacted: bool) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        rng = np.random.default_rng(7)
        n = 2 * 360 + 17
        vals = np.round(rng.normal(50, 20, (2, n)), 2)
        vals[0, 5] = np.nan
        await h.handle.appender.append(grid(HOSTS[:2], T0_MS + 3_000, n, STEP, vals))
        await h.handle.writer.commit_pending()
        if compacted:
            h.clock.now_ms = T0_MS + 2 * DAY_MS
            await h.handle.compact_now()
            assert h.handle.querier.stats().resolutions[resolution.value].files >= 1
        got = h.handle.querier.select_rollup([], T0_MS, T0_MS + DAY_MS, resolution)
        assert len(got) == 2
        ts = T0_MS + 3_000 + np.arange(n) * STEP
        for i, rs in enumerate(got):
            keep = ~np.isnan(vals[i])
            exp = _expected_rollup(ts[keep], vals[i][keep], resolution.step_ms)
            assert rs.ts_ms.tolist() == exp["ts"]
            assert rs.count.tolist() == exp["count"]
            assert rs.min.tolist() == exp["min"]
            assert rs.max.tolist() == exp["max"]
            assert rs.last.tolist() == exp["last"]
            np.testing.assert_allclose(rs.sum, exp["sum"], rtol=1e-12)


async def test_rollup_query_is_complete_across_rolled_and_unrolled(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 360, STEP, np.ones(360)))
        h.clock.now_ms = T0_MS + 2 * DAY_MS
        await h.handle.compact_now()  # day 0 rolled up
        day1 = T0_MS + DAY_MS
        await h.handle.appender.append(grid(HOSTS[:1], day1, 360, STEP, np.full(360, 2.0)))
        await h.handle.writer.commit_pending()  # day 1 only in the head
        [rs] = h.handle.querier.select_rollup([], T0_MS, day1 + DAY_MS, Resolution.H1)
        assert rs.ts_ms.tolist() == [T0_MS, day1]
        assert rs.sum.tolist() == [360.0, 720.0]
        with pytest.raises(BadDataError):
            h.handle.querier.select_rollup([], T0_MS, day1, Resolution.RAW)


async def test_retention_drops_whole_files_and_select_falls_back(data_dir: Path) -> None:
    async with open_store(
        data_dir,
        now_ms=T0_MS + DAY_MS // 2,
        raw_retention_s=86400.0,
        m5_retention_s=3 * 86400.0,
        m5_partition_s=86400.0,
    ) as h:
        vals = np.arange(720, dtype=np.float64)
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 720, STEP, vals))
        h.clock.now_ms = T0_MS + 2 * DAY_MS + 1
        await h.handle.compact_now()
        stats = h.handle.querier.stats()
        assert stats.resolutions["raw"].files == 0  # rolled up, then past retention
        assert stats.resolutions["5m"].files == 1
        [got] = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        # Each 5-minute bucket (30 samples) stands in with its last value.
        assert got.ts_ms.tolist() == [T0_MS + k * 300_000 for k in range(24)]
        assert got.values.tolist() == [float(k * 30 + 29) for k in range(24)]
        h.clock.now_ms = T0_MS + 4 * DAY_MS + 1
        await h.handle.compact_now()
        stats = h.handle.querier.stats()
        assert stats.resolutions["5m"].files == 0
        assert stats.resolutions["1h"].files == 1
        [got] = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        assert got.values.tolist() == [float(k * 360 + 359) for k in range(2)]


async def test_raw_is_not_dropped_before_rollup(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2, raw_retention_s=86400.0) as h:
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 10, STEP, np.ones(10)))
        await h.handle.flush_now()
        h.clock.now_ms = T0_MS + 3 * DAY_MS
        assert h.handle.compactor.apply_retention(h.clock.now_ms) == 0
        assert h.handle.querier.stats().resolutions["raw"].files == 1


async def test_unlisted_and_temporary_files_are_removed_at_start(data_dir: Path) -> None:
    clock = Clock(T0_MS + DAY_MS // 2)
    async with open_store(data_dir, clock=clock) as h:
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, 10, STEP, np.ones(10)))
        await h.handle.flush_now()
        [entry] = h.handle.store._manifest.files()
        listed = data_dir / "metrics" / entry.path
    # A crash after COPY+rename but before the manifest commit leaves an unlisted copy.
    stray = listed.with_name("999.parquet")
    stray.write_bytes(listed.read_bytes())
    tmp = listed.with_name(".tmp-1000.parquet")
    tmp.write_bytes(b"PAR1 truncated")
    async with open_store(data_dir, clock=clock) as h:
        assert not stray.exists()
        assert not tmp.exists()
        assert listed.exists()
        [got] = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        assert got.values.tolist() == [1.0] * 10


async def test_metadata_queries_and_self_metrics(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        q = h.handle.querier
        await h.handle.appender.append(
            batch(
                [
                    (HOSTS[0], T0_MS, 1.0),
                    (HOSTS[1], T0_MS + DAY_MS // 4, 1.0),
                    (series("mem", host="h0", env="p"), T0_MS, 1.0),
                ]
            )
        )
        assert q.series([Matcher.eq("__name__", "cpu")], T0_MS, T0_MS + 1) == [HOSTS[0]]
        assert len(q.series([Matcher("__name__", MatchOp.RE, ".+")], 0, 2**62)) == 3
        assert q.label_names([], 0, 1) == ["__name__", "env", "host"]
        assert q.label_names([Matcher.eq("__name__", "cpu")], 0, 2**62) == ["__name__", "host"]
        assert q.label_values("host", [], 0, 1) == ["h0", "h1"]
        assert q.label_values("host", [Matcher.eq("env", "p")], 0, 2**62) == ["h0"]
        await h.handle.writer.commit_pending()
        stats = q.stats()
        assert (stats.series, stats.head_samples) == (3, 3)
        reg = h.registry
        assert reg.get_sample_value("monitoring_store_samples_appended_total") == 3
        assert reg.get_sample_value("monitoring_store_series") == 3
        assert reg.get_sample_value("monitoring_store_head_samples") == 3
        assert reg.get_sample_value("monitoring_store_wal_bytes") is not None
        assert reg.get_sample_value("monitoring_store_files", {"resolution": "raw"}) == 0
        await h.handle.flush_now()  # two 2-hour partitions: two parts
        assert reg.get_sample_value("monitoring_store_files", {"resolution": "raw"}) == 2
        assert (
            reg.get_sample_value(
                "monitoring_store_compaction_duration_seconds_count", {"kind": "flush"}
            )
            == 1
        )


async def test_large_flush_keeps_file_order_and_every_sample(data_dir: Path) -> None:
    labels = [series("g", i=str(i)) for i in range(300)]
    n = 1200
    rng = np.random.default_rng(3)
    vals = np.round(rng.normal(0, 100, (len(labels), n)), 2)
    async with open_store(
        data_dir, now_ms=T0_MS + DAY_MS // 2, max_file_rows=200_000, merge_chunk_rows=50_000
    ) as h:
        await h.handle.appender.append(grid(labels, T0_MS, n, 1000, vals))
        await h.handle.flush_now()
        assert h.handle.querier.stats().resolutions["raw"].files == 2
        got = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        assert len(got) == len(labels)
        by_i = {int(s.labels[1][1]): s for s in got}
        for i in range(len(labels)):
            assert by_i[i].values.tolist() == vals[i].tolist()
        # Raw-data fallback bookkeeping copes with ids beyond the rollups' range.
        [one] = h.handle.querier.select([Matcher.eq("i", "299")], T0_MS - DAY_MS, T0_MS + DAY_MS)
        assert len(one.ts_ms) == n


async def test_stopped_compactor_refuses_jobs(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        await h.handle.appender.append(grid(HOSTS, T0_MS, 10, STEP, np.ones(40)))
        await h.handle.writer.commit_pending()
        h.handle.compactor.stop()
        assert h.handle.compactor.flush_head() == 0
        assert not h.handle.compactor.merge_once(T0_MS + 3 * DAY_MS)
        assert h.handle.compactor.apply_retention(T0_MS + 30 * DAY_MS) == 0
        assert h.handle.querier.stats().head_samples == 40


async def test_day_block_and_late_data_keep_rollups_exact(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS - 1) as h:
        n = 8640  # a whole day at 10 s
        vals = np.arange(n, dtype=np.float64)
        await h.handle.appender.append(grid(HOSTS[:1], T0_MS, n, STEP, vals))
        h.clock.now_ms = T0_MS + 2 * DAY_MS
        await h.handle.compact_now()
        raw = [f for f in h.handle.store._manifest.files() if f.resolution == "raw"]
        assert {f.level for f in raw} == {BLOCK_LEVEL}
        assert all(f.rolled_up for f in raw)
        [got] = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        assert got.values.tolist() == vals.tolist()
        # A late sample for 03:00 (replacing one value) re-opens only that partition.
        late_ts = T0_MS + 3 * 3_600_000
        await h.handle.appender.append(grid(HOSTS[:1], late_ts, 1, STEP, [-1000.0]))
        await h.handle.compact_now()
        [rs] = h.handle.querier.select_rollup([], T0_MS, T0_MS + DAY_MS, Resolution.H1)
        expected = vals.copy()
        expected[3 * 360] = -1000.0
        assert rs.count.tolist() == [360] * 24
        assert rs.sum.tolist() == [
            float(expected[k * 360 : (k + 1) * 360].sum()) for k in range(24)
        ]
        [got] = h.handle.querier.select([], T0_MS, T0_MS + DAY_MS)
        assert got.values.tolist() == expected.tolist()
        raw = [f for f in h.handle.store._manifest.files() if f.resolution == "raw"]
        assert {f.level for f in raw} == {BLOCK_LEVEL}  # merged back into one day block
        assert len({f.seq for f in raw}) == 1
