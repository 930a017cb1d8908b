"""``select_packed``: the same samples as ``select``, packed flat, over head, parts and
blocks; time pruning and empty results."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from monitoringserver.metrics import blocks
from monitoringserver.metrics.api import MetricQuerier, PackedQuerier, PackedSeries
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher, MatchOp
from tests.pipeline.storehelp import DAY_MS, T0_MS, Harness, grid, open_store, series

STEP = 10_000
CPU = [series("cpu", host=f"h{i}") for i in range(5)]
MEM = [series("mem", host=f"h{i}") for i in range(3)]
DAY1 = T0_MS + DAY_MS


def _check_packed(p: PackedSeries) -> None:
    n = len(p.labels)
    assert p.offsets.dtype == np.int64
    assert len(p.offsets) == n + 1
    assert p.offsets[0] == 0
    assert p.offsets[-1] == len(p.ts_ms) == len(p.values)
    assert bool(np.all(np.diff(p.offsets) > 0))
    for a, b in zip(p.offsets[:-1].tolist(), p.offsets[1:].tolist(), strict=True):
        assert bool(np.all(np.diff(p.ts_ms[a:b]) > 0))


async def _fill(h: Harness) -> dict[Labels, dict[int, float]]:
    """Day 0 in a compacted block, day 1 in a part overridden partly by a newer part and
    by the head. Returns the expected samples (last write wins)."""
    expected: dict[Labels, dict[int, float]] = {lbl: {} for lbl in CPU + MEM}
    everything = CPU + MEM
    rng = np.random.default_rng(3)

    async def put(labels: list[Labels], start: int, count: int) -> None:
        vals = np.round(rng.random((len(labels), count)) * 100, 3)
        await h.handle.appender.append(grid(labels, start, count, STEP, vals))
        for i, lbl in enumerate(labels):
            for j in range(count):
                expected[lbl][start + j * STEP] = float(vals[i, j])

    await put(everything, T0_MS, 300)
    h.clock.now_ms = T0_MS + 2 * DAY_MS
    await h.handle.compact_now()  # day 0: block
    await put(everything, DAY1, 200)
    await h.handle.flush_now()  # part 1
    await put(CPU[1:3], DAY1 + 50 * STEP, 20)
    await h.handle.flush_now()  # part 2 overrides
    await put(CPU[2:4], DAY1 + 60 * STEP, 30)
    await put(MEM[:1], DAY1 + 500 * STEP, 5)  # only in the head
    await h.handle.writer.commit_pending()
    return expected


RANGES = [
    ("everything", T0_MS - DAY_MS, DAY1 + DAY_MS),
    ("block only", T0_MS, T0_MS + 299 * STEP),
    ("inside the block", T0_MS + 17 * STEP + 1, T0_MS + 40 * STEP),
    ("one sample", T0_MS + 40 * STEP, T0_MS + 40 * STEP),
    ("across block and parts", T0_MS + 250 * STEP, DAY1 + 70 * STEP),
    ("parts and head", DAY1 + 55 * STEP, DAY1 + 600 * STEP),
    ("head only", DAY1 + 300 * STEP, DAY1 + 600 * STEP),
    ("gap between days", T0_MS + 300 * STEP, DAY1 - 1),
    ("after everything", DAY1 + 601 * STEP, DAY1 + DAY_MS),
    ("reversed", DAY1, T0_MS),
]
MATCHERS = [
    ("cpu", [Matcher.eq("__name__", "cpu")]),
    ("all", [Matcher("host", MatchOp.RE, "h.*")]),
    ("one host", [Matcher.eq("host", "h2")]),
    ("none", [Matcher.eq("host", "nope")]),
]


async def test_select_packed_equals_select_and_the_model(data_dir: Path) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        expected = await _fill(h)
        q = h.handle.querier
        assert isinstance(q, MetricQuerier)
        assert isinstance(q, PackedQuerier)
        levels = {f.level for f in h.handle.store._manifest.files() if f.resolution == "raw"}
        assert len(levels) >= 2  # a block and parts
        for _, matchers in MATCHERS:
            for _, start, end in RANGES:
                packed = q.select_packed(matchers, start, end)
                _check_packed(packed)
                plain = q.select(matchers, start, end)
                assert [s.labels for s in plain] == packed.labels
                want = {
                    lbl: sorted((t, v) for t, v in samples.items() if start <= t <= end)
                    for lbl, samples in expected.items()
                    if all(m.matches(dict(lbl).get(m.name, "")) for m in matchers)
                }
                want = {k: v for k, v in want.items() if v}
                assert set(packed.labels) == set(want)
                for i, lbl in enumerate(packed.labels):
                    a, b = int(packed.offsets[i]), int(packed.offsets[i + 1])
                    got = list(
                        zip(packed.ts_ms[a:b].tolist(), packed.values[a:b].tolist(), strict=True)
                    )
                    assert got == want[lbl]
                    assert plain[i].ts_ms.tolist() == packed.ts_ms[a:b].tolist()
                    assert plain[i].values.tolist() == packed.values[a:b].tolist()


@pytest.mark.parametrize(("start", "end"), [(T0_MS, T0_MS + DAY_MS), (T0_MS + 5, T0_MS)])
async def test_empty_store_and_no_match_give_empty_packed(
    data_dir: Path, start: int, end: int
) -> None:
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2) as h:
        q = h.handle.store
        empty = q.select_packed([Matcher.eq("__name__", "cpu")], start, end)
        assert empty.labels == []
        assert empty.offsets.tolist() == [0]
        assert len(empty.ts_ms) == 0
        assert len(empty.values) == 0
        assert empty.series() == []
        await h.handle.appender.append(grid(CPU[:1], T0_MS, 3, STEP, [1.0, 2.0, 3.0]))
        await h.handle.writer.commit_pending()
        assert q.select_packed([Matcher.eq("host", "zz")], start, end).labels == []
        assert q.select([Matcher.eq("host", "zz")], start, end) == []


def test_packed_series_views_share_memory() -> None:
    p = PackedSeries(
        [series("a"), series("b")],
        np.array([0, 2, 3], dtype=np.int64),
        np.array([1, 2, 1], dtype=np.int64),
        np.array([0.5, 1.5, 2.5]),
    )
    first, second = p.series()
    assert first.ts_ms.tolist() == [1, 2]
    assert second.values.tolist() == [2.5]
    assert np.shares_memory(first.values, p.values)
    assert PackedSeries.empty().series() == []


@pytest.mark.parametrize(
    ("ids", "inline"),
    [
        ([5], True),
        ([3, 4, 5, 6], True),
        ([1, 7, 300], True),
        (list(range(0, 400, 3)), False),
    ],
)
def test_id_filter_selects_exactly_the_ids(ids: list[int], inline: bool) -> None:
    wanted_ids = np.array(ids, dtype=np.uint64)
    where, params = blocks.id_filter(wanted_ids)
    assert ("wanted" not in where) is inline
    wanted = {"sid": wanted_ids}  # scanned by name
    with duckdb.connect() as con:
        con.execute("CREATE TABLE t AS SELECT range::UBIGINT AS series_id FROM range(500)")
        got = con.execute(f"SELECT series_id FROM t WHERE {where} ORDER BY 1", params).fetchnumpy()
    del wanted
    assert got["series_id"].tolist() == ids


@pytest.mark.parametrize("seed", range(6))
def test_file_order_restores_shuffled_chunks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = np.sort(rng.choice(10_000, size=3000, replace=False)).astype(np.int64)
    cuts = np.sort(rng.choice(np.arange(1, len(keys)), size=seed * 5, replace=False))
    chunks = np.split(keys, cuts)
    shuffled = np.concatenate([chunks[i] for i in rng.permutation(len(chunks))])
    order = blocks.file_order(shuffled)
    if seed == 0:
        assert order is None
    else:
        assert order is not None
        assert shuffled[order].tolist() == keys.tolist()
