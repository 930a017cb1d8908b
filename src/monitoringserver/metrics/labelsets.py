"""The series index's value types, its checks of new label sets and its matcher masks.

:class:`SeriesLimits` (cardinality limits), :class:`NewSeries` and :class:`SeriesBlock`
(series created by :meth:`~monitoringserver.metrics.index.SeriesIndex.resolve_block`, to
be persisted with their samples), :func:`validate_label_set` (the rules every stored
label set follows: a valid metric name, valid label names in ascending order without
repeats, no empty values).
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, CardinalityLimitError
from monitoringserver.model.labels import (
    METRIC_NAME,
    Labels,
    validate_label_name,
    validate_metric_name,
)
from monitoringserver.model.matchers import Matcher, MatchOp

__all__ = [
    "CheckedSets",
    "NewSeries",
    "SeriesBlock",
    "SeriesLimits",
    "check_limits",
    "count_names",
    "matcher_mask",
    "metric_of",
    "pair_ok",
    "selectivity",
    "validate_label_set",
]


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """0 means unlimited."""

    max_series: int = 0
    max_per_metric: int = 0
    max_per_source: int = 0


@dataclass(frozen=True, slots=True)
class NewSeries:
    """A series created by the index, to be persisted with its samples."""

    series_id: int
    labels: Labels
    source: str


@dataclass(frozen=True, slots=True)
class SeriesBlock:
    """Series created together (by one ``SeriesIndex.resolve_block``): ids
    ``first_id``, ``first_id + 1``, ... in the order of ``labels``, all by ``source``.
    One object per call instead of one per series, so creating many series costs no
    per-series objects beyond the label sets."""

    first_id: int
    labels: Sequence[Labels]
    source: str

    def __len__(self) -> int:
        return len(self.labels)

    def new_series(self) -> list[NewSeries]:
        """The block as one :class:`NewSeries` per series."""
        first, source = self.first_id, self.source
        return [NewSeries(first + i, lbls, source) for i, lbls in enumerate(self.labels)]


def metric_of(labels: Labels) -> str:
    """The metric name of a label set (``""`` without one)."""
    for name, value in labels:
        if name == METRIC_NAME:
            return value
    return ""


def validate_label_set(labels: Labels, valid: set[str]) -> None:
    """Check one new label set; ``valid`` caches names (metric names prefixed ``=``)
    that passed already, so steady churn does not re-run the regular expressions."""
    name = metric_of(labels)
    if not name:
        raise BadDataError(f"cannot accept series {labels!r}: it has no metric name")
    if "=" + name not in valid:
        validate_metric_name(name)
        valid.add("=" + name)
    previous = ""
    for label, value in labels:
        if label not in valid:
            validate_label_name(label)
            valid.add(label)
        if label <= previous and previous:
            raise BadDataError(f"cannot accept series {labels!r}: labels not sorted or repeated")
        if value == "":
            raise BadDataError(f"cannot accept series {labels!r}: label {label} is empty")
        previous = label


def pair_ok(pair: tuple[str, str], valid: set[str]) -> bool:
    """Whether a pair not seen before may be part of a stored label set: a valid name
    (and metric name, for ``__name__``) and a value. ``valid`` caches names as in
    :func:`validate_label_set`."""
    name, value = pair
    try:
        if name not in valid:
            validate_label_name(name)
            valid.add(name)
        if name == METRIC_NAME and "=" + value not in valid:
            validate_metric_name(value)
            valid.add("=" + value)
    except BadDataError:
        return False
    return value != ""


def count_names(numbers: NDArray[np.uint32], names: list[str]) -> Counter[str]:
    """How many times each of ``names`` is referred to by number in ``numbers``."""
    if len(numbers) == 0:
        return Counter()
    counts = np.bincount(numbers, minlength=len(names)).tolist()
    return Counter({names[i]: c for i, c in enumerate(counts) if c})


class CheckedSets(NamedTuple):
    """What the index found checking new label sets: their pairs laid end to end, each
    pair's entry in the index (``None`` when new), the new pairs, each set's size and
    each set's metric name."""

    flat: list[tuple[str, str]]
    found: list[Any]
    unseen: set[tuple[str, str]]
    counts: list[int]
    metrics: list[str]


def check_limits(
    lim: SeriesLimits,
    *,
    active: int,
    per_source: Mapping[str, int],
    per_metric: Mapping[str, int],
    new: int,
    source: str,
    by_metric: Counter[str],
) -> None:
    """Raise :class:`CardinalityLimitError` unless ``new`` series (``by_metric`` of each
    metric name) from ``source`` fit the limits, given the active series counted in
    total, per source and per metric name."""
    if lim.max_series and active + new > lim.max_series:
        raise CardinalityLimitError(
            f"cannot create {new} series: the total limit is {lim.max_series} and {active} exist"
        )
    if lim.max_per_source and source:  # "" means "not attributed": no per-source limit
        have = per_source.get(source, 0)
        if have + new > lim.max_per_source:
            raise CardinalityLimitError(
                f"cannot create {new} series for source {source!r}: the per-source "
                f"limit is {lim.max_per_source} and {have} exist"
            )
    if lim.max_per_metric:
        for name, count in by_metric.items():
            have = per_metric.get(name, 0)
            if have + count > lim.max_per_metric:
                raise CardinalityLimitError(
                    f"cannot create {count} series of metric {name!r}: the per-metric "
                    f"limit is {lim.max_per_metric} and {have} exist"
                )


def matcher_mask(values: Mapping[str, array[int]], m: Matcher, n: int) -> NDArray[np.bool_]:
    """Which of ``n`` series ids match ``m``, given the postings (value → ascending ids)
    of its label name. A series without the label sees ``""``."""
    if m.matches_empty():
        # Start from everything and knock out series whose value does not match.
        mask = np.ones(n, dtype=np.bool_)
        if m.op is MatchOp.NEQ:
            hit = values.get(m.value)
            if hit is not None:
                mask[np.frombuffer(hit, dtype=np.uint64)[: len(hit)]] = False
            return mask
        for value, ids in values.items():
            if not m.matches(value):
                mask[np.frombuffer(ids, dtype=np.uint64)] = False
        return mask
    mask = np.zeros(n, dtype=np.bool_)
    if m.op is MatchOp.EQ:
        hit = values.get(m.value)
        if hit is not None:
            mask[np.frombuffer(hit, dtype=np.uint64)] = True
        return mask
    for value, ids in values.items():
        if m.matches(value):
            mask[np.frombuffer(ids, dtype=np.uint64)] = True
    return mask


def selectivity(m: Matcher) -> int:
    """Evaluate cheap, selective matchers first."""
    return {MatchOp.EQ: 0, MatchOp.RE: 1, MatchOp.NEQ: 2, MatchOp.NRE: 3}[m.op]
