"""Series kept in store order with a label-order permutation, and the identity memo.

A packed querier returns series in an order unrelated to their labels (like a store's
series ids); every result must equal the one computed from label-sorted input.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pytest

from monitoringserver.metrics.api import (
    PackedSeries,
    Resolution,
    RollupSeries,
    SeriesData,
    StoreStats,
)
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.matchers import Matcher, matches_all
from monitoringserver.model.samples import STALE_NAN
from monitoringserver.promql import Engine
from monitoringserver.promql.memo import MIN_SERIES, LabelsMemo
from monitoringserver.promql.packed import pack, reorder

T0 = 1_000_000_000


class ShuffledQuerier:
    """Series in a fixed shuffled order; ``packed`` decides whether ``select_packed`` exists."""

    def __init__(self, series: list[SeriesData], seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(series))
        self.series_list = [series[i] for i in order.tolist()]

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        out = []
        for s in self.series_list:
            if not matches_all(list(matchers), s.labels):
                continue
            keep = (s.ts_ms >= start_ms) & (s.ts_ms <= end_ms)
            if keep.any():
                out.append(SeriesData(s.labels, s.ts_ms[keep], s.values[keep]))
        return out

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        return []

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, start_ms, end_ms)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return []

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        return []

    def stats(self) -> StoreStats:
        return StoreStats(len(self.series_list), 0, {}, 0, None, None)


class PackedShuffledQuerier(ShuffledQuerier):
    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        got = self.select(matchers, start_ms, end_ms)
        data = pack([s.ts_ms for s in got], [s.values for s in got])
        return PackedSeries([s.labels for s in got], data.offsets, data.ts, data.values)


def _workload(hosts: int) -> list[SeriesData]:
    rng = np.random.default_rng(7)
    out = []
    for h in range(hosts):
        for cpu in range(3):
            labels = make_labels(
                {"__name__": "cpu_total", "instance": f"h{h:03d}", "cpu": str(cpu), "job": "n"}
            )
            ts = T0 + np.arange(40, dtype=np.int64) * 10_000
            values = np.cumsum(rng.uniform(0, 5, 40))
            values[25:] -= values[24] * (h % 7 == 0)  # some counter resets
            if h % 11 == 0:
                values[30] = STALE_NAN
            out.append(SeriesData(labels, ts, values))
    return out


QUERIES = [
    "cpu_total",
    "rate(cpu_total[1m])",
    "sum by (instance) (rate(cpu_total[1m]))",
    "sum without (cpu) (increase(cpu_total[2m]))",
    "max by (cpu) (cpu_total)",
    "topk(3, cpu_total)",
    "last_over_time(cpu_total[1m])",
    "sum(rate(cpu_total[1m]))",
    'cpu_total{cpu="0" or instance="h001"}',
    "increase(cpu_total[1m] anchored)",
    "cpu_total smoothed",
    "rate(cpu_total[1m] smoothed)",
    "rate(cpu_total[1m]) / ignoring(cpu) group_left sum without (cpu) (rate(cpu_total[1m]))",
    "cpu_total * on(instance, cpu, job) cpu_total",
    "cpu_total > bool on(instance, cpu) (cpu_total offset 1m)",
    "cpu_total + on(instance) group_left fill(0) max by (instance) (cpu_total)",
]


def _results(
    querier: ShuffledQuerier, query: str, instant: bool
) -> list[tuple[Labels, list[float]]]:
    engine = Engine(querier)
    end = T0 + 390_000
    res = engine.instant(query, end) if instant else engine.range(query, T0, end, 15_000)
    return [(s.labels, s.values.tolist()) for s in res.series]


@pytest.mark.parametrize("instant", [False, True])
@pytest.mark.parametrize("query", QUERIES)
def test_store_order_gives_label_order_results(query: str, instant: bool) -> None:
    series = _workload(120)  # 360 series: above the memo threshold
    reference = _results(ShuffledQuerier(sorted(series, key=lambda s: s.labels), 0), query, instant)
    for seed in (1, 2):
        for querier in (ShuffledQuerier(series, seed), PackedShuffledQuerier(series, seed)):
            got = _results(querier, query, instant)
            assert len(got) == len(reference)
            if query.startswith("topk") or not instant:
                got_map, ref_map = dict(got), dict(reference)
                assert got_map.keys() == ref_map.keys()
                for k, v in ref_map.items():
                    np.testing.assert_allclose(got_map[k], v, rtol=1e-12)
            else:
                assert [k for k, _ in got] == [k for k, _ in reference]
                for (_, a), (_, b) in zip(got, reference, strict=True):
                    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_repeated_query_hits_memo_and_stays_equal() -> None:
    querier = PackedShuffledQuerier(_workload(120), 3)
    first = _results(querier, "sum by (instance) (rate(cpu_total[1m]))", False)
    again = _results(querier, "sum by (instance) (rate(cpu_total[1m]))", False)
    assert first == again


def test_reorder_moves_whole_series() -> None:
    data = pack(
        [np.array([1, 2], dtype=np.int64), np.array([5], dtype=np.int64), np.array([7, 8, 9])],
        [np.array([1.0, 2.0]), np.array([5.0]), np.array([7.0, 8.0, 9.0])],
    )
    out = reorder(data, np.array([2, 0, 1], dtype=np.intp))
    assert out.offsets.tolist() == [0, 3, 5, 6]
    assert out.ts.tolist() == [7, 8, 9, 1, 2, 5]
    assert out.values.tolist() == [7.0, 8.0, 9.0, 1.0, 2.0, 5.0]


def _labels(n: int, tag: str = "") -> list[Labels]:
    return [(("a", f"{tag}{i:05d}"),) for i in range(n)]


def test_memo_caches_by_identity_not_equality() -> None:
    memo: LabelsMemo[int] = LabelsMemo()
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    labels = _labels(MIN_SERIES)
    assert memo.get(labels, "k", compute) == 1
    assert memo.get(list(labels), "k", compute) == 1  # same tuple objects
    assert memo.get(labels, "other", compute) == 2  # another extra key
    copies = [tuple(list(lbl)) for lbl in labels]  # equal, but other objects
    assert copies == labels
    assert memo.get(copies, "k", compute) == 3
    small = _labels(MIN_SERIES - 1)
    before = len(calls)
    memo.get(small, "k", compute)
    memo.get(small, "k", compute)
    assert len(calls) == before + 2  # small lists are never cached


def test_memo_evicts_by_entries_and_series() -> None:
    memo: LabelsMemo[int] = LabelsMemo(max_entries=2, max_series=3 * MIN_SERIES)
    lists = [_labels(MIN_SERIES, str(k)) for k in range(3)]
    for k, labels in enumerate(lists):
        memo.get(labels, None, functools.partial(int, k))
    assert len(memo) == 2
    assert memo.get(lists[0], None, lambda: 99) == 99  # evicted, recomputed
    big = _labels(4 * MIN_SERIES, "big")
    assert memo.get(big, None, lambda: 7) == 7
    assert memo.get(big, None, lambda: 8) == 8  # larger than the bound: not kept
    medium = _labels(2 * MIN_SERIES, "m")
    memo.get(medium, None, lambda: 5)
    assert len(memo) == 2  # the series bound evicted the oldest entry
    assert memo.get(lists[2], None, lambda: 42) == 42


def _gauges(n: int, extra: dict[str, str]) -> list[SeriesData]:
    ts = T0 + np.arange(10, dtype=np.int64) * 10_000
    return [
        SeriesData(
            make_labels({"__name__": name, "i": f"{name}{i:04d}", **extra}),
            ts,
            np.arange(10, dtype=np.float64),
        )
        for name in ("b_gauge", "a_gauge", "c_total")
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [3, 150])  # below and above the memo threshold
@pytest.mark.parametrize("extra", [{}, {"Upper": "x"}])  # "Upper" sorts before __name__
def test_counter_info_once_per_name_in_name_order(n: int, extra: dict[str, str]) -> None:
    querier = PackedShuffledQuerier(_gauges(n, extra), 5)
    for _ in range(2):  # the second run answers from the memo
        res = Engine(querier).instant('rate({__name__=~".+_gauge|c_total"}[1m])', T0 + 90_000)
        assert [i.split(": ")[-1].split(" (")[0] for i in res.infos] == ['"a_gauge"', '"b_gauge"']
        assert all("might not be a counter" in i for i in res.infos)
        assert len(res.series) == 3 * n


def test_empty_time_range_selects_nothing() -> None:
    from monitoringserver.model.matchers import MatchOp
    from monitoringserver.promql.selectors import Loader
    from monitoringserver.promql.values import QueryStats

    loader = Loader(PackedShuffledQuerier(_workload(2), 0), QueryStats(), 10**6, 10**6)
    sel = loader.load_matchers([Matcher("__name__", MatchOp.EQ, "cpu_total")], 10, 5)
    assert sel.labels == []
    assert sel.series() == []
    assert sel.in_label_order() is sel


def test_name_codes_need_the_name_first() -> None:
    from monitoringserver.promql.functions import _name_codes

    assert _name_codes([(), (("__name__", "a"),)]) is None
    assert _name_codes([(("A", "x"), ("__name__", "a"))]) is None
    coded = _name_codes([(("__name__", "b"),), (("__name__", "a"),)])
    assert coded is not None
    assert coded[0] == ["a", "b"]
    assert coded[1].tolist() == [1, 0]


@pytest.mark.parametrize("hosts", [1, 2, 3, 40])  # 3..120 series: row by row and grouped
@pytest.mark.parametrize("seed", [1, 2])
def test_range_result_matches_instant_queries_step_by_step(hosts: int, seed: int) -> None:
    series = _workload(hosts)
    engine = Engine(PackedShuffledQuerier(series, seed))
    end, step = T0 + 390_000, 15_000
    got = engine.range("cpu_total", T0, end, step)
    expected: dict[Labels, list[tuple[int, float]]] = {}
    for t in range(T0, end + 1, step):
        for s in engine.instant("cpu_total", t).series:
            expected.setdefault(s.labels, []).append((t, float(s.values[0])))
    assert [s.labels for s in got.series] == sorted(expected)
    for s in got.series:
        assert list(zip(s.ts_ms.tolist(), s.values.tolist(), strict=True)) == expected[s.labels]
