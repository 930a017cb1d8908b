"""Per-window log counts by host, level and logger, and by message pattern.

Every appended batch is counted (:meth:`LogAggregator.aggregate`). At the end of each
window (default 60 s of arrival time) the running totals are exported as Prometheus
counters through the injected :data:`~monitoringserver.logs.api.MetricsSink`:

* ``log_lines_total{server_id, level, logger}`` (the labels chosen by ``group_by``)
* ``log_pattern_lines_total{pattern_id, level}`` for the ``pattern_metric_top`` busiest
  patterns (a bounded number of series)

Counters are cumulative since start (``rate()`` works on them). Pattern statistics
(template, samples, counts) are kept in memory, bounded by ``max_patterns``; the
least-seen patterns are evicted first. ``logs`` never imports ``metrics``: the sink is
a callable that ``server.py`` connects to the metric store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import operator
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from monitoringserver.errors import BadDataError
from monitoringserver.logs.api import MetricsSink
from monitoringserver.logs.patterns import pattern_id, template
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.samples import SampleBatch

__all__ = ["AggregationRules", "AggregationStats", "LogAggregator", "PatternInfo"]

_GROUP_LABELS = ("server_id", "level", "logger", "source")
# The pattern cache key of a message ("shape"): its UTF-8 bytes with every run of 8+
# hex digits and dashes that starts with a hex digit (UUIDs, trace ids, hashes) made
# one "#", then every ASCII digit removed. Lines that differ only in numbers and ids
# share a shape and so one templating pass. One single-class regex pass and a C-level
# byte translation cost about 1.5 us per 170-byte line (a word-bounded alternation and
# ``str.translate`` cost 8 us). Hex-letter-only words of 8+ letters ("deadbeef")
# collapse too; such lines get the template of the first one seen (statistics only).
_ID_RUN = re.compile(rb"[0-9a-fA-F][0-9a-fA-F-]{7,}")
_DIGITS = b"0123456789"
_SHAPE_BYTES = 1024
_SHAPE_CACHE_MAX = 50_000


def _shape(message: str) -> bytes:
    """The pattern cache key of ``message`` (see ``_ID_RUN``)."""
    raw = message.encode("utf-8", "surrogatepass")[:_SHAPE_BYTES]
    return _ID_RUN.sub(b"#", raw).translate(None, _DIGITS)


@dataclass(frozen=True, slots=True)
class AggregationRules:
    """What is aggregated (seed 000 ``AggregationRules``).

    ``window_s``: export period. ``group_by``: labels of ``log_lines_total`` (subset of
    server_id, level, logger, source). ``pattern_levels``: levels whose lines are
    templated (templating costs a regex pass per line, so by default only the levels
    people look for patterns in; set it to ``LEVELS`` for all). ``exclude_loggers``: loggers
    not counted at all. ``max_patterns``: patterns remembered; ``samples_per_pattern``:
    example messages kept per pattern; ``pattern_metric_top``: patterns exported."""

    window_s: float = 60.0
    group_by: tuple[str, ...] = ("server_id", "level", "logger")
    patterns: bool = True
    pattern_levels: tuple[str, ...] = ("warning", "error", "critical", "unknown")
    exclude_loggers: tuple[str, ...] = ()
    max_patterns: int = 10_000
    samples_per_pattern: int = 3
    pattern_metric_top: int = 100

    def __post_init__(self) -> None:
        if self.window_s <= 0:
            raise BadDataError("cannot set aggregation rules: window_s must be positive")
        bad = [g for g in self.group_by if g not in _GROUP_LABELS]
        if bad:
            raise BadDataError(f"cannot set aggregation rules: unknown group_by labels {bad}")
        if self.max_patterns < 1 or self.samples_per_pattern < 0 or self.pattern_metric_top < 0:
            raise BadDataError("cannot set aggregation rules: limits must not be negative")


@dataclass(slots=True)
class PatternInfo:
    """One message template. ``count`` is lines since start; ``window_count`` in the
    current window. Times are ms."""

    pattern_id: str
    template: str
    level: str
    count: int = 0
    window_count: int = 0
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    samples: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Hits:
    """One batch's lines of one pattern: how many, and the pattern's samples after them."""

    template: str
    level: str
    samples: list[str]
    count: int = 0


@dataclass(frozen=True, slots=True)
class AggregationStats:
    """Seed 000 ``AggregationStats``."""

    lines_total: int
    windows_exported: int
    export_errors: int
    patterns_tracked: int
    patterns_evicted: int
    window_start_ms: int
    window_lines: int
    rules: AggregationRules


class LogAggregator:
    """Thread-safe: ``aggregate`` may run on any thread; state is guarded by ``_lock``."""

    def __init__(
        self,
        rules: AggregationRules | None = None,
        *,
        sink: MetricsSink | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._rules = rules or AggregationRules()
        self._sink = sink
        self._clock = clock
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, ...], int] = {}  # guarded by _lock
        self._patterns: dict[str, PatternInfo] = {}  # guarded by _lock
        self._lines_total = 0
        self._window_lines = 0
        self._window_start_ms = int(clock() * 1000)
        self._windows_exported = 0
        self._export_errors = 0
        self._evicted = 0
        self._stop = asyncio.Event()
        # (message shape, level) -> (pattern id, template); only touched by aggregate(),
        # which the writer calls from one thread at a time.
        self._shape_cache: dict[tuple[bytes, str], tuple[str, str]] = {}

    # -- seed 000 API -------------------------------------------------------------

    def set_rules(self, rules: AggregationRules) -> None:
        """Replace the rules; totals grouped differently start again from zero."""
        with self._lock:
            if rules.group_by != self._rules.group_by:
                self._totals.clear()
            self._rules = rules

    @property
    def rules(self) -> AggregationRules:
        return self._rules

    def get_stats(self) -> AggregationStats:
        with self._lock:
            return AggregationStats(
                lines_total=self._lines_total,
                windows_exported=self._windows_exported,
                export_errors=self._export_errors,
                patterns_tracked=len(self._patterns),
                patterns_evicted=self._evicted,
                window_start_ms=self._window_start_ms,
                window_lines=self._window_lines,
                rules=self._rules,
            )

    def aggregate(self, batch: LogBatch) -> None:
        """Count the lines of ``batch`` into the current window.

        Per line this runs only C-level passes (``Counter`` over zipped columns, level
        masks through ``itertools.compress``); the Python loop visits only the lines
        whose level is templated, and their counts are summed per pattern before the
        lock is taken."""
        if not len(batch):
            return
        rules = self._rules
        cols = {
            "server_id": batch.server_id,
            "level": batch.level,
            "logger": batch.logger,
            "source": batch.source,
        }
        group_cols = [cols[g] for g in rules.group_by]
        excluded = set(rules.exclude_loggers)
        kept: list[bool] | None = None
        if excluded and not excluded.isdisjoint(batch.logger):
            kept = list(map(operator.not_, map(excluded.__contains__, batch.logger)))
            group_cols = [list(itertools.compress(c, kept)) for c in group_cols]
        # Counter counts in C: no Python-level work per line for the plain counts.
        counts = collections.Counter(zip(*group_cols, strict=True))
        n = len(batch) if kept is None else sum(kept)
        hits: dict[str, _Hits] = {}
        order_ids: list[str] = []
        order_msgs: list[str] = []
        if rules.patterns:
            hits, order_ids, order_msgs = self._pattern_hits(batch, kept)
        now_ms = int(self._clock() * 1000)
        with self._lock:
            self._lines_total += n
            self._window_lines += n
            for key, c in counts.items():
                self._totals[key] = self._totals.get(key, 0) + c
            self._count_patterns(hits, order_ids, order_msgs, now_ms)

    def _pattern_hits(
        self, batch: LogBatch, kept: list[bool] | None
    ) -> tuple[dict[str, _Hits], list[str], list[str]]:
        """Template the lines of the templated levels: the hits per pattern id (their
        samples as counting them line by line would leave them), and the pattern id and
        message of every hit in line order. Runs outside the lock: only ``aggregate``,
        one call at a time, changes patterns' samples."""
        rules = self._rules
        levels = set(rules.pattern_levels)
        lvls = batch.level
        if levels.isdisjoint(lvls):
            return {}, [], []
        cache = self._shape_cache
        if len(cache) > _SHAPE_CACHE_MAX:
            cache.clear()
        wanted: Iterator[bool] = map(levels.__contains__, lvls)
        if kept is not None:
            wanted = map(operator.and_, wanted, kept)
        limit = rules.samples_per_pattern
        hits: dict[str, _Hits] = {}
        # Two flat lists, not a tuple per line: tuples are GC-tracked, and a batch's
        # worth of them outlives young collections and feeds full ones.
        order_ids: list[str] = []
        order_msgs: list[str] = []
        patterns = self._patterns
        for msg, level in itertools.compress(zip(batch.message, lvls, strict=True), wanted):
            # Lines that differ only in numbers and ids nearly always share a template;
            # the full masking pass is costly, so it runs once per shape.
            shape = (_shape(msg), level)
            hit = cache.get(shape)
            if hit is None:
                t = template(msg)
                hit = cache[shape] = (pattern_id(t + "\x00" + level), t)
            h = hits.get(hit[0])
            if h is None:
                info = patterns.get(hit[0])
                h = hits[hit[0]] = _Hits(hit[1], level, list(info.samples) if info else [])
            h.count += 1
            samples = h.samples
            if len(samples) < limit and msg not in samples:
                samples.append(msg[:1024])
            order_ids.append(hit[0])
            order_msgs.append(msg)
        return hits, order_ids, order_msgs

    def _count_patterns(
        self, hits: dict[str, _Hits], order_ids: list[str], order_msgs: list[str], now_ms: int
    ) -> None:
        rules = self._rules
        if len(self._patterns) + sum(pid not in self._patterns for pid in hits) <= (
            rules.max_patterns
        ):
            # No eviction can happen in this batch: whole counts per pattern are the
            # same as counting line by line.
            for pid, h in hits.items():
                info = self._patterns.get(pid)
                if info is None:
                    info = PatternInfo(pid, h.template, h.level, first_seen_ms=now_ms)
                    self._patterns[pid] = info
                info.count += h.count
                info.window_count += h.count
                info.last_seen_ms = now_ms
                info.samples = h.samples
            return
        # Under eviction pressure the order of the lines matters: one at a time.
        for pid, msg in zip(order_ids, order_msgs, strict=True):
            info = self._patterns.get(pid)
            if info is None:
                if len(self._patterns) >= rules.max_patterns:
                    self._evict()
                h = hits[pid]
                info = PatternInfo(pid, h.template, h.level, first_seen_ms=now_ms)
                self._patterns[pid] = info
            info.count += 1
            info.window_count += 1
            info.last_seen_ms = now_ms
            if len(info.samples) < rules.samples_per_pattern and msg not in info.samples:
                info.samples.append(msg[:1024])

    def _evict(self) -> None:
        """Drop the least-seen tenth of the patterns (amortises the sort)."""
        ranked = sorted(self._patterns.values(), key=lambda p: (p.count, p.last_seen_ms))
        for p in ranked[: max(1, len(ranked) // 10)]:
            del self._patterns[p.pattern_id]
            self._evicted += 1

    def top_patterns(
        self, limit: int = 20, *, level: str | None = None, window: bool = False
    ) -> list[PatternInfo]:
        """The busiest patterns (by lines since start, or in the current window)."""
        with self._lock:
            items = [p for p in self._patterns.values() if level is None or p.level == level]
            items.sort(key=lambda p: p.window_count if window else p.count, reverse=True)
            return [
                PatternInfo(
                    p.pattern_id,
                    p.template,
                    p.level,
                    p.count,
                    p.window_count,
                    p.first_seen_ms,
                    p.last_seen_ms,
                    list(p.samples),
                )
                for p in items[: max(0, limit)]
            ]

    # -- export -------------------------------------------------------------------

    def snapshot(self, now_ms: int | None = None) -> SampleBatch:
        """Close the current window: the cumulative counters as samples at ``now_ms``."""
        ts = int(self._clock() * 1000) if now_ms is None else now_ms
        rows: list[tuple[Labels, int, float]] = []
        with self._lock:
            group_by = self._rules.group_by
            for key, total in self._totals.items():
                pairs = {"__name__": "log_lines_total"}
                pairs.update({g: v for g, v in zip(group_by, key, strict=True) if v})
                rows.append((make_labels(pairs), ts, float(total)))
            top = sorted(self._patterns.values(), key=lambda p: p.count, reverse=True)
            for p in top[: self._rules.pattern_metric_top]:
                lbl = {"__name__": "log_pattern_lines_total", "pattern_id": p.pattern_id}
                lbl["level"] = p.level
                rows.append((make_labels(lbl), ts, float(p.count)))
            for p in self._patterns.values():
                p.window_count = 0
            self._window_lines = 0
            self._window_start_ms = ts
        if not rows:
            return SampleBatch.empty()
        return SampleBatch.from_rows(rows)

    async def export(self) -> int:
        """Close the window and send the counters to the sink; returns samples sent.

        A failing sink is counted (``export_errors``) and does not stop aggregation."""
        batch = self.snapshot()
        if self._sink is None or not len(batch):
            return 0
        try:
            await self._sink(batch)
        except Exception:  # noqa: BLE001 -- the metric store's trouble must not stop log ingest
            with self._lock:
                self._export_errors += 1
            return 0
        with self._lock:
            self._windows_exported += 1
        return len(batch)

    async def run(self) -> None:
        """Export every ``window_s`` until :meth:`aclose`; the last window is exported too."""
        self._stop.clear()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self._rules.window_s)
            await self.export()

    async def aclose(self) -> None:
        self._stop.set()
