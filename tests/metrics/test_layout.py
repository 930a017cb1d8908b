"""Raw files clustered by metric name, read beside files of the older layout."""

from __future__ import annotations

import zlib
from pathlib import Path

import duckdb
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoringserver.metrics import blocks, layout
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.model.labels import make_labels
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.storage import codec
from tests.pipeline.storehelp import DAY_MS, T0_MS, grid, open_store, series

STEP = 10_000


def test_metric_hash_is_crc32_of_the_name() -> None:
    assert layout.metric_hash("") == 0
    assert layout.metric_hash("up") == zlib.crc32(b"up")
    assert layout.metric_hash("up") != layout.metric_hash("down")


def test_hasher_reads_names_once_per_id() -> None:
    index = SeriesIndex()
    labels = [make_labels({"__name__": n, "i": str(i)}) for i, n in enumerate("abab")]
    ids, _ = index.resolve(labels, "t")
    hasher = layout.MetricHasher(index)
    got = hasher(ids)
    assert got.tolist() == [layout.metric_hash(n) for n in "abab"]
    assert hasher(ids[::-1]).tolist() == got[::-1].tolist()
    assert hasher(np.zeros(0, np.uint64)).tolist() == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 30), st.integers(0, 3)), min_size=1, max_size=30),
    st.data(),
)
def test_clustered_file_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    shape: list[tuple[int, int]],
    data: st.DataObject,
) -> None:
    # shape: (rows, metric) per series id 0..n-1; ids with 0 rows are absent.
    sid = np.concatenate([np.full(r, i, np.uint64) for i, (r, _) in enumerate(shape)])
    if len(sid) == 0:
        return
    ts = np.concatenate([np.arange(r, dtype=np.int64) * STEP for r, _ in shape])
    values = np.round(np.random.default_rng(len(sid)).random(len(sid)) * 100, 2)
    metric = np.array([m for _, m in shape], dtype=np.uint32)
    encoded = codec.encode(sid, ts, values)
    heads = sid[codec.segment_starts(sid)]
    clustered = layout.cluster_by_metric(encoded, metric[heads.astype(np.intp)])
    assert list(clustered) == ["mh", "series_id", "ts", "m", "enc"]
    assert np.all(np.diff(clustered["mh"].astype(np.int64)) >= 0)
    path = tmp_path_factory.mktemp("layout") / "f.parquet"
    with duckdb.connect(config={"preserve_insertion_order": False}) as con:
        blocks.write_parquet(con, clustered, path, zstd_level=3)
        assert layout.has_metric_column(con, path)
        present = np.unique(sid)
        ids = np.array(
            sorted(data.draw(st.sets(st.sampled_from(present.tolist()), min_size=1))), np.uint64
        )
        hashes = metric[ids.astype(np.intp)].tolist()
        if data.draw(st.booleans()):
            hashes = []  # no metric filter: the id range and the id check do it all
        [got] = layout.read_clustered(con, [path], ids, hashes)
        whole = blocks.read_raw(con, path, int(present[0]), int(present[-1]))
    want = np.isin(sid, ids)
    assert got["series_id"].tolist() == sid[want].tolist()
    assert got["ts"].tolist() == ts[want].tolist()
    assert got["value"].tolist() == values[want].tolist()
    assert whole["series_id"].tolist() == sid.tolist()
    assert whole["value"].tolist() == values.tolist()


async def test_store_reads_and_merges_old_and_clustered_files(data_dir: Path) -> None:
    labels = [series(name, host=f"h{i}") for i in range(3) for name in ("b", "a", "c")]
    vals = np.arange(9 * 20, dtype=np.float64).reshape(9, 20) / 2
    async with open_store(data_dir, now_ms=T0_MS + DAY_MS // 2, merge_fan_in=2) as h:
        store, compactor = h.handle.store, h.handle.compactor
        hasher = compactor._hashes
        compactor._hashes = None  # type: ignore[assignment]  # the layout before mh
        await h.handle.appender.append(grid(labels, T0_MS, 10, STEP, vals[:, :10]))
        await h.handle.flush_now()
        compactor._hashes = hasher
        await h.handle.appender.append(grid(labels, T0_MS + 10 * STEP, 10, STEP, vals[:, 10:]))
        await h.handle.flush_now()
        files = sorted(store._manifest.files(), key=lambda f: f.seq)
        with duckdb.connect() as con:
            kinds = [layout.has_metric_column(con, store.root / f.path) for f in files]
        assert kinds == [False, True]

        def check() -> None:
            for name in ("a", "b", "c"):
                got = store.select_packed([Matcher.eq("__name__", name)], 0, 2 * T0_MS)
                assert [dict(lbl)["host"] for lbl in got.labels] == ["h0", "h1", "h2"]
                rows = [i for i, lbl in enumerate(labels) if dict(lbl)["__name__"] == name]
                assert got.values.tolist() == vals[rows].ravel().tolist()
            nameless = store.select_packed([Matcher("host", MatchOp.RE, "h[02]")], 0, 2 * T0_MS)
            assert len(nameless.labels) == 6

        check()
        await h.handle.maintain_now()  # merges the two layouts into one clustered file
        [merged] = [f for f in store._manifest.files() if f.resolution == "raw"]
        with duckdb.connect() as con:
            assert layout.has_metric_column(con, store.root / merged.path)
        check()
