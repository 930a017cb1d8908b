"""``LogWriter``: the write path of the embedded log store (implements ``LogAppender``).

``append`` checks the per-source rate limit and the queue bound, drops duplicate agent
deliveries, parses raw lines (``level == ""``), sanitises messages, rejects lines
outside the accepted time window, writes one WAL record and only then returns (the
acknowledgement). The accepted lines are published on the bus (live tail). A batcher
task inserts queued records into the DuckDB head table in one transaction with the
committed WAL position and the agents' sequence numbers; then, on a worker thread and
off the request path, the aggregator counts the committed lines (so its counts trail
ingest by up to ``batch_interval_s``) and WAL segments before that position are
truncated. A maintenance step moves the head into
archives (``LogStore.flush``) and rotates old archives away.

Loop affinity: ``append``, ``run``, ``commit_pending``, ``maintain`` and ``aclose`` run
on one event loop; parsing and DuckDB work go to threads. A batch with nothing to parse
(every level given, at most ``_INLINE_MAX_LINES`` lines) is filtered and written to the
WAL on the loop when :meth:`Wal.try_append` can do it without blocking (no fsync or
segment rotation due); otherwise the WAL write goes to a thread too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from monitoringserver.errors import BadDataError, OverloadedError, UnavailableError
from monitoringserver.logs.aggregator import LogAggregator
from monitoringserver.logs.api import DedupKey, LogAppendResult
from monitoringserver.logs.parser import LogParser
from monitoringserver.logs.store import LogStore
from monitoringserver.model.logs import LogBatch
from monitoringserver.pipeline.bus import Bus
from monitoringserver.pipeline.log_frame import decode_frame, encode_frame
from monitoringserver.pipeline.wal import Wal

__all__ = ["LogWriter", "LogWriterOptions", "RateLimiter"]

log = logging.getLogger(__name__)

#: Batches up to this size with nothing to parse are filtered and written to the WAL on
#: the event loop (about 0.1 ms per 1000 lines); larger ones or raw lines use a thread.
_INLINE_MAX_LINES = 5_000


@dataclass(frozen=True, slots=True)
class LogWriterOptions:
    """``batch_lines`` / ``batch_interval_s``: when queued lines go to the head table.
    ``max_pending_lines``: acknowledged lines not yet in DuckDB; beyond it appends get
    ``OverloadedError`` (429). ``rate_lines_per_s`` / ``rate_burst_lines``: per-source
    token bucket (None = unlimited). ``maintenance_interval_s``: how often to check
    whether the head should become an archive and old archives should go.
    ``compact_busy_lines_per_s``: while lines arrive faster than this (measured between
    two maintenance steps), merging fresh archives waits, because it competes with
    ingest for the CPU (a merge re-reads, re-sorts and re-compresses every line), until
    ``compact_max_deferred`` archives were written since merging last caught up; then
    the whole backlog is merged at once. 0 = merge whenever enough archives exist."""

    batch_lines: int = 100_000
    batch_interval_s: float = 1.0
    max_pending_lines: int = 2_000_000
    rate_lines_per_s: float | None = None
    rate_burst_lines: int = 100_000
    max_sources: int = 100_000
    maintenance_interval_s: float = 10.0
    shutdown_timeout_s: float = 30.0
    compact_busy_lines_per_s: float = 20_000.0
    compact_max_deferred: int = 16

    def __post_init__(self) -> None:
        if self.batch_lines < 1 or self.max_pending_lines < 1 or self.batch_interval_s <= 0:
            raise BadDataError("cannot configure log writer: limits must be positive")
        if self.compact_busy_lines_per_s < 0 or self.compact_max_deferred < 1:
            raise BadDataError(
                "cannot configure log writer: compact_busy_lines_per_s must not be negative "
                "and compact_max_deferred must be positive"
            )


class RateLimiter:
    """Token buckets per source (lines per second, with a burst). The least recently
    used sources are forgotten past ``max_sources``."""

    def __init__(
        self, rate: float, burst: int, *, max_sources: int, clock: Callable[[], float]
    ) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max = max_sources
        self._clock = clock
        self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()

    def take(self, source: str, n: int) -> None:
        """Spend ``n`` tokens or raise ``OverloadedError`` with the wait in Retry-After."""
        now = self._clock()
        tokens, last = self._buckets.pop(source, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if n > tokens:
            self._buckets[source] = (tokens, now)
            wait = (min(n, self._burst) - tokens) / self._rate if self._rate > 0 else 60.0
            raise OverloadedError(
                f"cannot accept {n} log lines from {source!r}: over the rate limit of "
                f"{self._rate:g} lines/s",
                retry_after_s=max(1.0, wait),
            )
        self._buckets[source] = (tokens - n, now)
        while len(self._buckets) > self._max:
            self._buckets.popitem(last=False)


@dataclass(frozen=True, slots=True)
class _Queued:
    lsn: int
    batch: LogBatch
    dedup: DedupKey | None


class LogWriter:
    """Implements :class:`~monitoringserver.logs.api.LogAppender`."""

    def __init__(
        self,
        store: LogStore,
        wal: Wal,
        options: LogWriterOptions | None = None,
        *,
        parser: LogParser | None = None,
        aggregator: LogAggregator | None = None,
        bus: Bus[LogBatch] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._wal = wal
        self._opt = options or LogWriterOptions()
        self._parser = parser or LogParser(clock=clock)
        self._aggregator = aggregator
        self._bus = bus
        self._clock = clock
        opt = self._opt
        self._limiter = (
            RateLimiter(
                opt.rate_lines_per_s, opt.rate_burst_lines, max_sources=opt.max_sources, clock=clock
            )
            if opt.rate_lines_per_s is not None
            else None
        )
        self._last_seq = store.dedup_state()
        self._queue: list[_Queued] = []
        self._queued_lines = 0
        self._append_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._closing = False
        self._rejected: dict[str, int] = {}
        self._last_maintenance = clock()
        self._maintenance: asyncio.Task[None] | None = None
        self._appended = 0  # lines accepted since start
        self._rate_mark = (clock(), 0)  # (time, _appended) at the last maintenance step
        self._unmerged = 0  # archives written since merging last caught up

    # -- counters -----------------------------------------------------------------------

    @property
    def queued_lines(self) -> int:
        return self._queued_lines

    def counters(self) -> tuple[int, dict[str, int], dict[str, int]]:
        """``(wal_bytes, rejected_by_reason, repaired_by_reason)`` since start."""
        p = self._parser.stats()
        repaired = {k: p[k] for k in ("invalid_utf8", "truncated") if p.get(k)}
        return self._wal.size_bytes(), dict(self._rejected), repaired

    # -- append -------------------------------------------------------------------------

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        if self._closing:
            raise UnavailableError("cannot append logs: the log store is shutting down")
        n = len(batch)
        if self._queued_lines and self._queued_lines + n > self._opt.max_pending_lines:
            raise OverloadedError(
                f"cannot append {n} log lines: the write queue holds {self._queued_lines} "
                f"lines (limit {self._opt.max_pending_lines})",
                retry_after_s=max(1.0, self._opt.batch_interval_s * 2),
            )
        if self._limiter is not None and n:
            self._limiter.take(source or "anonymous", n)
        async with self._append_lock:
            if dedup is not None and dedup.batch_seq <= self._last_seq.get(dedup.agent_id, -1):
                return LogAppendResult(accepted=0, duplicate=True)
            if self._cheap(batch):
                # Nothing to parse: filtering and a buffered WAL write take less time
                # than a hop to a worker thread, so they run here.
                kept, rejected, repaired = self._filter(batch)
                lsn = None
                if len(kept) or dedup is not None:
                    payload = encode_frame(kept, dedup)
                    lsn = self._wal.try_append(payload)
                    if lsn is None:  # would fsync, rotate or wait: off the loop
                        lsn = await asyncio.to_thread(self._wal.append, payload)
            else:
                kept, lsn, rejected, repaired = await asyncio.to_thread(self._prepare, batch, dedup)
            if dedup is not None:
                self._last_seq[dedup.agent_id] = dedup.batch_seq
            if lsn is not None:
                self._queue.append(_Queued(lsn, kept, dedup))
                self._queued_lines += len(kept)
                if self._queued_lines >= self._opt.batch_lines:
                    self._wake.set()
        self._appended += len(kept)
        for reason, count in rejected.items():
            self._rejected[reason] = self._rejected.get(reason, 0) + count
        if len(kept) and self._bus is not None:
            self._bus.publish(kept)
        return LogAppendResult(accepted=len(kept), rejected=rejected, repaired=repaired)

    @staticmethod
    def _cheap(batch: LogBatch) -> bool:
        """No line to parse (every level given) and a bounded size."""
        if len(batch) > _INLINE_MAX_LINES:
            return False
        levels = set(batch.level)
        return "" not in levels and "unknown" not in levels

    def _prepare(
        self, batch: LogBatch, dedup: DedupKey | None
    ) -> tuple[LogBatch, int | None, dict[str, int], dict[str, int]]:
        """On a worker thread: parse, sanitise, filter by time, write the WAL record."""
        kept, rejected, repaired = self._filter(batch)
        lsn = None
        if len(kept) or dedup is not None:
            lsn = self._wal.append(encode_frame(kept, dedup))
        return kept, lsn, rejected, repaired

    def _filter(self, batch: LogBatch) -> tuple[LogBatch, dict[str, int], dict[str, int]]:
        """Parse raw lines, sanitise, drop lines outside the time window."""
        before = self._parser.stats()
        parsed = self._parser.enrich(batch)
        after = self._parser.stats()
        repaired = {
            k: after.get(k, 0) - before.get(k, 0)
            for k in ("invalid_utf8", "truncated")
            if after.get(k, 0) - before.get(k, 0) > 0
        }
        keep, rejected = self._window(parsed.ts_ms)
        kept = parsed if keep.all() else parsed.take(np.flatnonzero(keep).tolist())
        return kept, rejected, repaired

    def _window(self, ts: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
        now_ms = int(self._clock() * 1000)
        opts = self._store.options
        future = ts > now_ms + int(opts.accept_future_s * 1000)
        old = (
            ts < now_ms - int(opts.retention_s * 1000)
            if opts.retention_s is not None
            else np.zeros(len(ts), dtype=bool)
        )
        rejected: dict[str, int] = {}
        if (nf := int(future.sum())) > 0:
            rejected["too_far_in_future"] = nf
        if (no := int(old.sum())) > 0:
            rejected["too_old"] = no
        return ~(future | old), rejected

    # -- batcher and maintenance ----------------------------------------------------------

    async def run(self) -> None:
        """Commit queued lines and maintain archives until closed; errors are logged and
        retried."""
        while not (self._closing and not self._queue):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._opt.batch_interval_s)
            self._wake.clear()
            try:
                await self.commit_pending()
            except Exception:
                log.exception("cannot commit to the log store; retrying")
                await asyncio.sleep(self._opt.batch_interval_s)
            due = self._clock() - self._last_maintenance >= self._opt.maintenance_interval_s
            if due and (self._maintenance is None or self._maintenance.done()):
                # Archiving takes seconds: it runs beside the batcher, not in its way.
                self._last_maintenance = self._clock()
                self._maintenance = asyncio.create_task(self._maintain_logged())
        if self._maintenance is not None:
            await self._maintenance

    async def _maintain_logged(self) -> None:
        try:
            await self.maintain()
        except Exception:
            log.exception("cannot archive or rotate the log store; will retry")

    async def commit_pending(self) -> int:
        """Insert every queued record into the head table now; return lines committed."""
        async with self._commit_lock:
            taken, self._queue = self._queue, []
            if not taken:
                return 0
            batch = LogBatch.concat([q.batch for q in taken])
            dedups = _highest_per_agent(q.dedup for q in taken)
            try:
                await self._store.ainsert(batch, lsn=taken[-1].lsn, dedup=dedups)
            except BaseException:
                self._queue = taken + self._queue
                raise
            self._queued_lines -= len(batch)
            await asyncio.to_thread(self._after_commit, batch, taken[-1].lsn)
            return len(batch)

    def _after_commit(self, batch: LogBatch, lsn: int) -> None:
        """On a worker thread, off the request path: count the committed lines (host,
        level, logger, patterns) and drop the WAL records DuckDB now holds."""
        if self._aggregator is not None:
            self._aggregator.aggregate(batch)
        self._wal.truncate_before(lsn)

    async def maintain(self, *, force_flush: bool = False) -> None:
        """Archive the head when due (or ``force_flush``), merge fresh archives unless
        ingest is busy (see ``compact_busy_lines_per_s``), then rotate by age and size."""
        now = self._clock()
        self._last_maintenance = now
        since, appended = self._rate_mark
        self._rate_mark = (now, self._appended)
        rate = (self._appended - appended) / (now - since) if now > since else 0.0
        if force_flush or await asyncio.to_thread(self._store.needs_flush):
            await self.commit_pending()
            if await asyncio.to_thread(self._store.flush) is not None:
                self._unmerged += 1
        limit = self._opt.compact_busy_lines_per_s
        busy = limit > 0 and rate > limit
        if not busy or self._unmerged >= self._opt.compact_max_deferred:
            merged = await asyncio.to_thread(self._store.compact)
            # Past the bound while busy: catch up on the whole backlog now.
            while busy and merged is not None:
                merged = await asyncio.to_thread(self._store.compact)
            if merged is None:
                self._unmerged = 0
        opts = self._store.options
        if opts.retention_s is not None or opts.max_total_bytes is not None:
            await asyncio.to_thread(self._store.rotate)

    # -- replay and close ---------------------------------------------------------------

    def replay(self) -> int:
        """Re-apply WAL records past the committed position (call before ``run``)."""
        start = self._store.committed_lsn()
        total = 0
        last = start
        chunk: list[LogBatch] = []
        dedups: dict[str, DedupKey] = {}
        for lsn, payload in self._wal.replay(start):
            batch, dedup = decode_frame(payload)
            if dedup is not None:
                dedups[dedup.agent_id] = dedup
                prev = self._last_seq.get(dedup.agent_id, -1)
                self._last_seq[dedup.agent_id] = max(prev, dedup.batch_seq)
            chunk.append(batch)
            last = lsn
            if sum(len(b) for b in chunk) >= self._opt.batch_lines:
                merged = LogBatch.concat(chunk)
                self._store.insert(merged, lsn=last, dedup=list(dedups.values()))
                if self._aggregator is not None:
                    self._aggregator.aggregate(merged)
                total += len(merged)
                chunk, dedups = [], {}
        if chunk or dedups:
            merged = LogBatch.concat(chunk)
            self._store.insert(merged, lsn=last, dedup=list(dedups.values()))
            if self._aggregator is not None:
                self._aggregator.aggregate(merged)
            total += len(merged)
        if last > start:
            self._wal.truncate_before(last)
        return total

    async def aclose(self) -> None:
        """Refuse new appends, commit everything acknowledged and let a running archive
        step finish (bounded by ``shutdown_timeout_s``)."""
        self._closing = True
        self._wake.set()
        async with asyncio.timeout(self._opt.shutdown_timeout_s):
            while self._queue:
                await self.commit_pending()
            async with self._commit_lock:
                pass  # a commit the batcher started has also counted its lines
            if self._maintenance is not None:
                await self._maintenance


def _highest_per_agent(keys: Iterable[DedupKey | None]) -> list[DedupKey]:
    """The highest ``batch_seq`` of each agent among ``keys``: the store keeps the
    greatest sequence per agent, so one row per agent per commit stores the same state
    as one per queued batch (each is a DuckDB upsert, 1-2 ms)."""
    best: dict[str, DedupKey] = {}
    for key in keys:
        if key is not None:
            prev = best.get(key.agent_id)
            if prev is None or key.batch_seq > prev.batch_seq:
                best[key.agent_id] = key
    return list(best.values())
