"""The series index: canonical label sets ↔ dense uint64 series ids, and postings.

Ids are dense (0, 1, 2, ...) so per-series facts live in numpy arrays indexed by id.
Postings map label name → value → ids (``array('Q')``, ascending because ids only grow).
Strings and ``(name, value)`` pairs are interned, so a label set costs one small tuple.
Matchers follow :mod:`monitoringserver.model.matchers`: a series lacking a label sees
``""``, so ``{a=""}`` selects series without ``a`` and ``{a!="x"}`` selects them too.

Cardinality limits (total, per metric name, per source) are checked for a whole batch
before any series is created; :class:`CardinalityLimitError` names the limit and numbers.
They count *active* series: every series created since the last :meth:`recount_active`,
plus those that had samples after the horizon it was given. Series are never deleted
(rollups keep their data for years), so churn must not exhaust the limits.

Thread-safety: all methods take one lock; the writer mutates from the event loop and
queries read from worker threads.
"""

from __future__ import annotations

import operator
import threading
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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

__all__ = ["NewSeries", "SeriesIndex", "SeriesLimits"]

IdArray = NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class SeriesLimits:
    """0 means unlimited."""

    max_series: int = 0
    max_per_metric: int = 0
    max_per_source: int = 0


@dataclass(frozen=True, slots=True)
class NewSeries:
    """A series created by :meth:`SeriesIndex.resolve`, to be persisted with its samples."""

    series_id: int
    labels: Labels
    source: str


class SeriesIndex:
    """In-memory index of every known series."""

    def __init__(self, limits: SeriesLimits | None = None) -> None:
        self._limits = limits or SeriesLimits()
        self._lock = threading.Lock()
        # All guarded by _lock:
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels] = []
        self._postings: dict[str, dict[str, array[int]]] = {}
        self._per_metric: dict[str, int] = {}  # active series per metric name
        self._per_source: dict[str, int] = {}  # active series per source
        self._active = 0
        self._metric_of: array[int] = array("I")  # series id → metric number
        self._source_of: array[int] = array("I")  # series id → source number
        self._numbers: dict[tuple[str, str], int] = {}  # ("m"|"s", name) → number
        self._names: dict[str, list[str]] = {"m": [], "s": []}
        self._interned: dict[object, object] = {}
        self._valid_names: set[str] = set()  # label and metric names already validated
        self._min_ts = np.empty(0, dtype=np.int64)
        self._max_ts = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        with self._lock:
            return len(self._labels)

    # -- building ----------------------------------------------------------------------

    def _intern(self, labels: Labels) -> Labels:
        """One shared object per distinct string, pair and label set. Objects the caller
        passes in are adopted when they are already the shared ones (an ingest decoder
        that interns its own label sets then holds no second copy)."""
        table = self._interned
        get = table.get
        if type(labels) is tuple and all(map(operator.is_, map(get, labels), labels)):
            return labels  # every pair is the shared one already (C-level check)
        pairs = []
        adopted = True
        for pair in labels:
            found = get(pair)
            if found is None:
                name, value = pair
                shared_name = get(name)
                if shared_name is None:
                    shared_name = table[name] = name
                shared_value = get(value)
                if shared_value is None:
                    shared_value = table[value] = value
                if shared_name is name and shared_value is value:
                    found = pair
                else:
                    found = (shared_name, shared_value)
                table[found] = found
            adopted = adopted and found is pair
            pairs.append(found)
        if adopted and type(labels) is tuple:
            return labels
        return tuple(pairs)  # type: ignore[arg-type]

    def _add_locked(self, series_id: int, labels: Labels, source: str) -> None:
        if series_id != len(self._labels):
            raise BadDataError(
                f"cannot register series {series_id}: ids must be dense, next is "
                f"{len(self._labels)}"
            )
        self._add_many_locked([labels], source)

    def _add_many_locked(self, series: Sequence[Labels], source: str) -> list[Labels]:
        """Register ``series`` (new, distinct) under the next ids, in order; returns their
        interned label sets. One pass per label pair, counters updated once."""
        first = len(self._labels)
        interned = [self._intern(labels) for labels in series]
        ids = self._ids
        postings = self._postings
        per_metric = self._per_metric
        metric_of = self._metric_of
        number = self._number
        for sid, labels in enumerate(interned, first):
            ids[labels] = sid
            metric = ""
            for name, value in labels:
                if name == METRIC_NAME:
                    metric = value
                by_value = postings.get(name)
                if by_value is None:
                    by_value = postings[name] = {}
                found = by_value.get(value)
                if found is None:
                    by_value[value] = array("Q", (sid,))
                else:
                    found.append(sid)
            per_metric[metric] = per_metric.get(metric, 0) + 1
            metric_of.append(number("m", metric))
        self._labels.extend(interned)
        k = len(interned)
        self._per_source[source] = self._per_source.get(source, 0) + k
        self._active += k
        self._source_of.extend(array("I", (number("s", source),)) * k)
        total = len(self._labels)
        if total > len(self._min_ts):
            grow = max(1024, len(self._min_ts), total - len(self._min_ts))
            self._min_ts = np.concatenate(
                (self._min_ts, np.full(grow, np.iinfo(np.int64).max, dtype=np.int64))
            )
            self._max_ts = np.concatenate(
                (self._max_ts, np.full(grow, np.iinfo(np.int64).min, dtype=np.int64))
            )
        return interned

    def _number(self, kind: str, name: str) -> int:
        key = (kind, name)
        num = self._numbers.get(key)
        if num is None:
            num = self._numbers[key] = len(self._names[kind])
            self._names[kind].append(name)
        return num

    def recount_active(self, since_ms: int) -> int:
        """Recount the limits over series with samples at or after ``since_ms``."""
        with self._lock:
            n = len(self._labels)
            active = self._max_ts[:n] >= since_ms
            metric = np.frombuffer(self._metric_of, dtype=np.uint32)[:n][active]
            source = np.frombuffer(self._source_of, dtype=np.uint32)[:n][active]
            self._per_metric = _counts(metric, self._names["m"])
            self._per_source = _counts(source, self._names["s"])
            self._active = int(active.sum())
            return self._active

    def load(self, rows: Iterable[tuple[int, Labels, str, int | None, int | None]]) -> None:
        """Add persisted series ``(id, labels, source, min_ts, max_ts)`` in id order."""
        with self._lock:
            for series_id, labels, source, lo, hi in rows:
                if series_id < len(self._labels):
                    continue  # already known (replayed twice)
                self._add_locked(series_id, labels, source)
                if lo is not None and hi is not None:
                    self._min_ts[series_id] = lo
                    self._max_ts[series_id] = hi

    def resolve(self, series: Sequence[Labels], source: str) -> tuple[IdArray, list[NewSeries]]:
        """Ids for ``series`` (in order), creating unknown ones within the limits."""
        with self._lock:
            get = self._ids.get
            found = [get(labels) for labels in series]
            if None not in found:
                return np.array(found, dtype=np.uint64), []
            missing = [i for i, sid in enumerate(found) if sid is None]
            new = list(dict.fromkeys([series[i] for i in missing]))
            out = np.array([0 if sid is None else sid for sid in found], dtype=np.uint64)
            for labels in new:
                _validate(labels, self._valid_names)
            self._check_limits_locked(new, source)
            first = len(self._labels)
            added = self._add_many_locked(new, source)
            created = [NewSeries(sid, labels, source) for sid, labels in enumerate(added, first)]
            if len(new) == len(missing):  # each new label set once: ids in order
                out[missing] = np.arange(first, first + len(new), dtype=np.uint64)
            else:
                positions = {labels: sid for sid, labels in enumerate(new, first)}
                for i in missing:
                    out[i] = positions[series[i]]
            return out, created

    def _check_limits_locked(self, new: list[Labels], source: str) -> None:
        lim = self._limits
        total = self._active
        if lim.max_series and total + len(new) > lim.max_series:
            raise CardinalityLimitError(
                f"cannot create {len(new)} series: the total limit is {lim.max_series} "
                f"and {total} exist"
            )
        if lim.max_per_source and source:  # "" means "not attributed": no per-source limit
            have = self._per_source.get(source, 0)
            if have + len(new) > lim.max_per_source:
                raise CardinalityLimitError(
                    f"cannot create {len(new)} series for source {source!r}: the per-source "
                    f"limit is {lim.max_per_source} and {have} exist"
                )
        if lim.max_per_metric:
            by_metric: dict[str, int] = {}
            for labels in new:
                name = _metric(labels)
                by_metric[name] = by_metric.get(name, 0) + 1
            for name, count in by_metric.items():
                have = self._per_metric.get(name, 0)
                if have + count > lim.max_per_metric:
                    raise CardinalityLimitError(
                        f"cannot create {count} series of metric {name!r}: the per-metric "
                        f"limit is {lim.max_per_metric} and {have} exist"
                    )

    def observe(self, series_ids: IdArray, ts_ms: NDArray[np.int64]) -> None:
        """Widen the per-series time ranges with appended samples."""
        if len(series_ids) == 0:
            return
        idx = series_ids.astype(np.intp)
        with self._lock:
            np.minimum.at(self._min_ts, idx, ts_ms)
            np.maximum.at(self._max_ts, idx, ts_ms)

    # -- reading -----------------------------------------------------------------------

    def labels_of(self, series_id: int) -> Labels:
        with self._lock:
            return self._labels[series_id]

    def labels_many(self, series_ids: Iterable[int]) -> list[Labels]:
        with self._lock:
            return [self._labels[i] for i in series_ids]

    def time_ranges(self) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Copies of ``(min_ts, max_ts)`` per id (int64 max/min when unknown)."""
        with self._lock:
            n = len(self._labels)
            return self._min_ts[:n].copy(), self._max_ts[:n].copy()

    def select(
        self, matchers: Sequence[Matcher], start_ms: int | None = None, end_ms: int | None = None
    ) -> IdArray:
        """Sorted ids of series matching every matcher (and, if given, the time range)."""
        with self._lock:
            n = len(self._labels)
            mask = np.ones(n, dtype=np.bool_)
            for m in sorted(matchers, key=_selectivity):
                mask &= self._mask_locked(m, n)
                if not mask.any():
                    break
            if start_ms is not None and end_ms is not None:
                mask &= (self._min_ts[:n] <= end_ms) & (self._max_ts[:n] >= start_ms)
            return np.flatnonzero(mask).astype(np.uint64)

    def _mask_locked(self, m: Matcher, n: int) -> NDArray[np.bool_]:
        values = self._postings.get(m.name, {})
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

    def label_names(self, series_ids: IdArray | None = None) -> list[str]:
        with self._lock:
            if series_ids is None:
                return sorted(self._postings)
            names: set[str] = set()
            for i in series_ids.tolist():
                names.update(name for name, _ in self._labels[i])
            return sorted(names)

    def label_values(self, name: str, series_ids: IdArray | None = None) -> list[str]:
        with self._lock:
            values = self._postings.get(name, {})
            if series_ids is None:
                return sorted(values)
            wanted = np.zeros(len(self._labels), dtype=np.bool_)
            wanted[series_ids.astype(np.intp)] = True
            return sorted(
                v for v, ids in values.items() if wanted[np.frombuffer(ids, dtype=np.uint64)].any()
            )


def _metric(labels: Labels) -> str:
    for name, value in labels:
        if name == METRIC_NAME:
            return value
    return ""


def _validate(labels: Labels, valid: set[str]) -> None:
    """Check one new label set; ``valid`` caches names (metric names prefixed ``=``)
    that passed already, so steady churn does not re-run the regular expressions."""
    name = _metric(labels)
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


def _counts(numbers: NDArray[np.uint32], names: list[str]) -> dict[str, int]:
    if len(numbers) == 0:
        return {}
    counts = np.bincount(numbers, minlength=len(names)).tolist()
    return {names[i]: c for i, c in enumerate(counts) if c}


def _selectivity(m: Matcher) -> int:
    """Evaluate cheap, selective matchers first."""
    return {MatchOp.EQ: 0, MatchOp.RE: 1, MatchOp.NEQ: 2, MatchOp.NRE: 3}[m.op]
