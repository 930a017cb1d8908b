"""Packed series, all-series window bounds and the vectorised counter functions.

Each vectorised path is checked against a plain per-series / per-window reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from monitoringserver.model.samples import STALE_NAN
from monitoringserver.promql.counters import extrapolated, reset_correction
from monitoringserver.promql.packed import Packed, pack, upper_bounds
from monitoringserver.promql.values import Matrix, RangeSeries
from monitoringserver.promql.windows import RangeArgs

I64 = NDArray[np.int64]


def _random_series(
    rng: np.random.Generator, n: int, max_len: int, t0: int = 1_000_000
) -> list[tuple[I64, NDArray[np.float64]]]:
    out = []
    for _ in range(n):
        k = int(rng.integers(0, max_len + 1))
        ts = np.unique(rng.integers(t0, t0 + 600_000, k)).astype(np.int64)
        out.append((ts, rng.uniform(0, 100, len(ts))))
    return out


def _naive_upper(series: list[tuple[I64, NDArray[np.float64]]], t: I64) -> I64:
    out = np.empty((len(series), len(t)), dtype=np.int64)
    offset = 0
    for i, (ts, _) in enumerate(series):
        out[i] = np.searchsorted(ts, t, side="right") + offset
        offset += len(ts)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    "times",
    [
        "grid",  # many cells, regular grid: counted
        "irregular",  # many cells, ascending but irregular: counted with searchsorted
        "few",  # one step: binary search over composite keys
        "unsorted",  # not ascending: composite keys
    ],
)
def test_upper_bounds_match_per_series_search(seed: int, times: str) -> None:
    rng = np.random.default_rng(seed)
    series = _random_series(rng, int(rng.integers(1, 40)), 30)
    if times == "grid":
        t = np.arange(990_000, 1_610_000, 15_000, dtype=np.int64)
    elif times == "irregular":
        t = np.sort(rng.integers(990_000, 1_610_000, 50)).astype(np.int64)
    elif times == "few":
        t = np.array([1_300_000], dtype=np.int64)
    else:
        t = rng.integers(990_000, 1_610_000, 20).astype(np.int64)
    p = pack([s[0] for s in series], [s[1] for s in series])
    (got,) = upper_bounds(p, t)
    assert np.array_equal(got, _naive_upper(series, t))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("step", "range_ms", "jitter"),
    [
        (15_000, 300_000, False),  # starts and ends on one regular grid
        (47_157, 300_000, False),  # two disjoint grids with one spacing
        (15_000, 300_000, True),  # irregular times: searched
    ],
)
def test_window_bounds_of_starts_and_ends_together(
    seed: int, step: int, range_ms: int, jitter: bool
) -> None:
    rng = np.random.default_rng(seed)
    series = _random_series(rng, 30, 40)
    ends = np.arange(1_000_000, 1_600_000, step, dtype=np.int64)
    if jitter:
        ends = np.sort(ends + rng.integers(0, 5, len(ends)))
    p = pack([s[0] for s in series], [s[1] for s in series])
    lo, hi = upper_bounds(p, ends - range_ms, ends)
    assert np.array_equal(lo, _naive_upper(series, ends - range_ms))
    assert np.array_equal(hi, _naive_upper(series, ends))


@pytest.mark.parametrize("ascending", [True, False])
def test_upper_bounds_of_few_long_series(ascending: bool) -> None:
    rng = np.random.default_rng(3)
    series = []
    for _ in range(3):
        ts = np.unique(rng.integers(0, 10_000_000, 5000)).astype(np.int64)
        series.append((ts, np.zeros(len(ts))))
    t = np.arange(0, 10_000_000, 50_000, dtype=np.int64)
    if not ascending:
        t = t[::-1].copy()
    p = pack([s[0] for s in series], [s[1] for s in series])
    (got,) = upper_bounds(p, t)
    assert np.array_equal(got, _naive_upper(series, t))


@pytest.mark.parametrize(
    "t",
    [
        np.arange(0, 1_000_000, 10_000, dtype=np.int64),  # a grid
        np.arange(1_000_000, 0, -7_000, dtype=np.int64),  # descending
        np.array([500_000], dtype=np.int64),  # one step
        np.array([-5, 2**62, 3], dtype=np.int64),  # unordered, beyond the samples
        np.empty(0, dtype=np.int64),  # no step
    ],
)
@pytest.mark.parametrize("length", [1, 7, 5000])
def test_upper_bounds_of_one_series(t: I64, length: int) -> None:
    rng = np.random.default_rng(length)
    ts = np.unique(rng.integers(0, 1_000_000, length)).astype(np.int64)
    series = [(ts, np.zeros(len(ts)))]
    p = pack([ts], [np.zeros(len(ts))])
    got = upper_bounds(p, t, t[::-1])
    assert [g.shape for g in got] == [(1, len(t))] * 2
    assert np.array_equal(got[0], _naive_upper(series, t))
    assert np.array_equal(got[1], _naive_upper(series, t[::-1]))


def test_upper_bounds_with_repeated_times() -> None:
    series = _random_series(np.random.default_rng(9), 20, 50)
    p = pack([s[0] for s in series], [s[1] for s in series])
    t = np.full(60, 1_300_000, dtype=np.int64)
    (got,) = upper_bounds(p, t)
    assert np.array_equal(got, _naive_upper(series, t))


def test_upper_bounds_handle_extreme_timestamps() -> None:
    series = [
        (np.array([-(2**61), 0, 2**61], dtype=np.int64), np.zeros(3)),
        (np.array([5], dtype=np.int64), np.ones(1)),
    ]
    p = pack([s[0] for s in series], [s[1] for s in series])
    t = np.array([3, -(2**60), 2**62], dtype=np.int64)
    (got,) = upper_bounds(p, t)
    assert np.array_equal(got, _naive_upper(series, t))


@pytest.mark.parametrize("series", [[], [(np.empty(0, np.int64), np.empty(0))]])
def test_upper_bounds_without_samples(series: list[tuple[I64, NDArray[np.float64]]]) -> None:
    p = pack([s[0] for s in series], [s[1] for s in series])
    (got,) = upper_bounds(p, np.array([1, 2], dtype=np.int64))
    assert got.shape == (len(series), 2)
    assert not got.any()


def test_without_stale_drops_markers_and_keeps_offsets() -> None:
    p = pack(
        [np.array([1, 2, 3], np.int64), np.array([4], np.int64), np.array([5, 6], np.int64)],
        [np.array([1.0, STALE_NAN, 3.0]), np.array([STALE_NAN]), np.array([math.nan, 6.0])],
    )
    clean = p.without_stale()
    assert clean.ts.tolist() == [1, 3, 5, 6]
    assert clean.offsets.tolist() == [0, 2, 2, 4]
    assert math.isnan(clean.values[2])
    assert clean.without_stale() is clean


def test_matrix_series_are_views_of_the_packed_data() -> None:
    eff = np.array([10], dtype=np.int64)
    src = [
        RangeSeries((("a", "1"),), np.array([1, 2], np.int64), np.array([1.0, 2.0]), True),
        RangeSeries((("a", "2"),), np.array([3], np.int64), np.array([3.0])),
    ]
    m = Matrix.of(src, eff, 5)
    assert m.drop_name.tolist() == [True, False]
    back = m.series
    assert [s.labels for s in back] == [s.labels for s in src]
    assert [s.ts.tolist() for s in back] == [[1, 2], [3]]
    assert [s.drop_name for s in back] == [True, False]
    assert isinstance(m.data, Packed)


def _naive_resets(values: NDArray[np.float64], first: int, last: int) -> float:
    total = 0.0
    for k in range(first + 1, last + 1):
        if values[k] < values[k - 1]:
            total += float(values[k - 1])
    return total


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("many_windows", [True, False])
def test_reset_correction_matches_a_loop(seed: int, many_windows: bool) -> None:
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.uniform(0, 5, 400))
    values[rng.integers(0, 400, 12)] = rng.uniform(0, 3, 12)  # resets
    starts = np.array([0, 100, 250], dtype=np.intp)
    bounds = [(0, 100), (100, 250), (250, 400)]
    windows = 2000 if many_windows else 20
    firsts, lasts = [], []
    for _ in range(windows):
        a, b = bounds[int(rng.integers(0, 3))]
        f = int(rng.integers(a, b))
        firsts.append(f)
        lasts.append(int(rng.integers(f, b)))
    first, last = np.array(firsts, np.intp), np.array(lasts, np.intp)
    got = reset_correction(values, first, last, starts)
    want = [_naive_resets(values, f, la) for f, la in zip(firsts, lasts, strict=True)]
    assert got == pytest.approx(want, rel=1e-12)
    assert reset_correction(values, first, last) == pytest.approx(want, rel=1e-12)


def test_reset_correction_without_resets_is_zero() -> None:
    values = np.arange(10.0)
    idx = np.array([0, 3], dtype=np.intp)
    assert not reset_correction(values, idx, idx + 5).any()
    assert not reset_correction(values[:1], idx[:1] * 0, idx[:1] * 0).any()


def _go_rate(
    ts: I64, vs: NDArray[np.float64], end: int, range_ms: int, counter: bool, rate: bool
) -> float:
    """Prometheus' extrapolatedRate, sample by sample as its Go code reads."""
    result = float(vs[-1] - vs[0])
    if counter:
        prev = float(vs[0])
        for v in vs[1:]:
            if v < prev:
                result += prev
            prev = float(v)
    start = end - range_ms
    to_start = (int(ts[0]) - start) / 1000
    to_end = (end - int(ts[-1])) / 1000
    sampled = (int(ts[-1]) - int(ts[0])) / 1000
    avg = sampled / (len(ts) - 1)
    if to_start >= avg * 1.1:
        to_start = avg / 2
    if counter and result > 0 and vs[0] >= 0:
        to_zero = sampled * (float(vs[0]) / result)
        to_start = min(to_start, to_zero)
    if to_end >= avg * 1.1:
        to_end = avg / 2
    factor = (sampled + to_start + to_end) / sampled
    if rate:
        factor /= range_ms / 1000
    return result * factor


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("counter", "rate"), [(True, True), (True, False), (False, False)], ids=["rate", "inc", "delta"]
)
def test_extrapolated_matches_go_reference(seed: int, counter: bool, rate: bool) -> None:
    rng = np.random.default_rng(seed)
    series = _random_series(rng, 25, 40)
    series = [
        (ts, np.cumsum(rng.uniform(-1 if not counter else 0, 9, len(ts)))) for ts, _ in series
    ]
    for _ts, vs in series[::5]:
        if len(vs) > 3:
            vs[len(vs) // 2] = 0.5  # a counter reset
    p = pack([s[0] for s in series], [s[1] for s in series])
    eff = np.arange(1_000_000, 1_700_000, 20_000, dtype=np.int64)
    range_ms = 120_000
    lo, hi = upper_bounds(p, eff - range_ms, eff)
    args = RangeArgs(p.ts, p.values, lo, hi, eff, range_ms, eff, [], p.starts())
    got, ok = extrapolated(counter, rate)(args)
    for i, (ts, vs) in enumerate(series):
        for j, end in enumerate(eff.tolist()):
            inside = (ts > end - range_ms) & (ts <= end)
            assert ok[i, j] == (inside.sum() >= 2)
            if ok[i, j]:
                want = _go_rate(ts[inside], vs[inside], end, range_ms, counter, rate)
                assert got[i, j] == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_extrapolated_with_no_full_window() -> None:
    p = pack([np.array([5], np.int64)], [np.array([1.0])])
    lo, hi = upper_bounds(p, np.array([0], np.int64), np.array([10], np.int64))
    args = RangeArgs(p.ts, p.values, lo, hi, np.array([10], np.int64), 10, lo[0], [])
    values, ok = extrapolated(True, True)(args)
    assert not ok.any()
    assert values.shape == (1, 1)
