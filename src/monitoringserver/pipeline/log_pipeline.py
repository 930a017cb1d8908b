"""One call that builds the embedded log pipeline for ``server.py``.

``open_log_pipeline`` creates the store (tables in the shared database, archives in
``directory/archives``), the WAL (``directory/wal``), parser, aggregator, bus, writer
and query engine, and replays the WAL. ``server.py`` passes ``pipeline.writer`` as the
``LogAppender`` (gRPC, HTTP, Loki, syslog), ``pipeline.querier`` as the ``LogQuerier``,
connects ``metrics_sink`` to the metric store, runs :meth:`LogPipeline.run` in its task
group and awaits :meth:`LogPipeline.aclose` at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from monitoringserver.logs.aggregator import AggregationRules, LogAggregator
from monitoringserver.logs.api import MetricsSink
from monitoringserver.logs.compressor import CompressorConfig, LogCompressor
from monitoringserver.logs.parser import LogParser, ParserOptions
from monitoringserver.logs.query import LogQueryEngine
from monitoringserver.logs.store import LogStore, LogStoreOptions
from monitoringserver.model.logs import LogBatch
from monitoringserver.pipeline.bus import Bus
from monitoringserver.pipeline.log_writer import LogWriter, LogWriterOptions
from monitoringserver.pipeline.wal import Wal
from monitoringserver.storage.db import Database
from monitoringserver.storage.options import FsyncMode

__all__ = ["LogPipeline", "open_log_pipeline"]


@dataclass(slots=True)
class LogPipeline:
    store: LogStore
    writer: LogWriter
    querier: LogQueryEngine
    aggregator: LogAggregator
    parser: LogParser
    compressor: LogCompressor
    bus: Bus[LogBatch]
    wal: Wal
    replayed_lines: int

    async def run(self) -> None:
        """The batcher/maintenance loop and the aggregator's export loop."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.writer.run())
            tg.create_task(self.aggregator.run())

    async def aclose(self) -> None:
        """Commit what was acknowledged, export the last window, close the WAL and bus."""
        await self.writer.aclose()
        await self.aggregator.aclose()
        await self.aggregator.export()
        self.bus.close()
        await asyncio.to_thread(self.wal.close)


def open_log_pipeline(
    db: Database,
    directory: Path,
    *,
    store_options: LogStoreOptions | None = None,
    writer_options: LogWriterOptions | None = None,
    parser_options: ParserOptions | None = None,
    rules: AggregationRules | None = None,
    metrics_sink: MetricsSink | None = None,
    wal_fsync: FsyncMode = "interval",
    wal_segment_bytes: int = 64 << 20,
    bus: Bus[LogBatch] | None = None,
    clock: Callable[[], float] = time.time,
) -> LogPipeline:
    """Build and replay the log pipeline (blocking; call before serving)."""
    store = LogStore(db, directory / "archives", store_options, clock=clock)
    wal = Wal(directory / "wal", segment_bytes=wal_segment_bytes, fsync=wal_fsync)
    parser = LogParser(parser_options, clock=clock)
    aggregator = LogAggregator(rules, sink=metrics_sink, clock=clock)
    the_bus: Bus[LogBatch] = bus if bus is not None else Bus()
    writer = LogWriter(
        store, wal, writer_options, parser=parser, aggregator=aggregator, bus=the_bus, clock=clock
    )
    replayed = writer.replay()
    querier = LogQueryEngine(store, counters=writer.counters)
    compressor = LogCompressor(CompressorConfig(level=store.options.compression_level))
    return LogPipeline(
        store, writer, querier, aggregator, parser, compressor, the_bus, wal, replayed
    )
