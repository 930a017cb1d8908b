"""Loading series through ``MetricQuerier`` and turning them into step-aligned values.

Lookback and range windows are left-open, right-closed like Prometheus 3: an instant
selector at ``t`` sees the newest sample in ``(t - lookback, t]``; a range selector
``[r]`` sees ``(t - r, t]``. Stale markers end a series (instant) and are removed from
range windows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import promql_parser as pp

from monitoringserver.errors import QueryLimitError
from monitoringserver.metrics.api import MetricQuerier, PackedQuerier, SeriesData
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.promql.packed import pack, upper_bounds
from monitoringserver.promql.parser import selector_matchers
from monitoringserver.promql.values import I64, Matrix, QueryStats, Vector

__all__ = ["Loader", "instant_vector", "range_matrix"]


class Loader:
    """Fetches series for one query, counting samples against the query's limits."""

    def __init__(
        self, querier: MetricQuerier, stats: QueryStats, max_samples: int, max_series: int
    ) -> None:
        self._querier = querier
        self._stats = stats
        self._max_samples = max_samples
        self._max_series = max_series

    def load(self, vs: pp.VectorSelector, mint_ms: int, maxt_ms: int) -> list[SeriesData]:
        """Series matching ``vs`` with samples in ``[mint_ms, maxt_ms]`` (inclusive)."""
        return self._load(selector_matchers(vs), mint_ms, maxt_ms)

    def load_matchers(
        self, matchers: list[Matcher], mint_ms: int, maxt_ms: int
    ) -> list[SeriesData]:
        """Like :meth:`load` for one group of already converted matchers."""
        return self._load([matchers], mint_ms, maxt_ms)

    def _load(self, groups: list[list[Matcher]], mint_ms: int, maxt_ms: int) -> list[SeriesData]:
        by_labels: dict[Labels, SeriesData] = {}
        for group in groups:
            if mint_ms > maxt_ms:
                continue
            for s in self._select(group, mint_ms, maxt_ms):
                by_labels.setdefault(s.labels, s)
        series = [by_labels[k] for k in sorted(by_labels)]
        self._stats.series_loaded += len(series)
        self._stats.samples_loaded += sum(map(len, [s.ts_ms for s in series]))
        self._stats.peak_samples = max(self._stats.peak_samples, self._stats.samples_loaded)
        if self._stats.series_loaded > self._max_series:
            raise QueryLimitError(
                f"cannot execute query: it would select more than {self._max_series} series"
            )
        if self._stats.samples_loaded > self._max_samples:
            raise QueryLimitError(
                "cannot execute query: query processing would load too many samples into "
                f"memory in query execution (limit {self._max_samples})"
            )
        return series

    def _select(self, matchers: list[Matcher], mint_ms: int, maxt_ms: int) -> list[SeriesData]:
        """Through ``select_packed`` (views into one flat result) when the querier has it."""
        if isinstance(self._querier, PackedQuerier):
            return self._querier.select_packed(matchers, mint_ms, maxt_ms).series()
        return self._querier.select(matchers, mint_ms, maxt_ms)


def instant_vector(
    series: Sequence[SeriesData], eff_ms: I64, lookback_ms: int, want_ts: bool = False
) -> Vector:
    """Per step, the newest non-stale sample in ``(eff - lookback, eff]``.

    With ``want_ts`` the value is the sample's timestamp in seconds (for ``timestamp()``).
    All series are handled at once over their packed samples.
    """
    n, steps = len(series), len(eff_ms)
    labels = [s.labels for s in series]
    data = pack([s.ts_ms for s in series], [s.values for s in series])
    if len(data.ts) == 0:
        return Vector(
            labels,
            np.zeros((n, steps)),
            np.zeros((n, steps), dtype=np.bool_),
            np.zeros(n, dtype=np.bool_),
        )
    (upper,) = upper_bounds(data, eff_ms)
    idx = upper - 1
    present = idx >= data.starts()[:, None]
    idx_c = np.maximum(idx, 0)
    ts = data.ts[idx_c]
    vals = data.values[idx_c]
    present &= ts > (eff_ms - lookback_ms)[None, :]
    present &= ~is_stale_nan(vals)
    values = ts / 1000.0 if want_ts else vals
    return Vector(labels, values, present, np.zeros(n, dtype=np.bool_))


def range_matrix(series: Sequence[SeriesData], eff_ms: I64, range_ms: int) -> Matrix:
    """A range vector whose windows end at ``eff_ms``; stale markers are dropped."""
    data = pack([s.ts_ms for s in series], [s.values for s in series]).without_stale()
    return Matrix(
        [s.labels for s in series], data, np.zeros(len(series), dtype=np.bool_), eff_ms, range_ms
    )
