"""The series index adopts the label sets of a decoder that keeps one object per pair,
also for pairs it first saw from elsewhere (aliases), without holding one per series."""

from __future__ import annotations

import operator
import sys

import pytest

import monitoringserver.metrics.index as index_module
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.model.labels import Labels


def _copy(s: str) -> str:
    """An equal string, another object."""
    return "".join(list(s))


def _fresh(labels: Labels) -> Labels:
    return tuple((_copy(n), _copy(v)) for n, v in labels)


JOB = ("job", "node")
OTHER_JOB = (_copy("job"), _copy("node"))  # the collector's own objects


def _decoder_sets(first: int, count: int) -> list[Labels]:
    """Label sets as a decoder shares them: one ``JOB`` object, names interned."""
    name = ("__name__", "node_load1")
    return [(name, (sys.intern("instance"), f"host-{i}"), JOB) for i in range(first, count)]


def test_pairs_first_shared_from_elsewhere_are_adopted_from_the_next_batch() -> None:
    idx = SeriesIndex()
    idx.resolve_block([(("__name__", "up"), OTHER_JOB)], "self")
    first = _decoder_sets(0, 3)
    _ids, block = idx.resolve_block(first, "rw")
    assert block is not None
    assert not any(map(operator.is_, block.labels, first))  # copies of the shared pairs
    assert block.labels[0][2] is idx.labels_of(0)[1]  # the collector's shared pair
    assert block.labels[0][2] is not JOB
    second = _decoder_sets(3, 6)
    ids, block = idx.resolve_block(second, "rw")
    assert block is not None
    assert all(map(operator.is_, block.labels, second))  # adopted: JOB is an alias now
    assert ids.tolist() == [4, 5, 6]
    assert idx.resolve_block(_decoder_sets(3, 6), "rw")[0].tolist() == [4, 5, 6]
    assert idx.labels_of(5) is second[1]


def test_a_caller_without_shared_pairs_is_never_adopted_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_module, "_MAX_ALIASES", 4)
    idx = SeriesIndex()
    idx.resolve_block([(("__name__", "m"), JOB)], "a")
    for i in range(20):
        labels = _fresh((("__name__", "m"), ("i", str(i)), JOB))
        _ids, block = idx.resolve_block([labels], "b")
        assert block is not None
        assert block.labels[0] is not labels
        assert block.labels[0][2] is idx.labels_of(0)[1]
        assert len(idx._aliases) <= 4


def test_new_pairs_take_interned_names() -> None:
    idx = SeriesIndex()
    name = ("__name__", "m")
    idx.resolve_block([(name, (_copy("zone"), "a"))], "x")
    labels = (name, (sys.intern("zone"), "b"))
    _ids, block = idx.resolve_block([labels], "x")
    assert block is not None
    assert block.labels[0] is labels  # the interned name is the shared one
