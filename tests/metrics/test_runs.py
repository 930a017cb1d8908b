from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoringserver.metrics import blocks
from monitoringserver.metrics.runs import Run, merge_runs


def _cols(rows: list[tuple[int, int, float]]) -> blocks.Columns:
    return {
        "series_id": np.array([r[0] for r in rows], dtype=np.uint64),
        "ts": np.array([r[1] for r in rows], dtype=np.int64),
        "value": np.array([r[2] for r in rows], dtype=np.float64),
    }


def _run(rows: list[tuple[int, int, float]]) -> Run:
    return Run.from_columns(blocks.dedup_last([_cols(rows)]))


def _rows(run: Run) -> list[tuple[int, int, float]]:
    cols = run.to_columns()
    return list(
        zip(cols["series_id"].tolist(), cols["ts"].tolist(), cols["value"].tolist(), strict=True)
    )


@pytest.mark.parametrize(
    ("runs", "expected"),
    [
        # Time-ordered runs with the same series: concatenated per series.
        (
            [[(1, 10, 1.0), (2, 10, 2.0)], [(1, 20, 3.0), (2, 20, 4.0)]],
            [(1, 10, 1.0), (1, 20, 3.0), (2, 10, 2.0), (2, 20, 4.0)],
        ),
        # Different series sets.
        (
            [[(1, 10, 1.0)], [(3, 5, 2.0)], [(1, 30, 3.0), (2, 1, 4.0)]],
            [(1, 10, 1.0), (1, 30, 3.0), (2, 1, 4.0), (3, 5, 2.0)],
        ),
        # Same key in two runs: the newer wins (fallback path).
        ([[(1, 10, 1.0), (1, 20, 2.0)], [(1, 20, 9.0)]], [(1, 10, 1.0), (1, 20, 9.0)]),
        # Interleaved times (fallback path).
        (
            [[(1, 10, 1.0), (1, 30, 3.0)], [(1, 20, 2.0)]],
            [(1, 10, 1.0), (1, 20, 2.0), (1, 30, 3.0)],
        ),
        # Empty runs are ignored.
        ([[], [(4, 1, 1.0)], []], [(4, 1, 1.0)]),
        ([[], []], []),
    ],
)
def test_merge_runs_table(
    runs: list[list[tuple[int, int, float]]], expected: list[tuple[int, int, float]]
) -> None:
    assert _rows(merge_runs([_run(r) for r in runs])) == expected


rows_st = st.lists(
    st.tuples(st.integers(0, 6), st.integers(0, 40), st.floats(allow_nan=False, width=32)),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(rows_st, min_size=1, max_size=4))
def test_merge_runs_equals_dedup_last(runs: list[list[tuple[int, int, float]]]) -> None:
    parts = [_run(r) for r in runs]
    expected = blocks.dedup_last([p.to_columns() for p in parts])
    got = merge_runs(parts).to_columns()
    for k in ("series_id", "ts", "value"):
        assert got[k].tolist() == expected[k].tolist()


@settings(max_examples=100, deadline=None)
@given(rows_st, st.integers(-5, 45), st.integers(-5, 45))
def test_in_time_keeps_rows_in_range(
    rows: list[tuple[int, int, float]], start: int, end: int
) -> None:
    run = _run(rows)
    got = run.in_time(start, end)
    assert _rows(got) == [r for r in _rows(run) if start <= r[1] <= end]
    assert (got.lengths > 0).all()
    assert got.offsets()[-1] == len(got)


def test_freeze_and_sizes() -> None:
    run = _run([(1, 1, 1.0), (1, 2, 2.0), (5, 1, 3.0)]).freeze()
    assert run.sids.tolist() == [1, 5]
    assert run.lengths.tolist() == [2, 1]
    assert run.offsets().tolist() == [0, 2, 3]
    assert run.nbytes == 2 * 8 + 2 * 8 + 3 * 8 + 3 * 8
    with pytest.raises(ValueError, match="read-only"):
        run.ts[0] = 7
    assert len(Run.empty()) == 0
    assert merge_runs([Run.empty()]).nbytes == 0
