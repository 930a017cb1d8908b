"""The series index's value types and the check of one new label set.

:class:`SeriesLimits` (cardinality limits), :class:`NewSeries` and :class:`SeriesBlock`
(series created by :meth:`~monitoringserver.metrics.index.SeriesIndex.resolve_block`, to
be persisted with their samples), :func:`validate_label_set` (the rules every stored
label set follows: a valid metric name, valid label names in ascending order without
repeats, no empty values).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import (
    METRIC_NAME,
    Labels,
    validate_label_name,
    validate_metric_name,
)

__all__ = [
    "NewSeries",
    "SeriesBlock",
    "SeriesLimits",
    "count_names",
    "metric_of",
    "pair_ok",
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
