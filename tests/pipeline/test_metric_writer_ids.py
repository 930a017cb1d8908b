"""MetricWriter as a SeriesIdAppender: resolve label sets once, append by store id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.errors import (
    BadDataError,
    CardinalityLimitError,
    StorageError,
    UnavailableError,
)
from monitoringserver.metrics.api import DedupKey, SeriesIdAppender
from monitoringserver.model.samples import SampleBatch
from tests.pipeline.storehelp import T0_MS, batch, open_store, series

CPU = series("cpu", host="a")
MEM = series("mem", host="a")


def cols(
    ids: list[int] | np.ndarray, ts: list[int], values: list[float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.asarray(ids, dtype=np.uint64) if isinstance(ids, list) else ids,
        np.asarray(ts, dtype=np.int64),
        np.asarray(values, dtype=np.float64),
    )


async def test_resolve_once_then_append_by_id(data_dir: Path) -> None:
    async with open_store(data_dir) as h:
        writer = h.handle.writer
        assert isinstance(writer, SeriesIdAppender)
        ids = writer.resolve_series([CPU, MEM], source="agent")
        assert ids.tolist() == [0, 1]
        assert writer.resolve_series([MEM], source="agent").tolist() == [1]  # known: no new id
        res = await writer.append_ids(*cols([0, 1, 0], [T0_MS - 10, T0_MS - 10, T0_MS], [1, 2, 3]))
        assert (res.accepted, res.rejected, res.duplicate) == (3, {}, False)
        # A label-set append afterwards finds the same series.
        await writer.append(batch([(MEM, T0_MS, 4.0)]))
        await writer.commit_pending()
        got = {s.labels: s.values.tolist() for s in h.handle.querier.select([], 0, T0_MS)}
        assert got == {CPU: [1.0, 3.0], MEM: [2.0, 4.0]}
    async with open_store(data_dir) as h:  # the series rows were committed with the samples
        assert h.handle.querier.stats().series == 2
        assert h.handle.writer.resolve_series([MEM, CPU]).tolist() == [1, 0]


async def test_series_resolved_then_crash_are_replayed_from_the_wal(data_dir: Path) -> None:
    async with open_store(data_dir, wal_fsync="always") as h:
        writer = h.handle.writer
        [sid] = writer.resolve_series([CPU]).tolist()
        await writer.append_ids(*cols([sid], [T0_MS], [7.0]))
        writer._queue.clear()  # killed before the batcher committed
        writer._queued_rows = 0
    async with open_store(data_dir) as h:
        [got] = h.handle.querier.select([], 0, T0_MS)
        assert (got.labels, got.values.tolist()) == (CPU, [7.0])


async def test_new_series_ride_with_the_next_record_after_a_failed_wal_write(
    data_dir: Path,
) -> None:
    async with open_store(data_dir, wal_fsync="always") as h:
        writer = h.handle.writer
        wal = writer._wal
        first = writer.resolve_series([CPU])
        real_append = wal.append

        def broken(payload: bytes) -> int:
            raise StorageError("cannot append to write-ahead log: disk full")

        wal.append = broken  # type: ignore[method-assign]
        with pytest.raises(StorageError):
            await writer.append_ids(*cols(first.tolist(), [T0_MS], [1.0]))
        wal.append = real_append  # type: ignore[method-assign]
        second = writer.resolve_series([MEM])
        await writer.append_ids(*cols(second.tolist(), [T0_MS], [2.0]))
        writer._queue.clear()
        writer._queued_rows = 0
    async with open_store(data_dir) as h:  # both definitions were in the one record written
        got = {s.labels: s.values.tolist() for s in h.handle.querier.select([], 0, T0_MS)}
        assert got == {MEM: [2.0]}
        assert h.handle.querier.stats().series == 2


async def test_append_ids_dedup_window_and_subscribers(data_dir: Path) -> None:
    async with open_store(data_dir) as h:
        writer = h.handle.writer
        seen: list[SampleBatch] = []
        writer.subscribe(seen.append)
        ids = writer.resolve_series([CPU, MEM]).tolist()
        too_old = T0_MS - 16 * 86_400_000
        res = await writer.append_ids(
            *cols([ids[1], ids[0], ids[1]], [T0_MS, too_old, T0_MS - 1], [1.0, 2.0, 3.0]),
            dedup=DedupKey("ag", 1),
        )
        assert (res.accepted, res.rejected) == (2, {"too_old": 1})
        again = await writer.append_ids(*cols([ids[0]], [T0_MS], [9.0]), dedup=DedupKey("ag", 1))
        assert (again.accepted, again.duplicate) == (0, True)
        [sub] = seen
        assert list(sub.rows()) == [(MEM, T0_MS, 1.0), (MEM, T0_MS - 1, 3.0)]


@pytest.mark.parametrize(
    ("ids", "ts", "values", "match"),
    [
        ([0], [T0_MS, T0_MS], [1.0], "differ in length"),
        ([0], [T0_MS], [1.0, 2.0], "differ in length"),
        ([5], [T0_MS], [1.0], "series id 5 was never issued"),
        (np.array([-1]), [T0_MS], [1.0], "was never issued"),
    ],
)
async def test_append_ids_refuses_bad_input(
    data_dir: Path, ids: list[int] | np.ndarray, ts: list[int], values: list[float], match: str
) -> None:
    async with open_store(data_dir) as h:
        h.handle.writer.resolve_series([CPU])
        with pytest.raises(BadDataError, match=match):
            await h.handle.writer.append_ids(*cols(ids, ts, values))
        assert h.handle.writer.queued_rows == 0


async def test_resolve_series_keeps_the_limits_and_refuses_when_closing(data_dir: Path) -> None:
    async with open_store(data_dir, max_series_per_source=2) as h:
        writer = h.handle.writer
        with pytest.raises(CardinalityLimitError, match="per-source limit is 2"):
            writer.resolve_series([series("m", i=str(i)) for i in range(3)], source="agent")
        assert len(writer._new_blocks) == 0
        with pytest.raises(BadDataError):
            writer.resolve_series([(("host", "a"),)])  # no metric name
        await h.handle.aclose()
        with pytest.raises(UnavailableError):
            writer.resolve_series([CPU])
        with pytest.raises(UnavailableError):
            await writer.append_ids(*cols([], [], []))


async def test_resolving_the_label_sets_of_the_last_appended_batch(data_dir: Path) -> None:
    async with open_store(data_dir) as h:
        writer = h.handle.writer
        writer.resolve_series([CPU], source="agent")
        appended = batch([(MEM, T0_MS, 1.0), (CPU, T0_MS, 2.0)])
        await writer.append(appended)
        assert list(appended.series) == [MEM, CPU]
        assert writer.resolve_series(appended.series).tolist() == [1, 0]
        again = writer.resolve_series(appended.series)
        again[0] = 99  # the caller's copy
        assert writer.resolve_series(list(appended.series)).tolist() == [1, 0]
        # Equal label sets that are other objects, or other sets, are looked up.
        copies = [series("mem", host="a"), series("cpu", host="a")]
        assert writer.resolve_series(copies).tolist() == [1, 0]
        assert writer.resolve_series([CPU, MEM]).tolist() == [0, 1]
        assert writer.resolve_series([MEM]).tolist() == [1]
        assert writer.resolve_series([]).tolist() == []


async def test_batches_staged_across_chunks_commit_in_order_and_replay(data_dir: Path) -> None:
    labels = [series("m", i=str(i)) for i in range(4)]
    sizes = [2, 2, 5, 1, 3]  # batch_rows 3: chunks of 3 rows, one batch larger than that
    expected: dict[int, list[float]] = {i: [] for i in range(4)}
    async with open_store(data_dir, batch_rows=3, max_pending_rows=100) as h:
        writer = h.handle.writer
        ids = writer.resolve_series(labels)
        k = 0
        for n in sizes:
            sids = ids[np.arange(k, k + n) % 4]
            ts = T0_MS - 1000 + np.arange(k, k + n, dtype=np.int64)
            vals = np.arange(k, k + n, dtype=np.float64)
            await writer.append_ids(sids, ts, vals)
            for i, v in zip((np.arange(k, k + n) % 4).tolist(), vals.tolist(), strict=True):
                expected[i].append(v)
            k += n
        await writer.commit_pending()
        got = {s.labels: s.values.tolist() for s in h.handle.querier.select([], 0, T0_MS)}
        assert got == {labels[i]: v for i, v in expected.items()}
        await writer.append_ids(*cols([int(ids[0])], [T0_MS], [99.0]))
        writer._queue.clear()  # killed before the batcher committed
        writer._queued_rows = 0
    async with open_store(data_dir, batch_rows=3) as h:
        got = {s.labels: s.values.tolist() for s in h.handle.querier.select([], 0, T0_MS)}
        assert got == {labels[i]: v + ([99.0] if i == 0 else []) for i, v in expected.items()}
