from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from monitoringserver.model.samples import STALE_NAN
from monitoringserver.storage import codec


def _roundtrip(sid: NDArray[np.uint64], ts: NDArray[np.int64], v: NDArray[np.float64]) -> None:
    enc = codec.encode(sid, ts, v)
    out_sid, out_ts, out_v = codec.decode(enc["series_id"], enc["ts"], enc["m"], enc["enc"])
    assert np.array_equal(out_sid, sid)
    assert np.array_equal(out_ts, ts)
    assert np.array_equal(out_v.view(np.uint64), v.view(np.uint64))  # bit-exact


@st.composite
def sorted_rows(
    draw: st.DrawFn,
) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]:
    n_series = draw(st.integers(1, 5))
    lengths = [draw(st.integers(1, 30)) for _ in range(n_series)]
    sid = np.repeat(np.arange(n_series, dtype=np.uint64) * 7, lengths)
    ts_parts = []
    for n in lengths:
        t = draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n, unique=True))
        ts_parts.append(np.sort(np.array(t, dtype=np.int64)))
    kinds = st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**60), 2**60).map(float),
        st.integers(-(10**9), 10**9).map(lambda i: i / 100),
        st.sampled_from([0.0, -0.0, STALE_NAN, float("nan"), 0.1 + 0.2, 1e300, 5e-324]),
    )
    values = draw(st.lists(kinds, min_size=len(sid), max_size=len(sid)))
    return sid, np.concatenate(ts_parts), np.array(values, dtype=np.float64)


@settings(max_examples=300, deadline=None)
@given(sorted_rows())
def test_roundtrip_is_bit_exact(
    rows: tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]],
) -> None:
    _roundtrip(*rows)


def test_empty() -> None:
    _roundtrip(np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.float64))


def test_decimals_become_small_integers_and_counters_second_order() -> None:
    n = 100
    sid = np.repeat(np.array([1, 2], dtype=np.uint64), n)
    ts = np.tile(np.arange(n, dtype=np.int64) * 10_000, 2)
    gauge = np.round(np.linspace(10, 20, n), 2)
    counter = np.arange(n, dtype=np.float64) * 1000.0
    v = np.concatenate([gauge, counter])
    enc = codec.encode(sid, ts, v)
    assert (enc["enc"][:n] == 2).all()  # two decimals, first-order deltas
    assert (enc["enc"][n:] == 16).all()  # integers, second-order deltas
    assert np.abs(enc["m"][n + 2 :]).max() == 0
    assert (enc["ts"][1:n] == 10_000).all()
    _roundtrip(sid, ts, v)


def test_non_decimal_samples_keep_raw_bits_between_decimal_ones() -> None:
    sid = np.zeros(5, dtype=np.uint64)
    ts = np.arange(5, dtype=np.int64)
    v = np.array([1.5, np.nan, 2.5, STALE_NAN, 0.1 + 0.2])
    enc = codec.encode(sid, ts, v)
    assert enc["enc"][1] == codec.RAW
    assert enc["enc"][3] == codec.RAW
    _roundtrip(sid, ts, v)


def test_segment_starts() -> None:
    sid = np.array([1, 1, 2, 5, 5, 5], dtype=np.uint64)
    assert codec.segment_starts(sid).tolist() == [0, 2, 3]


@pytest.mark.parametrize(
    ("sids", "expected"),
    [
        ([], []),
        ([1, 1, 2], [1, 1, 2]),  # already in order: returned as is
        ([5, 5, 2, 9, 9, 9, 3], [2, 3, 5, 5, 9, 9, 9]),
    ],
)
def test_series_order_moves_whole_series(sids: list[int], expected: list[int]) -> None:
    sid = np.array(sids, dtype=np.uint64)
    ts = np.arange(len(sids), dtype=np.int64)
    values = ts.astype(np.float64) * 2
    s, t, v = codec.series_order(sid, ts, values)
    assert s.tolist() == expected
    # Rows of each series keep their relative order and stay paired with their values.
    assert v.tolist() == (t * 2).astype(np.float64).tolist()
    for x in set(sids):
        assert t[s == x].tolist() == ts[sid == x].tolist()
    if sids == expected:
        assert s is sid
