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

from prometheus_client import CollectorRegistry

from monitoringserver.metrics.api import MetricAppender, MetricQuerier
from monitoringserver.metrics.compactor import CompactionReport, Compactor
from monitoringserver.metrics.index import SeriesIndex, SeriesLimits
from monitoringserver.metrics.manifest import Manifest
from monitoringserver.metrics.schema import create_tables, load_series
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
        options: StorageOptions,
        clock: Callable[[], float],
    ) -> None:
        self._index = index
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
            tg.create_task(
                self._every(self._opt.flush_interval_s, self.flush_now), name="metric-flush"
            )
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

    async def _sync_wal(self) -> None:
        await asyncio.to_thread(self._wal.sync)

    async def flush_now(self) -> int:
        """Commit queued samples, then flush the head into Parquet parts; return rows."""
        await self.writer.commit_pending()
        return await asyncio.to_thread(self.compactor.flush_head)

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

    async def aclose(self) -> None:
        """Commit everything acknowledged (within the shutdown timeout) and close."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
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

    compactor = Compactor(db, manifest, index, options, on_job=on_job)
    writer = MetricWriter(db, index, wal, options, clock=clock, metrics=metrics)
    replayed = writer.replay()
    if replayed:
        log.info("replayed %d samples from the write-ahead log", replayed)
    store = EmbeddedMetricStore(
        db,
        index,
        manifest,
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
        options=options,
        clock=clock,
    )
