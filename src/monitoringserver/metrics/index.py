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
import sys
import threading
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, compress, repeat

import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.metrics.labelsets import (
    CheckedSets,
    NewSeries,
    SeriesBlock,
    SeriesLimits,
    check_limits,
    count_names,
    metric_of,
    pair_ok,
    validate_label_set,
)
from monitoringserver.metrics.postings import select_few, select_ids
from monitoringserver.model.labels import (
    METRIC_NAME,
    Labels,
    sorted_within,
)
from monitoringserver.model.matchers import Matcher

__all__ = ["NewSeries", "SeriesBlock", "SeriesIndex", "SeriesLimits"]

IdArray = NDArray[np.uint64]
_NAME = _FIRST = operator.itemgetter(0)
_VALUE = _SECOND = operator.itemgetter(1)
_PairEntry = tuple[tuple[str, str], "array[int]"]
#: Most recorded alias pairs (see ``SeriesIndex._aliases_ok``).
_MAX_ALIASES = 1 << 16


class SeriesIndex:
    """In-memory index of every known series."""

    def __init__(self, limits: SeriesLimits | None = None) -> None:
        self._limits = limits or SeriesLimits()
        self._lock = threading.Lock()
        # All guarded by _lock:
        self._ids: dict[Labels, int] = {}
        self._labels: list[Labels] = []
        self._postings: dict[str, dict[str, array[int]]] = {}
        # Every pair of a series → (its shared object, its posting list): one lookup per
        # pair shares it, finds its postings and tells it is valid.
        self._by_pair: dict[tuple[str, str], _PairEntry] = {}
        self._per_metric: Counter[str] = Counter()  # active series per metric name
        self._per_source: dict[str, int] = {}  # active series per source
        self._active = 0
        self._metric_of: array[int] = array("I")  # series id → metric number
        self._source_of: array[int] = array("I")  # series id → source number
        self._numbers: dict[str, dict[str, int]] = {"m": {}, "s": {}}  # kind → name → number
        self._names: dict[str, list[str]] = {"m": [], "s": []}
        self._strings: dict[str, str] = {}  # one shared object per label value
        # A pair equal to a shared one → the other object a caller keeps for it:
        self._aliases: dict[tuple[str, str], tuple[str, str]] = {}
        self._valid_names: set[str] = set()  # label names, and metric names prefixed "="
        self._min_ts = np.empty(0, dtype=np.int64)
        self._max_ts = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        with self._lock:
            return len(self._labels)

    # -- building ----------------------------------------------------------------------

    def _register_pairs(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Give each new pair a shared object (with shared strings: names interned, as
        ingest decoders intern theirs; values the caller's objects when nothing equal is
        shared yet) and an empty posting list."""
        strings = self._strings
        by_pair = self._by_pair
        for pair in pairs:
            name, value = pair
            shared_name = sys.intern(name)
            shared_value = strings.setdefault(value, value)
            if shared_name is name and shared_value is value and type(pair) is tuple:
                shared = pair
            else:
                shared = (shared_name, shared_value)
            posting = self._postings.setdefault(shared_name, {}).setdefault(
                shared_value, array("Q")
            )
            by_pair[shared] = (shared, posting)

    def _add_many_locked(
        self,
        series: Sequence[Labels],
        source: str,
        *,
        flat: list[tuple[str, str]] | None = None,
        found: list[_PairEntry | None] | None = None,
        unseen: set[tuple[str, str]] | None = None,
        counts: list[int] | None = None,
        metrics: list[str] | None = None,
        by_metric: Counter[str] | None = None,
    ) -> tuple[list[Labels], bool]:
        """Register ``series`` (new, distinct) under the next ids, in order, except in
        ``_ids``; returns their shared label sets and whether those are the objects
        given (adopted: an ingest decoder that shares its pairs holds no second copy).
        ``flat``, ``found``, ``unseen``, ``counts``, ``metrics``, ``by_metric``: their
        pairs, each pair's entry in ``_by_pair``, the pairs without one, each set's size,
        their metric names and how many per name, when the caller has them. Every
        per-pair step is a C-level pass over all pairs."""
        first = len(self._labels)
        k = len(series)
        if flat is None:
            flat = list(chain.from_iterable(series))
        by_pair = self._by_pair
        if found is None:
            found = list(map(by_pair.get, flat))
        entries: list[_PairEntry]
        if None in found:
            if unseen is None:
                unseen = set(compress(flat, map(operator.is_, found, repeat(None))))
            self._register_pairs(unseen)
            entries = list(map(by_pair.__getitem__, flat))
        else:
            entries = found  # type: ignore[assignment]
        if counts is None:
            counts = list(map(len, series))
        adopted = set(map(type, series)) <= {tuple} and (
            all(map(operator.is_, map(_FIRST, entries), flat)) or self._aliases_ok(flat, entries)
        )
        if adopted:
            interned = list(series)
        else:
            shared = list(map(_FIRST, entries))
            stops = list(accumulate(counts))
            slices = map(slice, [0, *stops[:-1]], stops)
            interned = list(map(tuple, map(shared.__getitem__, slices)))
        # Ids only grow, so appending keeps every posting list ascending.
        sids = chain.from_iterable(map(repeat, range(first, first + k), counts))
        deque(map(array.append, map(_SECOND, entries), sids), maxlen=0)
        if metrics is None:
            metrics = list(map(metric_of, interned))
        if by_metric is None:
            by_metric = Counter(metrics)
        self._per_metric.update(by_metric)
        self._metric_of.extend(map(self._number_map("m", by_metric).__getitem__, metrics))
        self._labels.extend(interned)
        self._per_source[source] = self._per_source.get(source, 0) + k
        self._active += k
        self._source_of.extend(array("I", (self._number_map("s", (source,))[source],)) * k)
        total = len(self._labels)
        if total > len(self._min_ts):
            grow = max(1024, len(self._min_ts), total - len(self._min_ts))
            self._min_ts = np.concatenate(
                (self._min_ts, np.full(grow, np.iinfo(np.int64).max, dtype=np.int64))
            )
            self._max_ts = np.concatenate(
                (self._max_ts, np.full(grow, np.iinfo(np.int64).min, dtype=np.int64))
            )
        return interned, adopted

    def _aliases_ok(self, flat: list[tuple[str, str]], entries: list[_PairEntry]) -> bool:
        """Whether each pair of ``flat`` that is not its shared object is the alias
        recorded for it, so the sets can be adopted as given. An ingest decoder keeps one
        object per pair, but a pair the index first saw from elsewhere (another route,
        the server's own collector) has another shared object, and its sets would never
        be adopted. Such pairs are recorded (at most :data:`_MAX_ALIASES`, then the
        record starts over), so from the next batch on the decoder's own objects count
        as shared: still one object per pair and decoder, never one per series."""
        odd = list(compress(flat, map(operator.is_not, map(_FIRST, entries), flat)))
        aliases = self._aliases
        if all(map(operator.is_, map(aliases.get, odd), odd)):
            return True
        if len(aliases) + len(odd) > _MAX_ALIASES:
            aliases.clear()
        aliases.update(zip(odd, odd, strict=True))
        return False

    def _number_map(self, kind: str, names: Iterable[str]) -> dict[str, int]:
        """The name → number map of ``kind``, numbering those of ``names`` it lacks."""
        numbers = self._numbers[kind]
        for name in set(names).difference(numbers):
            numbers[name] = len(self._names[kind])
            self._names[kind].append(name)
        return numbers

    def recount_active(self, since_ms: int) -> int:
        """Recount the limits over series with samples at or after ``since_ms``."""
        with self._lock:
            n = len(self._labels)
            active = self._max_ts[:n] >= since_ms
            metric = np.frombuffer(self._metric_of, dtype=np.uint32)[:n][active]
            source = np.frombuffer(self._source_of, dtype=np.uint32)[:n][active]
            self._per_metric = count_names(metric, self._names["m"])
            self._per_source = dict(count_names(source, self._names["s"]))
            self._active = int(active.sum())
            return self._active

    def load(self, rows: Iterable[tuple[int, Labels, str, int | None, int | None]]) -> None:
        """Add persisted series ``(id, labels, source, min_ts, max_ts)`` in id order
        (registered in runs of one source)."""
        with self._lock:
            run: list[Labels] = []
            run_source = ""
            ranges: list[tuple[int, int, int]] = []
            for series_id, labels, source, lo, hi in rows:
                expected = len(self._labels) + len(run)
                if series_id < expected:
                    continue  # already known (replayed twice)
                if series_id != expected:
                    raise BadDataError(
                        f"cannot register series {series_id}: ids must be dense, next is {expected}"
                    )
                if run and source != run_source:
                    self._load_run_locked(run, run_source)
                    run = []
                run_source = source
                run.append(labels)
                if lo is not None and hi is not None:
                    ranges.append((series_id, lo, hi))
            if run:
                self._load_run_locked(run, run_source)
            for series_id, lo, hi in ranges:
                self._min_ts[series_id] = lo
                self._max_ts[series_id] = hi

    def _load_run_locked(self, run: list[Labels], source: str) -> None:
        first = len(self._labels)
        added, _ = self._add_many_locked(run, source)
        self._ids.update(zip(added, range(first, first + len(added)), strict=True))

    def resolve(self, series: Sequence[Labels], source: str) -> tuple[IdArray, list[NewSeries]]:
        """Ids for ``series`` (in order), creating unknown ones within the limits."""
        ids, block = self.resolve_block(series, source)
        return ids, [] if block is None else block.new_series()

    def resolve_block(
        self, series: Sequence[Labels], source: str
    ) -> tuple[IdArray, SeriesBlock | None]:
        """Ids for ``series`` (in order), creating unknown ones within the limits; the
        created series as one block (``None`` when every series was known). Nothing is
        created when any new label set is invalid or a limit would be exceeded."""
        with self._lock:
            ids = self._ids
            found = list(map(ids.get, series))
            if None not in found:
                return np.array(found, dtype=np.uint64), None
            new = list(compress(series, map(operator.is_, found, repeat(None))))
            first = len(self._labels)
            # Their ids in advance: one hashing pass instead of a de-duplication and an
            # insertion; a repeated set (fewer keys than sets) takes the first one's id.
            size = len(ids)
            ids.update(zip(new, range(first, first + len(new)), strict=True))
            if len(ids) - size != len(new):
                self._forget_locked(new)
                new = list(dict.fromkeys(new))
                ids.update(zip(new, range(first, first + len(new)), strict=True))
            try:
                checked = self._checked_locked(new)
                by_metric = Counter(checked.metrics)
                check_limits(
                    self._limits,
                    active=self._active,
                    per_source=self._per_source,
                    per_metric=self._per_metric,
                    new=len(new),
                    source=source,
                    by_metric=by_metric,
                )
                added, adopted = self._add_many_locked(
                    new,
                    source,
                    flat=checked.flat,
                    found=checked.found,
                    unseen=checked.unseen,
                    counts=checked.counts,
                    metrics=checked.metrics,
                    by_metric=by_metric,
                )
            except BaseException:
                self._forget_locked(new)
                raise
            if not adopted:  # keep the shared label sets as keys
                self._forget_locked(new)
                ids.update(zip(added, range(first, first + len(added)), strict=True))
            if len(new) == len(series):  # all new, each once: ids in order
                out = np.arange(first, first + len(new), dtype=np.uint64)
            else:
                out = np.fromiter(map(ids.__getitem__, series), np.uint64, len(series))
            return out, SeriesBlock(first, added, source)

    def _forget_locked(self, new: list[Labels]) -> None:
        pop = self._ids.pop
        for labels in new:
            pop(labels, None)

    def _checked_locked(self, new: list[Labels]) -> CheckedSets:
        """Check new label sets as :func:`validate_label_set` does; return what the
        check found (:class:`CheckedSets`). A known pair is valid (only checked sets
        register pairs), so only the sets' shape (names ascending, one metric name) and
        new pairs are checked, in C-level passes over all pairs; on any doubt the sets
        are checked one by one, for the precise error."""
        flat = list(chain.from_iterable(new))
        found = list(map(self._by_pair.get, flat))
        names = list(map(_NAME, flat))
        counts = list(map(len, new))
        stops = list(accumulate(counts))
        starts = [0, *stops[:-1]]
        metrics: list[str] | None = None
        if 0 not in counts and list(map(names.__getitem__, starts)).count(METRIC_NAME) == len(
            new
        ):  # the metric name first in every set (as sorted sets of lower-case names have it)
            metrics = list(map(_VALUE, map(flat.__getitem__, starts)))
        else:
            named = list(compress(flat, map(METRIC_NAME.__eq__, names)))
            if len(named) == len(new):  # names ascending: exactly one metric name per set
                metrics = list(map(_VALUE, named))
        unseen: set[tuple[str, str]] = set()
        if None in found:
            unseen = set(compress(flat, map(operator.is_, found, repeat(None))))
        if (
            metrics is not None
            and sorted_within(names, stops)
            and all(pair_ok(pair, self._valid_names) for pair in unseen)
        ):
            return CheckedSets(flat, found, unseen, counts, metrics)
        for labels in new:
            validate_label_set(labels, self._valid_names)
        raise AssertionError("unreachable: a label set above is invalid")  # pragma: no cover

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
            ids = select_ids(self._postings, self._labels, matchers, len(self._labels))
            if start_ms is not None and end_ms is not None and len(ids):
                ids = ids[(self._min_ts[ids] <= end_ms) & (self._max_ts[ids] >= start_ms)]
            return ids

    def select_few(self, matchers: Sequence[Matcher], limit: int) -> IdArray | None:
        """:meth:`select` (without a time range) when it costs little whatever the
        index holds: an equality matcher with a value names a short posting list and
        the equality matchers leave at most ``limit`` series (see
        :func:`~monitoringserver.metrics.postings.select_few`); ``None`` otherwise."""
        with self._lock:
            return select_few(self._postings, self._labels, matchers, limit)

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
