"""``MetricWriter``: the write path of the embedded metric store.

``append`` validates and filters a batch (time window), resolves series ids (cardinality
limits), writes one WAL record and only then returns (the acknowledgement). A batcher
task commits queued records — at least ``batch_rows`` rows at a time, or whatever is
queued after ``batch_interval_s``: one DuckDB transaction stores their new series, agent
sequence numbers and the committed WAL position (``wal_lsn``), then their samples join
the in-memory head (:class:`~monitoringserver.metrics.head.MemHead`) as one batch. WAL
segments are truncated only by a head flush, up to the last record whose samples are in
Parquet parts (``head_lsn``). :meth:`replay` rebuilds the head at start from the records
after ``head_lsn`` and re-applies the ones after ``wal_lsn`` to the database too.

Loop affinity: ``append``, ``run``, ``commit_pending`` and ``aclose`` run on one event
loop; blocking work (WAL writes, DuckDB) goes to threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import operator
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import duckdb
import numpy as np
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError, OverloadedError, UnavailableError
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.metrics.head import MemHead
from monitoringserver.metrics.index import SeriesBlock, SeriesIndex
from monitoringserver.metrics.schema import get_state
from monitoringserver.metrics.selfmetrics import StoreMetrics
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.metric_frame import (
    MetricFrame,
    SampleStage,
    StagedRows,
    decode_frame,
    encode_frame,
    head_commit,
    series_rows,
)
from monitoringserver.pipeline.wal import Wal
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import StorageOptions

__all__ = ["MetricWriter"]

log = logging.getLogger(__name__)
_NO_IDS = np.empty(0, dtype=np.uint64)
_NO_TS = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)
_MAX_CHUNK_ROWS = 1 << 20  # 24 MiB of staged columns


@dataclass(frozen=True, slots=True)
class _Queued:
    lsn: int
    #: The record's series rows, agent and sequence (its columns are in ``rows``).
    frame: MetricFrame
    rows: StagedRows | None


def _ts_range(ts: NDArray[np.int64]) -> tuple[int, int] | None:
    """``(min, max)`` of ``ts``, or ``None`` when it is empty."""
    return (int(ts.min()), int(ts.max())) if len(ts) else None


class MetricWriter:
    """Implements :class:`~monitoringserver.metrics.api.MetricAppender` and
    :class:`~monitoringserver.metrics.api.SeriesIdAppender`."""

    def __init__(
        self,
        db: Database,
        index: SeriesIndex,
        wal: Wal,
        options: StorageOptions,
        head: MemHead,
        *,
        clock: Callable[[], float] = time.time,
        metrics: StoreMetrics | None = None,
        on_head_full: Callable[[], None] | None = None,
    ) -> None:
        self._db = db
        self._head = head
        self._on_head_full = on_head_full
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
        self._batch = head.last_batch  # the number of the last head batch
        # WAL position of the last commit handed to the head (or flushed):
        self._head_lsn = get_state(cur, "head_lsn")
        # Loop-confined state:
        self._append_lock = asyncio.Lock()
        self._commit_lock = asyncio.Lock()
        self._queue: list[_Queued] = []
        self._stage = SampleStage(min(options.batch_rows, _MAX_CHUNK_ROWS))
        self._queued_rows = 0  # acknowledged rows not yet committed to the head
        # Series created but not yet in a WAL record (ascending ids):
        self._new_blocks: list[SeriesBlock] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._subscribers: list[Callable[[SampleBatch], None]] = []
        # The label sets of the last batch appended by label and their ids:
        self._recent: tuple[tuple[Labels, ...], NDArray[np.uint64]] = ((), _NO_IDS)

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
        self._admit(len(batch))
        async with self._append_lock:
            if self._is_duplicate(dedup):
                return AppendResult(accepted=0, duplicate=True)
            keep, rejected = self._window(batch.ts_ms, _ts_range(batch.ts_ms))
            sub = batch if keep is None else batch.select(keep)
            sids, created = self._series_ids(sub, source)
            if created is not None:
                self._new_blocks.append(created)
            await self._write(
                sids,
                np.ascontiguousarray(sub.ts_ms, dtype=np.int64),
                np.ascontiguousarray(sub.values, dtype=np.float64),
                dedup,
                lambda: sub,
                bounds=None,
            )
        return await self._acknowledged(len(sids), rejected)

    def resolve_series(self, series: Sequence[Labels], *, source: str = "") -> NDArray[np.uint64]:
        """See :class:`~monitoringserver.metrics.api.SeriesIdAppender`. New series travel
        in the WAL with the next batch written (whichever caller's it is)."""
        if self._closing:
            raise UnavailableError("cannot resolve series: the metric store is shutting down")
        recent, recent_ids = self._recent
        if len(series) == len(recent) and all(map(operator.is_, series, recent)):
            # The label sets of the last appended batch, the very objects: ids are for
            # life and label sets immutable, so no second lookup (a remote-write route
            # learning the ids of a batch it has just appended).
            return recent_ids.copy()
        ids, created = self._index.resolve_block(series, source)
        if created is not None:
            self._new_blocks.append(created)
        return ids

    async def append_ids(
        self,
        series_ids: NDArray[np.uint64],
        ts_ms: NDArray[np.int64],
        values: NDArray[np.float64],
        *,
        source: str = "",
        dedup: DedupKey | None = None,
    ) -> AppendResult:
        """See :class:`~monitoringserver.metrics.api.SeriesIdAppender`."""
        n = len(ts_ms)
        if len(series_ids) != n or len(values) != n:
            raise BadDataError(
                "cannot append samples: series_ids, ts_ms and values differ in length "
                f"({len(series_ids)}, {n}, {len(values)})"
            )
        sids = np.ascontiguousarray(series_ids, dtype=np.uint64)
        sid_max = int(sids.max()) if n else 0
        if n and sid_max >= len(self._index):
            raise BadDataError(f"cannot append samples: series id {sid_max} was never issued")
        self._admit(n)
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        vals = np.ascontiguousarray(values, dtype=np.float64)
        # Each bound is computed once per request: the window check and the WAL record's
        # column widths share them (the event loop runs this for every request).
        span = _ts_range(ts)
        async with self._append_lock:
            if self._is_duplicate(dedup):
                return AppendResult(accepted=0, duplicate=True)
            keep, rejected = self._window(ts, span)
            bounds = None
            if keep is not None:
                sids, ts, vals = sids[keep], ts[keep], vals[keep]
            elif span is not None:
                bounds = (sid_max, *span)
            await self._write(
                sids, ts, vals, dedup, lambda: self._batch_of(sids, ts, vals), bounds=bounds
            )
        return await self._acknowledged(len(sids), rejected)

    def _admit(self, n: int) -> None:
        if self._closing:
            raise UnavailableError("cannot append samples: the metric store is shutting down")
        if self._queued_rows and self._queued_rows + n > self._opt.max_pending_rows:
            raise OverloadedError(
                f"cannot append {n} samples: the write queue holds {self._queued_rows} rows "
                f"(limit {self._opt.max_pending_rows})",
                retry_after_s=max(1.0, self._opt.batch_interval_s * 2),
            )
        if len(self._head) >= 2 * self._opt.head_max_rows:
            # Flushes are behind (a slow or full disk): refuse rather than grow the
            # in-memory head without bound. Senders retry; nothing acknowledged is lost.
            raise OverloadedError(
                f"cannot append {n} samples: the head holds {len(self._head)} rows, twice "
                f"head_max_rows ({self._opt.head_max_rows}); flushes are behind",
                retry_after_s=5.0,
            )

    def _is_duplicate(self, dedup: DedupKey | None) -> bool:
        if dedup is not None and dedup.batch_seq <= self._last_seq.get(dedup.agent_id, -1):
            if self._metrics:
                self._metrics.duplicates.inc()
            return True
        return False

    async def _write(
        self,
        sids: NDArray[np.uint64],
        ts: NDArray[np.int64],
        values: NDArray[np.float64],
        dedup: DedupKey | None,
        batch: Callable[[], SampleBatch],
        *,
        bounds: tuple[int, int, int] | None,
    ) -> None:
        """Write one WAL record (with every series created since the last record) and
        queue it; call under the append lock. ``batch`` builds what subscribers get;
        ``bounds`` is ``(max id, min ts, max ts)`` of the samples when known (exact)."""
        new, self._new_blocks = tuple(self._new_blocks), []
        frame = MetricFrame(
            sids,
            ts,
            values,
            new,
            dedup.agent_id if dedup else "",
            dedup.batch_seq if dedup else -1,
            series_rows(new) if new else None,
        )
        try:
            payload = encode_frame(frame, bounds)
            # A buffered write that cannot block is cheaper inline than a thread hop.
            lsn = self._wal.try_append(payload)
            if lsn is None:
                lsn = await asyncio.to_thread(self._wal.append, payload)
            del payload
        except BaseException:
            # Series created meanwhile have higher ids: keep the order dense.
            self._new_blocks[:0] = new
            raise
        if dedup is not None:
            self._last_seq[dedup.agent_id] = dedup.batch_seq
        # The queue keeps the series rows only: a million label sets waiting for the
        # commit would reach the oldest GC generation and trigger full collections
        # (hundreds of ms on the event loop) while a fleet defines its series. The
        # samples are staged side by side for the commit to scan.
        meta = MetricFrame(_NO_IDS, _NO_TS, _NO_VALUES, (), frame.agent_id, frame.batch_seq)
        if new:
            meta = dataclasses.replace(meta, rows=frame.rows)
        self._queue.append(_Queued(lsn, meta, self._stage.add(sids, ts, values)))
        self._queued_rows += len(sids)
        self._index.observe(sids, ts)
        if self._subscribers:
            sub = batch()
            for callback in self._subscribers:
                callback(sub)
        if self._queued_rows >= self._opt.batch_rows:
            self._wake.set()

    async def _acknowledged(self, accepted: int, rejected: dict[str, int]) -> AppendResult:
        # An inline WAL write never suspends: yield once so the batcher, flushes and
        # other requests run between the appends of a tight producer.
        await asyncio.sleep(0)
        if self._metrics:
            self._metrics.appended.inc(accepted)
            for reason, count in rejected.items():
                self._metrics.rejected.labels(reason).inc(count)
        return AppendResult(accepted=accepted, rejected=rejected)

    def _batch_of(
        self, sids: NDArray[np.uint64], ts: NDArray[np.int64], values: NDArray[np.float64]
    ) -> SampleBatch:
        uniq, inverse = np.unique(sids, return_inverse=True)
        labels = self._index.labels_many(uniq.tolist())
        return SampleBatch(labels, inverse.astype(np.uint32).reshape(-1), ts, values)

    def _series_ids(
        self, batch: SampleBatch, source: str
    ) -> tuple[NDArray[np.uint64], SeriesBlock | None]:
        """Series id per sample (and the series created): one index lookup per distinct
        label set the samples use, then one vectorised ``take`` from batch positions to ids."""
        n_series = len(batch.series)
        used = np.zeros(n_series, dtype=np.bool_)
        used[batch.series_idx] = True
        if used.all():
            ids, created = self._index.resolve_block(batch.series, source)
            self._recent = (tuple(batch.series), ids)
            return np.take(ids, batch.series_idx), created
        positions = np.flatnonzero(used)
        ids, created = self._index.resolve_block(
            [batch.series[i] for i in positions.tolist()], source
        )
        lookup = np.zeros(n_series, dtype=np.uint64)
        lookup[positions] = ids
        return np.take(lookup, batch.series_idx), created

    def _window(
        self, ts: NDArray[np.int64], span: tuple[int, int] | None
    ) -> tuple[NDArray[np.bool_] | None, dict[str, int]]:
        """``(keep mask or None when every sample is inside, rejected counts by reason)``;
        ``span`` is ``_ts_range(ts)``."""
        if span is None:
            return None, {}
        now_ms = int(self._clock() * 1000)
        hi = now_ms + int(self._opt.max_future_skew_s * 1000)
        lo = now_ms - int(self._opt.sample_age_limit_s * 1000)
        if lo <= span[0] and span[1] <= hi:
            return None, {}
        future = ts > hi
        old = ts < lo
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
        """Commit every queued record now (database, then head); return rows committed."""
        async with self._commit_lock:
            taken, self._queue = self._queue, []
            if not taken:
                return 0
            try:
                await self._db.awrite(self._commit_fn(taken))
            except BaseException:
                self._queue = taken + self._queue
                raise
            rows = self._to_head(taken)
            self._queued_rows -= rows
            return rows

    def _commit_fn(self, taken: list[_Queued]) -> Callable[[duckdb.DuckDBPyConnection], None]:
        """The database transaction for ``taken`` (see :func:`head_commit`)."""
        return head_commit([q.frame for q in taken], taken[-1].lsn)

    def _to_head(self, taken: list[_Queued]) -> int:
        """Hand the samples of committed records to the head, a batch per run of
        adjacent staged rows (views, no copy); return rows. A flush may run meanwhile
        on another thread and see only the first batches: they carry the WAL position
        of the previous commit, the last one that of ``taken``."""
        pieces = SampleStage.pieces([q.rows for q in taken])
        rows = 0
        for i, (sids, ts, values) in enumerate(pieces):
            self._batch += 1
            lsn = taken[-1].lsn if i == len(pieces) - 1 else self._head_lsn
            self._head.add(self._batch, lsn, sids, ts, values)
            rows += len(ts)
        if not pieces:  # no samples: the WAL position still moves
            self._batch += 1
            self._head.add(self._batch, taken[-1].lsn, _NO_IDS, _NO_TS, _NO_VALUES)
        self._head_lsn = taken[-1].lsn
        if self._on_head_full is not None and len(self._head) >= self._opt.head_max_rows:
            self._on_head_full()
        return rows

    # -- replay and close --------------------------------------------------------------

    def replay(self) -> int:
        """Rebuild the head from the WAL records past the last flush (``head_lsn``) and
        re-apply those past the committed position (``wal_lsn``) to the database too;
        return the samples put back in the head. Call before ``run``."""
        cur = self._db.cursor()
        committed = get_state(cur, "wal_lsn")
        start = min(get_state(cur, "head_lsn"), committed)
        chunk: list[_Queued] = []
        rows = total = 0
        for lsn, payload in self._wal.replay(start):
            frame = decode_frame(payload)
            if lsn <= committed:
                # Its series and sequence numbers are in the database already: only the
                # samples come back (into the head).
                frame = MetricFrame(frame.series_ids, frame.ts_ms, frame.values, (), "", -1)
            else:
                if chunk and chunk[-1].lsn <= committed:
                    total += self._replay_chunk(chunk, committed)
                    chunk, rows = [], 0
                self._index.load(
                    (block.first_id + i, labels, block.source, None, None)
                    for block in frame.blocks
                    for i, labels in enumerate(block.labels)
                )
                if frame.agent_id:
                    prev = self._last_seq.get(frame.agent_id, -1)
                    self._last_seq[frame.agent_id] = max(prev, frame.batch_seq)
            self._index.observe(frame.series_ids, frame.ts_ms)
            staged = self._stage.add(frame.series_ids, frame.ts_ms, frame.values)
            chunk.append(_Queued(lsn, frame, staged))
            rows += len(frame.ts_ms)
            if rows >= self._opt.batch_rows:
                total += self._replay_chunk(chunk, committed)
                chunk, rows = [], 0
        if chunk:
            total += self._replay_chunk(chunk, committed)
        return total

    def _replay_chunk(self, chunk: list[_Queued], committed: int) -> int:
        """Commit replayed records: to the database only when they are past
        ``committed`` (all of them or none), then to the head."""
        if chunk[-1].lsn > committed:
            self._db.write(self._commit_fn(chunk))
        return self._to_head(chunk)

    async def aclose(self) -> None:
        """Refuse new appends and commit everything acknowledged (bounded by the timeout)."""
        self._closing = True
        self._wake.set()
        async with asyncio.timeout(self._opt.shutdown_timeout_s):
            while self._queue:
                await self.commit_pending()
            # A commit the batcher took before the queue emptied may still be running:
            # wait for it, so the owner can close the database after this returns.
            async with self._commit_lock:
                pass
