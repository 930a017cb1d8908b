"""Loading series through ``MetricQuerier`` and turning them into step-aligned values.

Lookback and range windows are left-open, right-closed like Prometheus 3: an instant
selector at ``t`` sees the newest sample in ``(t - lookback, t]``; a range selector
``[r]`` sees ``(t - r, t]``. Stale markers end a series (instant) and are removed from
range windows.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import promql_parser as pp
from numpy.typing import NDArray

from monitoringserver.errors import QueryLimitError
from monitoringserver.metrics.api import MetricQuerier, PackedSeries, SeriesData
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.promql.memo import LabelsMemo
from monitoringserver.promql.packed import Idx, Packed, pack, reorder, upper_bounds
from monitoringserver.promql.parser import selector_matchers
from monitoringserver.promql.values import I64, Matrix, QueryStats, Vector

__all__ = [
    "InlineBounds",
    "Loader",
    "NotInline",
    "Selection",
    "instant_vector",
    "range_matrix",
    "sort_order",
]


class NotInline(Exception):  # noqa: N818 - a signal to the caller, not an error
    """An evaluation asked to stay within :class:`InlineBounds` would exceed them (or
    the querier cannot promise to answer from memory). Nothing was returned; the caller
    runs the query again the ordinary way. It never reaches a client."""


@dataclass(frozen=True, slots=True)
class InlineBounds:
    """What a query may cost to be evaluated inline (on an event loop): at most
    ``max_series`` series loaded, ``max_samples`` samples loaded (also per file set
    read), ``max_steps`` steps, ``max_query_chars`` characters of query text, no
    subquery, and every selection answered from memory
    (``select_packed_cached``). Within them a query costs about a millisecond at most."""

    max_series: int = 64
    max_samples: int = 20_000
    max_steps: int = 1_100
    max_query_chars: int = 2_000


T = TypeVar("T", bound=np.generic)


@dataclass(slots=True)
class Selection:
    """Series selected for one selector: ``labels[i]`` owns series ``i`` of ``data``.

    Series are unique and every listed series has at least one sample. They are kept
    in the order the store returned them; ``order`` (``None`` when that order already
    is the label order) lists them sorted by labels, the order Prometheus' storage
    returns them in. Consumers compute on the stored order and permute their
    ``[series, steps]`` results, which is cheaper than moving every sample.
    """

    labels: list[Labels]
    data: Packed
    order: Idx | None = None

    def in_label_order(self) -> Selection:
        """The same series with their samples moved into label order."""
        if self.order is None:
            return self
        order = self.order
        return Selection([self.labels[i] for i in order.tolist()], reorder(self.data, order))

    def series(self) -> list[SeriesData]:
        """One :class:`SeriesData` per series in label order, arrays are views."""
        off = self.data.offsets.tolist()
        ts, values = self.data.ts, self.data.values
        rows = range(len(self.labels)) if self.order is None else self.order.tolist()
        return [
            SeriesData(self.labels[i], ts[off[i] : off[i + 1]], values[off[i] : off[i + 1]])
            for i in rows
        ]


class Loader:
    """Fetches series for one query, counting samples against the query's limits."""

    def __init__(
        self,
        querier: MetricQuerier,
        stats: QueryStats,
        max_samples: int,
        max_series: int,
        inline: InlineBounds | None = None,
    ) -> None:
        self._querier = querier
        self._stats = stats
        self._max_samples = max_samples
        self._max_series = max_series
        self.inline = inline

    def load(self, vs: pp.VectorSelector, mint_ms: int, maxt_ms: int) -> Selection:
        """Series matching ``vs`` with samples in ``[mint_ms, maxt_ms]`` (inclusive)."""
        return self._load(selector_matchers(vs), mint_ms, maxt_ms)

    def load_matchers(self, matchers: list[Matcher], mint_ms: int, maxt_ms: int) -> Selection:
        """Like :meth:`load` for one group of already converted matchers."""
        return self._load([matchers], mint_ms, maxt_ms)

    def _load(self, groups: list[list[Matcher]], mint_ms: int, maxt_ms: int) -> Selection:
        parts = [self._select(g, mint_ms, maxt_ms) for g in groups if mint_ms <= maxt_ms]
        if not parts:
            labels: list[Labels] = []
            data = pack([], [])
        elif len(parts) == 1:
            labels, data = parts[0]
        else:
            labels, data = _union(parts)
        self._stats.series_loaded += len(labels)
        self._stats.samples_loaded += len(data.ts)
        self._stats.peak_samples = max(self._stats.peak_samples, self._stats.samples_loaded)
        bounds = self.inline
        if bounds is not None and (
            self._stats.series_loaded > bounds.max_series
            or self._stats.samples_loaded > bounds.max_samples
        ):
            raise NotInline("cannot evaluate query inline: it loads too much")
        if self._stats.series_loaded > self._max_series:
            raise QueryLimitError(
                f"cannot execute query: it would select more than {self._max_series} series"
            )
        if self._stats.samples_loaded > self._max_samples:
            raise QueryLimitError(
                "cannot execute query: query processing would load too many samples into "
                f"memory in query execution (limit {self._max_samples})"
            )
        return Selection(labels, data, _ORDERS.get(labels, None, lambda: sort_order(labels)))

    def _select(
        self, matchers: list[Matcher], mint_ms: int, maxt_ms: int
    ) -> tuple[list[Labels], Packed]:
        """Through ``select_packed`` (one flat result) when the querier has it; inline,
        through ``select_packed_cached`` or not at all (:class:`NotInline`)."""
        # ``getattr`` rather than ``isinstance`` against the runtime-checkable protocol,
        # which costs tens of microseconds per call.
        if self.inline is not None:
            return self._select_cached(self.inline, matchers, mint_ms, maxt_ms)
        select_packed = getattr(self._querier, "select_packed", None)
        if select_packed is not None:
            ps: PackedSeries = select_packed(matchers, mint_ms, maxt_ms)
            offsets = np.asarray(ps.offsets, dtype=np.intp)
            # The store may hand out arrays it caches: the engine reads them through
            # read-only views, so a stray in-place write fails instead of corrupting them.
            return list(ps.labels), Packed(_read_only(ps.ts_ms), _read_only(ps.values), offsets)
        series = self._querier.select(matchers, mint_ms, maxt_ms)
        return [s.labels for s in series], pack(
            [s.ts_ms for s in series], [s.values for s in series]
        )

    def _select_cached(
        self, bounds: InlineBounds, matchers: list[Matcher], mint_ms: int, maxt_ms: int
    ) -> tuple[list[Labels], Packed]:
        cached = getattr(self._querier, "select_packed_cached", None)
        ps: PackedSeries | None = None
        if cached is not None:
            ps = cached(
                matchers,
                mint_ms,
                maxt_ms,
                max_series=bounds.max_series - self._stats.series_loaded,
                max_rows=bounds.max_samples,
            )
        if ps is None:
            raise NotInline("cannot evaluate query inline: its series are not at hand")
        offsets = np.asarray(ps.offsets, dtype=np.intp)
        return list(ps.labels), Packed(_read_only(ps.ts_ms), _read_only(ps.values), offsets)


def _read_only(a: NDArray[T]) -> NDArray[T]:
    view = a.view()
    view.flags.writeable = False
    return view


def sort_order(labels: list[Labels]) -> Idx | None:
    """The permutation sorting ``labels``, or ``None`` when they are already sorted."""
    if all(a < b for a, b in itertools.pairwise(labels)):
        return None
    order = np.asarray(sorted(range(len(labels)), key=labels.__getitem__), dtype=np.intp)
    order.flags.writeable = False  # it may be shared through the memo
    return order


_ORDERS: LabelsMemo[Idx | None] = LabelsMemo()


def _union(parts: list[tuple[list[Labels], Packed]]) -> tuple[list[Labels], Packed]:
    """Series of several selections, each label set once (the first selection's wins)."""
    seen: dict[Labels, tuple[int, int]] = {}
    for p, (labels, _) in enumerate(parts):
        for i, lbl in enumerate(labels):
            seen.setdefault(lbl, (p, i))
    ts, values = [], []
    for p, i in seen.values():
        data = parts[p][1]
        a, b = int(data.offsets[i]), int(data.offsets[i + 1])
        ts.append(data.ts[a:b])
        values.append(data.values[a:b])
    return list(seen), pack(ts, values)


def instant_vector(sel: Selection, eff_ms: I64, lookback_ms: int, want_ts: bool = False) -> Vector:
    """Per step, the newest non-stale sample in ``(eff - lookback, eff]``; label order.

    With ``want_ts`` the value is the sample's timestamp in seconds (for ``timestamp()``).
    All series are handled at once over their packed samples.
    """
    data = sel.data
    n, steps = len(sel.labels), len(eff_ms)
    if len(data.ts) == 0:
        return Vector(
            list(sel.labels),
            np.zeros((n, steps)),
            np.zeros((n, steps), dtype=np.bool_),
            np.zeros(n, dtype=np.bool_),
        ).take_order(sel.order)
    (upper,) = upper_bounds(data, eff_ms)
    idx = upper - 1
    present = idx >= data.starts()[:, None]
    idx_c = np.maximum(idx, 0)
    ts = data.ts[idx_c]
    vals = data.values[idx_c]
    present &= ts > (eff_ms - lookback_ms)[None, :]
    present &= ~is_stale_nan(vals)
    values = ts / 1000.0 if want_ts else vals
    vec = Vector(list(sel.labels), values, present, np.zeros(n, dtype=np.bool_))
    return vec.take_order(sel.order)


def range_matrix(sel: Selection, eff_ms: I64, range_ms: int) -> Matrix:
    """A range vector whose windows end at ``eff_ms``; stale markers are dropped.

    Series stay in the selection's stored order; ``Matrix.order`` carries its label order.
    """
    return Matrix(
        list(sel.labels),
        sel.data.without_stale(),
        np.zeros(len(sel.labels), dtype=np.bool_),
        eff_ms,
        range_ms,
        order=sel.order,
    )
