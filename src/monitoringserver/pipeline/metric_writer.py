"""``MetricWriter``: the write path of the embedded metric store.

``append`` validates and filters a batch (time window), resolves series ids (cardinality
limits), writes one WAL record and only then returns (the acknowledgement). A batcher
task inserts queued records into the DuckDB head table — at least ``batch_rows`` rows at
a time, or whatever is queued after ``batch_interval_s`` — and, in the same transaction,
new series, agent sequence numbers and the committed WAL position; WAL segments are
truncated only after that commit. :meth:`replay` re-applies WAL records past the
committed position at start.

Loop affinity: ``append``, ``run``, ``commit_pending`` and ``aclose`` run on one event
loop; blocking work (WAL writes, DuckDB) goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import OverloadedError, UnavailableError
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.metrics.index import NewSeries, SeriesIndex
from monitoringserver.metrics.schema import get_state, insert_series, set_state, upsert_dedup
from monitoringserver.metrics.selfmetrics import StoreMetrics
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.metric_frame import MetricFrame, decode_frame, encode_frame
from monitoringserver.pipeline.wal import Wal
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import StorageOptions

__all__ = ["MetricWriter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Queued:
    lsn: int
    frame: MetricFrame


class MetricWriter:
    """Implements :class:`~monitoringserver.metrics.api.MetricAppender`."""

    def __init__(
        self,
        db: Database,
        index: SeriesIndex,
        wal: Wal,
        options: StorageOptions,
        *,
        clock: Callable[[], float] = time.time,
        metrics: StoreMetrics | None = None,
    ) -> None:
        self._db = db
        self._index = index
        self._wal = wal
        self._opt = options
        self._clock = clock
        self._metrics = metrics
        cur = db.cursor()
        self._last_seq: dict[str, int] = {
            str(a): int(s)
            for a, s in cur.execute("SELECT agent_id, last_seq FROM metric_dedup").fetchall()
        }
        top = cur.execute("SELECT max(batch) FROM metric_head").fetchall()
        self._batch = int(top[0][0]) if top[0][0] is not None else 0
        # Loop-confined state:
        self._append_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._queue: list[_Queued] = []
        self._queued_rows = 0  # acknowledged rows not yet committed to the head
        self._orphans: list[NewSeries] = []  # created series whose WAL write failed
        self._wake = asyncio.Event()
        self._closing = False
        self._subscribers: list[Callable[[SampleBatch], None]] = []

    def subscribe(self, callback: Callable[[SampleBatch], None]) -> None:
        """Call ``callback(batch)`` with every acknowledged batch (the samples accepted,
        after the time-window filter), in acknowledgement order, on the event loop. It runs
        under the append lock: it must be quick, must not block and must not raise."""
        self._subscribers.append(callback)

    @property
    def queued_rows(self) -> int:
        return self._queued_rows

    # -- append ------------------------------------------------------------------------

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        if self._closing:
            raise UnavailableError("cannot append samples: the metric store is shutting down")
        n = len(batch)
        if self._queued_rows and self._queued_rows + n > self._opt.max_pending_rows:
            raise OverloadedError(
                f"cannot append {n} samples: the write queue holds {self._queued_rows} rows "
                f"(limit {self._opt.max_pending_rows})",
                retry_after_s=max(1.0, self._opt.batch_interval_s * 2),
            )
        async with self._append_lock:
            if dedup is not None and dedup.batch_seq <= self._last_seq.get(dedup.agent_id, -1):
                if self._metrics:
                    self._metrics.duplicates.inc()
                return AppendResult(accepted=0, duplicate=True)
            keep, rejected = self._window(batch)
            sub = batch if keep.all() else batch.select(keep)
            sids, created = self._series_ids(sub, source)
            new = (*self._orphans, *created)
            frame = MetricFrame(
                sids,
                np.ascontiguousarray(sub.ts_ms, dtype=np.int64),
                np.ascontiguousarray(sub.values, dtype=np.float64),
                new,
                dedup.agent_id if dedup else "",
                dedup.batch_seq if dedup else -1,
            )
            try:
                payload = encode_frame(frame)
                # A buffered write that cannot block is cheaper inline than a thread hop.
                lsn = self._wal.try_append(payload)
                if lsn is None:
                    lsn = await asyncio.to_thread(self._wal.append, payload)
                del payload
            except BaseException:
                self._orphans = list(new)
                raise
            self._orphans = []
            if dedup is not None:
                self._last_seq[dedup.agent_id] = dedup.batch_seq
            self._queue.append(_Queued(lsn, frame))
            self._queued_rows += len(sids)
            self._index.observe(sids, frame.ts_ms)
            for callback in self._subscribers:
                callback(sub)
            if self._queued_rows >= self._opt.batch_rows:
                self._wake.set()
        # An inline WAL write never suspends: yield once so the batcher, flushes and
        # other requests run between the appends of a tight producer.
        await asyncio.sleep(0)
        if self._metrics:
            self._metrics.appended.inc(len(sids))
            for reason, count in rejected.items():
                self._metrics.rejected.labels(reason).inc(count)
        return AppendResult(accepted=len(sids), rejected=rejected)

    def _series_ids(
        self, batch: SampleBatch, source: str
    ) -> tuple[NDArray[np.uint64], list[NewSeries]]:
        """Series id per sample: one index lookup per distinct label set the samples use,
        then one vectorised ``take`` from batch positions to ids."""
        n_series = len(batch.series)
        used = np.zeros(n_series, dtype=np.bool_)
        used[batch.series_idx] = True
        if used.all():
            ids, created = self._index.resolve(batch.series, source)
            return np.take(ids, batch.series_idx), created
        positions = np.flatnonzero(used)
        ids, created = self._index.resolve([batch.series[i] for i in positions.tolist()], source)
        lookup = np.zeros(n_series, dtype=np.uint64)
        lookup[positions] = ids
        return np.take(lookup, batch.series_idx), created

    def _window(self, batch: SampleBatch) -> tuple[np.ndarray, dict[str, int]]:
        now_ms = int(self._clock() * 1000)
        ts = batch.ts_ms
        future = ts > now_ms + int(self._opt.max_future_skew_s * 1000)
        old = ts < now_ms - int(self._opt.sample_age_limit_s * 1000)
        rejected = {}
        if (nf := int(future.sum())) > 0:
            rejected["too_far_in_future"] = nf
        if (no := int(old.sum())) > 0:
            rejected["too_old"] = no
        return ~(future | old), rejected

    # -- batcher -----------------------------------------------------------------------

    async def run(self) -> None:
        """Commit queued records until closed; errors are logged and retried."""
        while not (self._closing and not self._queue):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._opt.batch_interval_s)
            self._wake.clear()
            try:
                await self.commit_pending()
            except Exception:
                log.exception("cannot commit queued samples to the head table; retrying")
                await asyncio.sleep(self._opt.batch_interval_s)

    async def commit_pending(self) -> int:
        """Insert every queued record into the head table now; return rows committed."""
        async with self._commit_lock:
            taken, self._queue = self._queue, []
            if not taken:
                return 0
            try:
                rows = await self._db.awrite(self._commit_fn(taken))
            except BaseException:
                self._queue = taken + self._queue
                raise
            self._queued_rows -= rows
            await asyncio.to_thread(self._wal.truncate_before, taken[-1].lsn)
            return rows

    def _commit_fn(self, taken: list[_Queued]) -> Callable[[duckdb.DuckDBPyConnection], int]:
        self._batch += 1
        batch = self._batch
        frames = [q.frame for q in taken]
        lsn = taken[-1].lsn
        series = {
            s.series_id: (s.series_id, s.labels, s.source) for f in frames for s in f.new_series
        }
        seqs = {f.agent_id: f.batch_seq for f in frames if f.agent_id}
        n = sum(len(f.ts_ms) for f in frames)
        head_rows = {
            "series_id": np.concatenate([f.series_ids for f in frames]),
            "ts": np.concatenate([f.ts_ms for f in frames]),
            "bits": np.concatenate([f.values for f in frames]).view(np.int64),
        }

        def commit(con: duckdb.DuckDBPyConnection) -> int:
            insert_series(con, list(series.values()))
            if n:
                rows = head_rows  # scanned by name
                con.execute(
                    "INSERT INTO metric_head SELECT series_id, ts, bits, ?::BIGINT FROM rows",
                    [batch],
                )
                del rows
            upsert_dedup(con, seqs)
            set_state(con, "wal_lsn", lsn)
            return n

        return commit

    # -- replay and close --------------------------------------------------------------

    def replay(self) -> int:
        """Re-apply WAL records past the committed position (call before ``run``)."""
        start = get_state(self._db.cursor(), "wal_lsn")
        chunk: list[_Queued] = []
        rows = total = 0
        last = start
        for lsn, payload in self._wal.replay(start):
            frame = decode_frame(payload)
            self._index.load(
                (s.series_id, s.labels, s.source, None, None) for s in frame.new_series
            )
            self._index.observe(frame.series_ids, frame.ts_ms)
            if frame.agent_id:
                prev = self._last_seq.get(frame.agent_id, -1)
                self._last_seq[frame.agent_id] = max(prev, frame.batch_seq)
            chunk.append(_Queued(lsn, frame))
            rows += len(frame.ts_ms)
            last = lsn
            if rows >= self._opt.batch_rows:
                total += self._db.write(self._commit_fn(chunk))
                chunk, rows = [], 0
        if chunk:
            total += self._db.write(self._commit_fn(chunk))
        if last > start:
            self._wal.truncate_before(last)
        return total

    async def aclose(self) -> None:
        """Refuse new appends and commit everything acknowledged (bounded by the timeout)."""
        self._closing = True
        self._wake.set()
        async with asyncio.timeout(self._opt.shutdown_timeout_s):
            while self._queue:
                await self.commit_pending()
