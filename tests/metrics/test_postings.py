"""Selection over postings agrees with the mask-per-matcher selection it replaced and
with the model's matcher semantics, on random label sets and matcher combinations."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.metrics.labelsets import matcher_mask, selectivity
from monitoringserver.metrics.postings import select_few, select_ids
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.matchers import Matcher, MatchOp, matches_all

NAMES = ("__name__", "a", "b", "c")
VALUES = ("x", "y", "z", "xy")
PATTERNS = ("x", "x|y", ".*", ".+", "", "x.*", "y|", "[xz]")

label_sets = st.lists(
    st.dictionaries(st.sampled_from(NAMES[1:]), st.sampled_from(VALUES), max_size=3).map(
        lambda d: {"__name__": "m", **d}
    ),
    max_size=40,
).map(lambda sets: list(dict.fromkeys(make_labels(d) for d in sets)))


@st.composite
def matchers(draw: st.DrawFn) -> Matcher:
    op = draw(st.sampled_from(list(MatchOp)))
    name = draw(st.sampled_from((*NAMES, "missing")))
    if op in (MatchOp.RE, MatchOp.NRE):
        return Matcher(name, op, draw(st.sampled_from(PATTERNS)))
    return Matcher(name, op, draw(st.sampled_from(("", *VALUES, "m"))))


def old_select(index: SeriesIndex, ms: list[Matcher]) -> list[int]:
    """The selection this module replaced: one full-length mask per matcher."""
    n = len(index)
    mask = np.ones(n, dtype=np.bool_)
    for m in sorted(ms, key=selectivity):
        mask &= matcher_mask(index._postings.get(m.name, {}), m, n)
    return np.flatnonzero(mask).tolist()


def build(sets: list[Labels]) -> SeriesIndex:
    index = SeriesIndex()
    index.resolve(sets, "src")
    return index


@settings(max_examples=300, deadline=None)
@given(sets=label_sets, ms=st.lists(matchers(), max_size=4), probe_max=st.sampled_from((0, 3, 64)))
def test_select_ids_agrees_with_masks_and_model(
    sets: list[Labels], ms: list[Matcher], probe_max: int
) -> None:
    index = build(sets)
    got = select_ids(index._postings, index._labels, ms, len(sets), probe_max=probe_max)
    assert got.dtype == np.uint64
    expected = [i for i, lbl in enumerate(sets) if matches_all(ms, lbl)]
    assert got.tolist() == expected == old_select(index, ms)


@settings(max_examples=200, deadline=None)
@given(
    sets=label_sets,
    ms=st.lists(matchers(), max_size=4),
    limit=st.integers(0, 8),
    scan=st.integers(0, 20),
)
def test_select_few_is_select_ids_or_declines(
    sets: list[Labels], ms: list[Matcher], limit: int, scan: int
) -> None:
    index = build(sets)
    got = select_few(index._postings, index._labels, ms, limit, scan)
    expected = [i for i, lbl in enumerate(sets) if matches_all(ms, lbl)]
    eq = [m for m in ms if m.op is MatchOp.EQ and m.value]
    candidates = [lbl for lbl in sets if matches_all(eq, lbl)]
    lists = [index._postings.get(m.name, {}).get(m.value) for m in eq]
    declines = (
        bool(eq)
        and all(lists)
        and (
            min(map(len, lists)) > scan or len(candidates) > limit  # type: ignore[arg-type]
        )
    )
    if not eq or declines:
        assert got is None
        return
    assert got is not None
    assert got.tolist() == expected
    assert len(got) <= limit


@settings(max_examples=100, deadline=None)
@given(sets=label_sets, ms=st.lists(matchers(), max_size=3), lo=st.integers(0, 50))
def test_select_with_time_range_keeps_series_overlapping_it(
    sets: list[Labels], ms: list[Matcher], lo: int
) -> None:
    index = build(sets)
    ids = np.arange(len(sets), dtype=np.uint64)
    ts = (ids.astype(np.int64) * 3) % 50  # one sample per series: its own min and max
    index.observe(ids, ts)
    got = index.select(ms, lo, lo + 10).tolist()
    assert got == [
        i for i, lbl in enumerate(sets) if matches_all(ms, lbl) and lo <= ts[i] <= lo + 10
    ]


M = Matcher
BIG = [make_labels({"__name__": "m", "h": str(i % 50), "k": str(i % 7)}) for i in range(350)]
CASES = [
    [M.eq("h", "3"), M.eq("k", "3")],  # one candidate
    [M.eq("h", "3"), M.eq("k", "4")],  # none
    [M.eq("h", "3"), M.eq("k", "4"), M.eq("__name__", "m")],  # none after the first probe
    [M.eq("__name__", "m"), M("k", MatchOp.NEQ, "2")],  # many candidates, != probe
    [M.eq("__name__", "m"), M("h", MatchOp.RE, "1.")],  # many candidates, regex mask
    [M.eq("__name__", "m"), M("h", MatchOp.NRE, "1.|2"), M.eq("k", "1")],
    [M.eq("h", "9"), M("k", MatchOp.RE, "[0-3]"), M("h", MatchOp.NEQ, "")],  # probed sets
    [M.eq("h", "9"), M.eq("absent", "")],  # absent label matches ""
    [M.eq("h", "9"), M("absent", MatchOp.NEQ, "")],
    [M.eq("__name__", "m"), M("absent", MatchOp.NEQ, "")],  # != "": the label must be there
    [M.eq("__name__", "m"), M("h", MatchOp.NEQ, "")],
    [M("k", MatchOp.NEQ, "1")],  # negative only: masks
    [M.eq("h", "nope"), M("k", MatchOp.NEQ, "1")],
    [],
]


@pytest.mark.parametrize("ms", CASES, ids=lambda ms: ",".join(map(str, ms)) or "none")
def test_select_on_many_series(ms: list[Matcher]) -> None:
    index = build(BIG)
    expected = [i for i, lbl in enumerate(BIG) if matches_all(ms, lbl)]
    assert index.select(ms).tolist() == expected == old_select(index, ms)


def test_selected_ids_do_not_pin_the_postings() -> None:
    """Results are copies: the index can still append to the lists they came from."""
    index = build(BIG[:10])
    held = [index.select([M.eq("h", "3")]), index.select([M.eq("h", "3"), M.eq("k", "3")])]
    ids, _ = index.resolve([make_labels({"__name__": "m", "h": "3", "k": "9"})], "src")
    assert index.select([M.eq("h", "3")]).tolist() == [*held[0].tolist(), int(ids[0])]
