"""Internal value types of the evaluator and the public query result types.

Every intermediate value covers *all* evaluation steps of the current node at once:
an instant vector is a ``[series, steps]`` float matrix plus a presence mask (NaN is a
valid sample value, so absence cannot be encoded as NaN). Timestamps are int64
milliseconds since the Unix epoch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics.api import SeriesData
from monitoringserver.model.labels import Labels
from monitoringserver.promql.packed import Packed, pack, upper_bounds

__all__ = [
    "FlatWindows",
    "Matrix",
    "QueryStats",
    "RangeSeries",
    "Result",
    "ResultSeries",
    "Scalar",
    "String",
    "Value",
    "Vector",
    "any_rows",
]

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
B = NDArray[np.bool_]


@dataclass(slots=True)
class Vector:
    """An instant vector over all steps.

    ``values`` and ``present`` have shape ``[len(labels), steps]``. ``drop_name`` marks
    series whose ``__name__`` is removed when the query finishes (Prometheus' delayed
    name removal), so label functions and ``by (__name__)`` still see it.
    """

    labels: list[Labels]
    values: F64
    present: B
    drop_name: B

    @classmethod
    def empty(cls, steps: int) -> Vector:
        return cls(
            [],
            np.empty((0, steps), dtype=np.float64),
            np.zeros((0, steps), dtype=np.bool_),
            np.zeros(0, dtype=np.bool_),
        )

    def take(self, index: NDArray[np.intp] | list[int]) -> Vector:
        idx = np.asarray(index, dtype=np.intp)
        return Vector(
            [self.labels[i] for i in idx.tolist()],
            self.values[idx],
            self.present[idx],
            self.drop_name[idx],
        )

    def take_order(self, order: NDArray[np.intp] | None) -> Vector:
        """Rows permuted by ``order`` (``self`` when it is ``None``)."""
        return self if order is None else self.take(order)

    def compact(self) -> Vector:
        """Drop series that have no sample at any step."""
        keep = np.flatnonzero(self.present.any(axis=1))
        if len(keep) == len(self.labels):
            return self
        return self.take(keep)


@dataclass(slots=True)
class Scalar:
    """One float per step."""

    values: F64


@dataclass(slots=True)
class String:
    value: str


@dataclass(slots=True)
class RangeSeries:
    """Samples of one series (stale markers removed), sorted by time."""

    labels: Labels
    ts: I64
    values: F64
    drop_name: bool = False


@dataclass(slots=True)
class Matrix:
    """A range vector: packed series plus, per step, the window ``(eff - range_ms, eff]``.

    ``data`` holds every series' samples (stale markers removed) concatenated;
    ``labels[i]``/``drop_name[i]`` describe series ``i``.
    """

    labels: list[Labels]
    data: Packed
    drop_name: B
    eff_ms: I64
    range_ms: int
    #: ``anchored``/``smoothed`` selectors keep their raw samples (incl. those outside
    #: the windows) for the extended range functions.
    mode: str | None = None
    raw: list[SeriesData] = field(default_factory=list)
    #: Label order of the series when they are not stored in it (see ``Selection``):
    #: functions permute their ``[series, steps]`` results by it.
    order: NDArray[np.intp] | None = None

    @classmethod
    def of(cls, series: list[RangeSeries], eff_ms: I64, range_ms: int) -> Matrix:
        """A matrix of already cleaned series."""
        return cls(
            [s.labels for s in series],
            pack([s.ts for s in series], [s.values for s in series]),
            np.array([s.drop_name for s in series], dtype=np.bool_),
            eff_ms,
            range_ms,
        )

    @property
    def series(self) -> list[RangeSeries]:
        """Per-series views into :attr:`data` (built on demand)."""
        off = self.data.offsets.tolist()
        return [
            RangeSeries(
                lbl,
                self.data.ts[off[i] : off[i + 1]],
                self.data.values[off[i] : off[i + 1]],
                bool(self.drop_name[i]),
            )
            for i, lbl in enumerate(self.labels)
        ]

    def flat(self) -> FlatWindows:
        """The packed samples with ``[series, steps]`` window bounds into them."""
        lo, hi = upper_bounds(self.data, self.eff_ms - self.range_ms, self.eff_ms)
        return FlatWindows(self.data.ts, self.data.values, lo, hi)


@dataclass(slots=True)
class FlatWindows:
    """Concatenated samples of a matrix and per-(series, step) windows ``[lo, hi)``."""

    ts: I64
    values: F64
    lo: NDArray[np.intp]
    hi: NDArray[np.intp]


Value = Vector | Scalar | String | Matrix


@dataclass(slots=True)
class QueryStats:
    """What a query cost. Times in seconds."""

    samples_loaded: int = 0
    series_loaded: int = 0
    peak_samples: int = 0
    parse_s: float = 0.0
    eval_s: float = 0.0
    total_s: float = 0.0
    steps: int = 0


@dataclass(frozen=True, slots=True)
class ResultSeries:
    """One output series: labels and its points (one point for an instant vector)."""

    labels: Labels
    ts_ms: I64
    values: F64


@dataclass(slots=True)
class Result:
    """The outcome of a query.

    ``result_type`` is ``vector`` (instant query), ``matrix`` (range query, or a range
    vector selector in an instant query), ``scalar`` or ``string``. For ``scalar`` and
    ``string`` the single point is in ``scalar``/``string`` with its timestamp ``time_ms``.
    """

    result_type: Literal["vector", "matrix", "scalar", "string"]
    series: list[ResultSeries] = field(default_factory=list)
    scalar: float = 0.0
    string: str = ""
    time_ms: int = 0
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    stats: QueryStats = field(default_factory=QueryStats)


def any_rows(mask: B) -> B:
    """Per step: is any row of ``mask`` true (typed helper over ``ndarray.any``)."""
    return np.asarray(mask.any(axis=0), dtype=np.bool_)
