from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.errors import BadDataError, CardinalityLimitError
from monitoringserver.metrics.index import SeriesIndex, SeriesLimits
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.matchers import Matcher, MatchOp, matches_all

SERIES: list[Labels] = [
    make_labels({"__name__": "cpu", "host": "a", "mode": "idle"}),
    make_labels({"__name__": "cpu", "host": "b", "mode": "user"}),
    make_labels({"__name__": "cpu", "host": "c"}),
    make_labels({"__name__": "mem", "host": "a"}),
    make_labels({"__name__": "mem", "host": "b", "env": "prod"}),
    make_labels({"__name__": "up", "job": "node", "env": ""}),
]


@pytest.fixture
def index() -> SeriesIndex:
    idx = SeriesIndex()
    ids, created = idx.resolve(SERIES, "src")
    assert ids.tolist() == list(range(len(SERIES)))
    assert [c.series_id for c in created] == list(range(len(SERIES)))
    return idx


M = Matcher
CASES = [
    [M.eq("__name__", "cpu")],
    [M.eq("host", "a")],
    [M.eq("mode", "")],
    [M("mode", MatchOp.NEQ, "idle")],
    [M("mode", MatchOp.NEQ, "")],
    [M("host", MatchOp.RE, "a|b")],
    [M("host", MatchOp.RE, "")],
    [M("host", MatchOp.RE, ".*")],
    [M("host", MatchOp.RE, ".+")],
    [M("mode", MatchOp.RE, "id.*|")],
    [M("host", MatchOp.NRE, "a")],
    [M("env", MatchOp.NRE, "")],
    [M("env", MatchOp.NRE, "prod")],
    [M.eq("__name__", "cpu"), M("host", MatchOp.NRE, "c")],
    [M.eq("__name__", "nope")],
    [M.eq("nolabel", "x")],
    [M("nolabel", MatchOp.NEQ, "x")],
    [M("host", MatchOp.RE, "A")],  # anchored and case-sensitive
    [M("host", MatchOp.RE, "a.")],  # anchored: no prefix match
]


@pytest.mark.parametrize("matchers", CASES, ids=lambda ms: ",".join(map(str, ms)))
def test_select_agrees_with_model_semantics(index: SeriesIndex, matchers: list[Matcher]) -> None:
    expected = [i for i, lbl in enumerate(SERIES) if matches_all(matchers, lbl)]
    assert index.select(matchers).tolist() == expected


def test_resolve_reuses_ids_and_interns(index: SeriesIndex) -> None:
    ids, created = index.resolve([SERIES[3], SERIES[0], SERIES[3]], "other")
    assert ids.tolist() == [3, 0, 3]
    assert created == []
    assert index.labels_of(1) == SERIES[1]
    assert len(index) == len(SERIES)


def test_label_names_and_values(index: SeriesIndex) -> None:
    assert index.label_names() == ["__name__", "env", "host", "job", "mode"]
    assert index.label_values("host") == ["a", "b", "c"]
    mem = index.select([M.eq("__name__", "mem")])
    assert index.label_names(mem) == ["__name__", "env", "host"]
    assert index.label_values("host", mem) == ["a", "b"]
    assert index.label_values("missing") == []


def test_time_ranges_filter_select(index: SeriesIndex) -> None:
    index.observe(np.array([0, 0, 1], dtype=np.uint64), np.array([100, 200, 500], dtype=np.int64))
    assert index.select([M.eq("__name__", "cpu")], 150, 300).tolist() == [0]
    assert index.select([M.eq("__name__", "cpu")], 0, 1000).tolist() == [0, 1]
    lo, hi = index.time_ranges()
    assert (lo[0], hi[0]) == (100, 200)


@pytest.mark.parametrize(
    ("limits", "batch", "source", "message"),
    [
        (SeriesLimits(max_series=3), 4, "s", "total limit is 3 and 0 exist"),
        (SeriesLimits(max_per_source=2), 3, "agent-1", "source 'agent-1'.*limit is 2"),
        (SeriesLimits(max_per_metric=2), 3, "s", "metric 'm'.*limit is 2 and 0 exist"),
    ],
)
def test_limits_refuse_whole_batch(
    limits: SeriesLimits, batch: int, source: str, message: str
) -> None:
    idx = SeriesIndex(limits)
    new = [make_labels({"__name__": "m", "i": str(i)}) for i in range(batch)]
    with pytest.raises(CardinalityLimitError, match=message):
        idx.resolve(new, source)
    assert len(idx) == 0
    idx.resolve(new[:2], source)
    assert len(idx) == 2


def test_per_source_counts_only_that_source() -> None:
    idx = SeriesIndex(SeriesLimits(max_per_source=1))
    idx.resolve([make_labels({"__name__": "a"})], "x")
    idx.resolve([make_labels({"__name__": "b"})], "y")
    with pytest.raises(CardinalityLimitError):
        idx.resolve([make_labels({"__name__": "c"})], "x")


@pytest.mark.parametrize(
    "labels",
    [
        (("job", "x"),),
        (("__name__", "1bad"),),
        (("__name__", "ok"), ("bad-name", "v")),
        (("__name__", "ok"), ("a", "")),
        (("__name__", "ok"), ("b", "1"), ("a", "2")),
    ],
)
def test_invalid_label_sets_are_bad_data(labels: Labels) -> None:
    with pytest.raises(BadDataError):
        SeriesIndex().resolve([labels], "")


def test_load_is_dense_and_idempotent() -> None:
    idx = SeriesIndex()
    idx.load([(0, SERIES[0], "s", 1, 2), (1, SERIES[1], "s", None, None)])
    idx.load([(1, SERIES[1], "s", None, None)])
    assert len(idx) == 2
    with pytest.raises(BadDataError, match="dense"):
        idx.load([(5, SERIES[2], "s", None, None)])
    assert idx.select([M.eq("host", "b")]).tolist() == [1]


def test_limits_count_active_series_only() -> None:
    idx = SeriesIndex(SeriesLimits(max_series=2, max_per_metric=2, max_per_source=2))
    old, _ = idx.resolve([make_labels({"__name__": "m", "i": str(i)}) for i in range(2)], "s")
    idx.observe(old, np.array([100, 100], dtype=np.int64))
    with pytest.raises(CardinalityLimitError, match="total limit is 2 and 2 exist"):
        idx.resolve([make_labels({"__name__": "m", "i": "new"})], "s")
    assert idx.recount_active(since_ms=50) == 2
    assert idx.recount_active(since_ms=1000) == 0  # both went quiet before the horizon
    ids, created = idx.resolve([make_labels({"__name__": "m", "i": "new"})], "s")
    assert ids.tolist() == [2]
    assert len(created) == 1
    assert len(idx) == 3


def test_unattributed_source_has_no_per_source_limit() -> None:
    idx = SeriesIndex(SeriesLimits(max_per_source=1))
    idx.resolve([make_labels({"__name__": "m", "i": str(i)}) for i in range(3)], "")
    assert len(idx) == 3


def test_new_series_of_shared_pairs_is_adopted_and_mixed_ones_share_pairs() -> None:
    idx = SeriesIndex()
    cpu, mem, host_a, host_b = (
        ("__name__", "cpu"),
        ("__name__", "mem"),
        ("host", "a"),
        ("host", "b"),
    )
    idx.resolve([(cpu, host_a), (mem, host_b)], "src")
    combo = (mem, host_a)  # a new series made of pair objects the index holds
    ids, created = idx.resolve([combo], "src")
    assert ids.tolist() == [2]
    assert created[0].labels is combo  # adopted as it is
    fresh = (("__name__", "cpu"), ("zone", "a"))
    [new] = idx.resolve([fresh], "src")[1]
    assert new.labels[0] is cpu  # the known pair is shared, not copied


@pytest.mark.parametrize(
    ("batch", "expected_new"),
    [
        (["a", "b", "k", "c"], ["a", "b", "c"]),  # each new set once: ids in order
        (["a", "b", "a", "k", "b", "a"], ["a", "b"]),  # repeats share the first id
    ],
)
def test_resolve_new_series_in_order_and_repeats(batch: list[str], expected_new: list[str]) -> None:
    idx = SeriesIndex()
    (known,), _ = idx.resolve([make_labels({"__name__": "m", "s": "k"})], "src")
    series = [make_labels({"__name__": "m", "s": s}) for s in batch]
    ids, created = idx.resolve(series, "src")
    assert [dict(c.labels)["s"] for c in created] == expected_new
    assert [c.series_id for c in created] == list(range(1, 1 + len(expected_new)))
    by_name = {dict(c.labels)["s"]: c.series_id for c in created} | {"k": int(known)}
    assert ids.tolist() == [by_name[s] for s in batch]
    again, none = idx.resolve(series, "other")
    assert again.tolist() == ids.tolist()
    assert none == []
    assert idx.select([Matcher("s", MatchOp.EQ, "a")]).tolist() == [by_name["a"]]


def test_resolve_block_creates_one_block_of_the_new_series_in_id_order() -> None:
    idx = SeriesIndex()
    known = make_labels({"__name__": "m", "s": "k"})
    idx.resolve([known], "src")
    batch = [make_labels({"__name__": "m", "s": s}) for s in ("a", "b")]
    ids, block = idx.resolve_block([batch[0], known, batch[1]], "other")
    assert ids.tolist() == [1, 0, 2]
    assert block is not None
    assert (block.first_id, list(block.labels), block.source, len(block)) == (1, batch, "other", 2)
    assert [s.series_id for s in block.new_series()] == [1, 2]
    again, none = idx.resolve_block(batch, "other")
    assert (again.tolist(), none) == ([1, 2], None)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ((("job", "x"),), "has no metric name"),
        ((("__name__", "1bad"),), "cannot accept metric name"),
        ((("__name__", "ok"), ("bad-name", "v")), "cannot accept label name"),
        ((("__name__", "ok"), ("a", "")), "label a is empty"),
        ((("__name__", "ok"), ("b", "1"), ("a", "2")), "not sorted or repeated"),
        ((("__name__", "ok"), ("a", "1"), ("a", "2")), "not sorted or repeated"),
        ((("job", "x"), ("__name__", "ok")), "not sorted or repeated"),  # known pairs only
    ],
)
def test_a_refused_batch_leaves_nothing_behind(bad: Labels, message: str) -> None:
    idx = SeriesIndex()
    idx.resolve([make_labels({"__name__": "ok", "job": "x"})], "src")
    good = make_labels({"__name__": "ok", "job": "new"})
    size = len(idx)
    with pytest.raises(BadDataError, match=message):
        idx.resolve_block([good, bad], "src")
    assert len(idx) == size
    assert "new" not in idx.label_values("job")
    ids, block = idx.resolve_block([good], "src")
    assert ids.tolist() == [size]
    assert block is not None
    assert block.first_id == size


def test_a_limit_refusal_leaves_nothing_behind() -> None:
    idx = SeriesIndex(SeriesLimits(max_series=2))
    new = [make_labels({"__name__": "m", "i": str(i)}) for i in range(3)]
    with pytest.raises(CardinalityLimitError):
        idx.resolve(new, "src")
    assert len(idx) == 0
    assert idx.resolve(new[1:], "src")[0].tolist() == [0, 1]


def test_pairs_of_shared_strings_in_other_tuples_are_shared() -> None:
    idx = SeriesIndex()
    name, value = "zone", "eu"
    idx.resolve([(("__name__", "m"), (name, value))], "src")
    copy = ("".join(["__", "name__"]), "".join(["n"]))  # equal strings, other objects
    [new] = idx.resolve([(copy, ("".join(["zo", "ne"]), "".join(["e", "u"])))], "src")[1]
    assert new.labels[0][0] is idx.labels_of(0)[0][0]  # the shared "__name__"
    assert new.labels[1] is idx.labels_of(0)[1]  # the shared (zone, eu) pair


def test_load_registers_runs_of_sources_and_ranges() -> None:
    idx = SeriesIndex(SeriesLimits(max_per_source=2))
    rows = [
        (0, SERIES[0], "a", 10, 20),
        (1, SERIES[1], "a", None, None),
        (2, SERIES[2], "b", 5, 6),
        (3, SERIES[3], "a", None, None),
    ]
    idx.load(rows)
    idx.load(rows[:2])  # replayed again: already known
    assert len(idx) == 4
    lo, hi = idx.time_ranges()
    assert (lo[[0, 2]].tolist(), hi[[0, 2]].tolist()) == ([10, 5], [20, 6])
    assert idx.select([Matcher.eq("host", "a")]).tolist() == [0, 3]
    with pytest.raises(CardinalityLimitError, match="per-source limit is 2 and 3 exist"):
        idx.resolve([make_labels({"__name__": "x"})], "a")
    assert idx.resolve([make_labels({"__name__": "x"})], "b")[0].tolist() == [4]
    with pytest.raises(BadDataError, match="dense, next is 5"):
        idx.load([(7, SERIES[4], "a", None, None)])
