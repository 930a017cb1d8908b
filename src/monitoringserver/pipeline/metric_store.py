"""The one entry point the composition root calls: :func:`open_metric_store`.

It opens (or adopts) the DuckDB database, creates the tables, loads the series index and
the manifest, deletes files the manifest does not list, replays the WAL, and returns a
:class:`MetricStoreHandle` whose ``appender`` and ``querier`` implement the
``metrics.api`` Protocols. ``run()`` runs the background work (batcher, head flush,
merges, retention) in a ``TaskGroup`` until ``aclose()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
from prometheus_client import CollectorRegistry

from monitoringserver.metrics.api import MetricAppender, MetricQuerier
from monitoringserver.metrics.compactor import CompactionReport, Compactor
from monitoringserver.metrics.head import MemHead
from monitoringserver.metrics.index import SeriesIndex, SeriesLimits
from monitoringserver.metrics.manifest import Manifest
from monitoringserver.metrics.schema import create_tables, get_state, load_series, set_state
from monitoringserver.metrics.selfmetrics import StoreMetrics
from monitoringserver.metrics.store import EmbeddedMetricStore
from monitoringserver.pipeline.metric_writer import MetricWriter
from monitoringserver.pipeline.wal import Wal
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import StorageOptions

__all__ = ["DATABASE_FILE", "MetricStoreHandle", "open_metric_store"]

log = logging.getLogger(__name__)

#: The DuckDB file inside the data directory (shared with other packages' state tables).
DATABASE_FILE = "monitoring.duckdb"


class MetricStoreHandle:
    """The open embedded metric store. Build it with :func:`open_metric_store`."""

    def __init__(
        self,
        *,
        database: Database,
        owns_database: bool,
        wal: Wal,
        writer: MetricWriter,
        store: EmbeddedMetricStore,
        compactor: Compactor,
        index: SeriesIndex,
        head: MemHead,
        head_full: asyncio.Event,
        options: StorageOptions,
        clock: Callable[[], float],
    ) -> None:
        self._index = index
        self.head = head
        self._head_full = head_full
        self.database = database
        self.writer = writer
        self.store = store
        self.compactor = compactor
        self._owns_database = owns_database
        self._wal = wal
        self._opt = options
        self._clock = clock
        self._stopping = asyncio.Event()
        self._closed = False

    @property
    def appender(self) -> MetricAppender:
        return self.writer

    @property
    def querier(self) -> MetricQuerier:
        return self.store

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self) -> None:
        """Run the batcher, head flushes, merges and retention until :meth:`aclose`."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run(), name="metric-batcher")
            tg.create_task(self._flush_loop(), name="metric-flush")
            tg.create_task(
                self._every(self._opt.merge_check_interval_s, self.maintain_now),
                name="metric-merge",
            )
            if self._opt.wal_fsync == "interval":
                # Appends sync at most this often; this covers a log that went quiet.
                tg.create_task(
                    self._every(self._opt.wal_fsync_interval_s, self._sync_wal), name="wal-sync"
                )

    async def _every(self, interval_s: float, job: Callable[[], object]) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=interval_s)
            if self._stopping.is_set():
                return
            try:
                await job()  # type: ignore[misc]
            except Exception:
                log.exception("metric store background job failed; will retry")

    async def _flush_loop(self) -> None:
        """Flush every ``flush_interval_s``, or sooner when the head is full."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._head_full.wait(), timeout=self._opt.flush_interval_s)
            self._head_full.clear()
            if self._stopping.is_set():
                return
            try:
                await self.flush_now()
            except Exception:
                log.exception("metric store background job failed; will retry")

    async def _sync_wal(self) -> None:
        await asyncio.to_thread(self._wal.sync)

    async def flush_now(self) -> int:
        """Commit queued samples, flush the head into Parquet parts and release the WAL
        segments whose samples are all in parts now; return rows written."""
        await self.writer.commit_pending()
        rows = await asyncio.to_thread(self.compactor.flush_head)
        await asyncio.to_thread(self._wal.truncate_before, self.head.flushed_lsn)
        return rows

    async def maintain_now(self) -> None:
        """Run every due merge, then retention."""
        now = self._now_ms()
        while await asyncio.to_thread(self.compactor.merge_once, now):
            if self._stopping.is_set():
                return
        await asyncio.to_thread(self.compactor.apply_retention, now)
        self._index.recount_active(now - self._opt.retention_ms("raw"))

    async def compact_now(self) -> None:
        """Flush, merge everything due and apply retention (tests and benchmarks)."""
        await self.writer.commit_pending()
        await asyncio.to_thread(self.compactor.compact_all, self._now_ms())
        await asyncio.to_thread(self._wal.truncate_before, self.head.flushed_lsn)

    async def aclose(self) -> None:
        """Commit everything acknowledged (within the shutdown timeout) and close."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        self._head_full.set()  # wakes the flush loop
        try:
            await self.writer.aclose()
        finally:
            await asyncio.to_thread(self.compactor.stop)
            self._wal.close()
            if self._owns_database:
                await asyncio.to_thread(self.database.close)


async def open_metric_store(
    data_dir: Path,
    options: StorageOptions,
    *,
    registry: CollectorRegistry,
    clock: Callable[[], float] = time.time,
    database: Database | None = None,
) -> MetricStoreHandle:
    """Open the store in ``data_dir`` and replay its WAL; ready to serve when it returns.

    With ``database`` the caller keeps ownership of that DuckDB file; otherwise
    ``data_dir/monitoring.duckdb`` is opened and closed by the handle.
    """
    return await asyncio.to_thread(_open, data_dir, options, registry, clock, database)


def _open(
    data_dir: Path,
    options: StorageOptions,
    registry: CollectorRegistry,
    clock: Callable[[], float],
    database: Database | None,
) -> MetricStoreHandle:
    data_dir.mkdir(parents=True, exist_ok=True)
    owns = database is None
    db = database or Database(data_dir / DATABASE_FILE, memory_limit=options.memory_limit)
    try:
        db.write(create_tables)
        db.write(_mark_head_lsn)
        index = SeriesIndex(
            SeriesLimits(
                options.max_series, options.max_series_per_metric, options.max_series_per_source
            )
        )
        index.load(load_series(db.cursor()))
        manifest = Manifest(data_dir / "metrics")
        manifest.load(db.cursor())
        removed = manifest.cleanup_unlisted()
        if removed:
            log.warning("deleted %d metric files not listed in the manifest", removed)
        wal = Wal(
            data_dir / "wal" / "metrics",
            segment_bytes=options.wal_segment_bytes,
            fsync=options.wal_fsync,
            fsync_interval_s=options.wal_fsync_interval_s,
        )
    except BaseException:
        if owns:
            db.close()
        raise
    metrics = StoreMetrics(registry)

    def on_job(report: CompactionReport) -> None:
        metrics.compaction.labels(report.kind).observe(report.seconds)

    head = _legacy_head(db)
    head_full = asyncio.Event()  # set from the event loop only (the writer's commits)
    compactor = Compactor(db, manifest, index, head, options, on_job=on_job)
    writer = MetricWriter(
        db, index, wal, options, head, clock=clock, metrics=metrics, on_head_full=head_full.set
    )
    replayed = writer.replay()
    if replayed:
        log.info("replayed %d samples from the write-ahead log", replayed)
    store = EmbeddedMetricStore(
        db,
        index,
        manifest,
        head,
        options,
        wal_bytes=wal.size_bytes,
        compaction=lambda: (compactor.last_job_wall_ms, compactor.last_job_seconds),
    )
    metrics.bind(store.stats, lambda: len(index))
    return MetricStoreHandle(
        database=db,
        owns_database=owns,
        wal=wal,
        writer=writer,
        store=store,
        compactor=compactor,
        index=index,
        head=head,
        head_full=head_full,
        options=options,
        clock=clock,
    )


def _mark_head_lsn(con: duckdb.DuckDBPyConnection) -> None:
    """Record ``head_lsn`` (where WAL replay starts) for a store made by a release that
    kept committed samples in the ``metric_head`` table: they are in that table or in
    parts up to ``wal_lsn``. A new store gets 0 (everything in the WAL is replayed)."""
    if con.execute("SELECT 1 FROM metric_state WHERE key = 'head_lsn'").fetchall():
        return
    set_state(con, "head_lsn", get_state(con, "wal_lsn"))


def _legacy_head(db: Database) -> MemHead:
    """A head holding the rows of the ``metric_head`` table, which releases before
    this one kept committed samples in (empty for stores made by this one; a flush
    deletes the rows it wrote out)."""
    head = MemHead()
    cur = db.cursor()
    got = cur.execute(
        "SELECT series_id, ts, bits, batch FROM metric_head ORDER BY batch"
    ).fetchnumpy()
    if len(got["ts"]):
        head.add(
            int(got["batch"][-1]),
            get_state(cur, "wal_lsn"),
            np.asarray(got["series_id"], dtype=np.uint64),
            np.asarray(got["ts"], dtype=np.int64),
            np.asarray(got["bits"], dtype=np.int64).view(np.float64),
        )
    return head
