"""``MemHead.rows(merged_only=True)``: the merged state's rows, or ``NotCached`` while
batches wait to be merged; the same rows as an ordinary read."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.typing import NDArray

from monitoringserver.metrics.head import MemHead
from monitoringserver.metrics.partcache import NotCached


def _add(head: MemHead, number: int, sids: list[int], ts: list[int]) -> None:
    head.add(
        number,
        number,
        np.array(sids, dtype=np.uint64),
        np.array(ts, dtype=np.int64),
        np.array(ts, dtype=np.float64) / 10,
    )


IDS = [
    np.array([0, 2], dtype=np.uint64),
    np.array([1], dtype=np.uint64),
    np.array([5], dtype=np.uint64),
    np.array([0, 1, 2, 3], dtype=np.uint64),
]


@pytest.mark.parametrize("ids", IDS, ids=lambda a: ",".join(map(str, a.tolist())))
def test_merged_only_reads_the_merged_state_or_declines(ids: NDArray[np.uint64]) -> None:
    head = MemHead()
    assert len(head.rows(ids, 0, 100, merged_only=True)) == 0  # nothing held: nothing due
    _add(head, 1, [2, 0, 1, 0], [10, 10, 10, 20])
    with pytest.raises(NotCached):
        head.rows(ids, 0, 100, merged_only=True)
    want = head.rows(ids, 0, 100)  # merges
    got = head.rows(ids, 0, 100, merged_only=True)
    assert got.sids.tolist() == want.sids.tolist()
    assert got.ts.tolist() == want.ts.tolist()
    assert got.values.tolist() == want.values.tolist()
    _add(head, 2, [3, 1], [30, 30])
    with pytest.raises(NotCached):
        head.rows(ids, 0, 100, merged_only=True)
    want = head.rows(ids, 15, 100)
    got = head.rows(ids, 15, 100, merged_only=True)
    assert got.ts.tolist() == want.ts.tolist()
    assert got.sids.tolist() == want.sids.tolist()
    head.drop_through(2)
    assert len(head.rows(ids, 0, 100, merged_only=True)) == 0


def test_rows_of_many_series_follow_each_series_start() -> None:
    head = MemHead()
    sids = [s for s in range(50) for _ in range(s % 4)]
    ts = [t for s in range(50) for t in range(s % 4)]
    _add(head, 1, sids, ts)
    ids = np.array([3, 7, 8, 9, 48, 49], dtype=np.uint64)
    run = head.rows(ids, 0, 10)
    assert run.sids.tolist() == [3, 7, 9, 49]  # 8 and 48 have no rows
    assert run.lengths.tolist() == [3, 3, 1, 1]
    assert run.ts.tolist() == [0, 1, 2, 0, 1, 2, 0, 0]
