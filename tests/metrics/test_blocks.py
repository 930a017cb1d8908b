from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monitoringserver.metrics import blocks
from monitoringserver.storage import codec
from monitoringserver.storage.db import Database


def test_large_file_round_trips_in_order(tmp_path: Path) -> None:
    db = Database(":memory:", threads=2)
    try:
        n_series, per = 500, 2000  # 1 M rows: DuckDB scans this in parallel
        sid = np.repeat(np.arange(n_series, dtype=np.uint64), per)
        ts = np.tile(np.arange(per, dtype=np.int64) * 10_000, n_series)
        rng = np.random.default_rng(5)
        values = np.round(rng.normal(0, 1000, len(sid)), 2)
        cur = db.cursor()
        path = tmp_path / "f.parquet"
        blocks.write_parquet(cur, codec.encode(sid, ts, values), path, zstd_level=1)
        got = blocks.read_raw(cur, path, 0, n_series)
        assert np.array_equal(got["series_id"], sid)
        assert np.array_equal(got["ts"], ts)
        assert np.array_equal(got["value"], values)
        some = np.array([3, 250, 499], dtype=np.uint64)
        part = blocks.read_raw(cur, path, 3, 499, some)
        assert np.unique(part["series_id"]).tolist() == [3, 250, 499]
        assert np.array_equal(part["value"][:per], values[3 * per : 4 * per])
    finally:
        db.close()


@pytest.mark.parametrize(
    ("counts", "limit", "expected"),
    [
        ([5, 5, 5], 10, [(0, 1), (2, 2)]),
        ([20, 1], 10, [(0, 0), (1, 1)]),
        ([1, 1, 1], 100, [(0, 2)]),
        ([], 10, []),
    ],
)
def test_split_by_rows(counts: list[int], limit: int, expected: list[tuple[int, int]]) -> None:
    sids = np.arange(len(counts), dtype=np.uint64)
    assert blocks.split_by_rows(sids, np.array(counts, dtype=np.int64), limit) == expected


def test_compute_rollups_skips_nan_buckets() -> None:
    cols = {
        "series_id": np.array([1, 1, 1, 2], dtype=np.uint64),
        "ts": np.array([0, 10, 400, 0], dtype=np.int64),
        "value": np.array([1.0, 3.0, np.nan, 5.0]),
    }
    out = blocks.compute_rollups(cols, 300)
    assert out["series_id"].tolist() == [1, 2]
    assert out["sum"].tolist() == [4.0, 5.0]
    assert out["count"].tolist() == [2, 1]
    empty = blocks.compute_rollups(blocks.take(cols, np.array([2])), 300)
    assert len(empty["ts"]) == 0


@pytest.mark.parametrize("big_ids", [False, True])
def test_dedup_last_keeps_newest_part_and_sorts(big_ids: bool) -> None:
    base = 2**40 if big_ids else 0
    old = {
        "series_id": np.array([base + 2, base + 1, base + 1], dtype=np.uint64),
        "ts": np.array([5, 7, 3], dtype=np.int64),
        "value": np.array([1.0, 2.0, 3.0]),
    }
    new = {
        "series_id": np.array([base + 1], dtype=np.uint64),
        "ts": np.array([7], dtype=np.int64),
        "value": np.array([9.0]),
    }
    out = blocks.dedup_last([old, new])
    assert (out["series_id"] - base).tolist() == [1, 1, 2]
    assert out["ts"].tolist() == [3, 7, 5]
    assert out["value"].tolist() == [3.0, 9.0, 1.0]
    sorted_input = blocks.dedup_last([out])
    assert sorted_input["value"].tolist() == [3.0, 9.0, 1.0]
    dup = blocks.dedup_last([blocks.concat([out, out], ["series_id", "ts", "value"])])
    assert dup["ts"].tolist() == [3, 7, 5]
