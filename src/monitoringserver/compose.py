"""Wiring of every subsystem beyond the foundation into a :class:`~monitoringserver.server.Server`.

``server.compose()`` calls :func:`wire_all` before the server starts; each ``wire_*``
function registers router factories and service factories, which the server calls once
its database, metric store, tokens and registry exist. Nothing here runs at import time.

Service order matters: services are stopped in registration order after HTTP stops and
before the metric store closes. Producers go first (gRPC agents, the local agent,
scrapes, Pushgateway refreshes, syslog), then the log pipeline (its last aggregation
window still reaches the metric store), and forwarding last so it ships everything the
others wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastapi import APIRouter

from monitoringserver.ingest.syslog import SyslogServer
from monitoringserver.pipeline.log_pipeline import LogPipeline, open_log_pipeline
from monitoringserver.promql.engine import Engine
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.dashboard import dashboard_router
from monitoringserver.web.routers.dashboard_events import EventHub
from monitoringserver.web.routers.federate import federate_router
from monitoringserver.web.routers.forwarding import Forwarding
from monitoringserver.web.routers.imports import import_router
from monitoringserver.web.routers.logs import LogsWeb, logs_router
from monitoringserver.web.routers.loki import loki_router
from monitoringserver.web.routers.prometheus import create_router as prometheus_router
from monitoringserver.web.routers.pushgateway import Pushgateway
from monitoringserver.web.routers.remote_write import remote_write_router
from monitoringserver.web.routers.seed004 import seed004_router
from monitoringserver.web.routers.targets import Scraping

__all__ = ["wire_all"]


def wire_all(server: Server) -> None:
    """Register every optional subsystem, in the service order documented above."""
    pushgateway, scraping, forwarding = Pushgateway(), Scraping(), Forwarding()
    logs = _Logs()
    events = EventHub()

    def dashboard(s: Server) -> APIRouter:
        pipeline = logs.open(s)
        return dashboard_router(s, log_bus=pipeline.bus, log_querier=pipeline.querier, hub=events)

    server.router_factories += [
        _promql_router,
        remote_write_router,
        import_router,
        federate_router,
        seed004_router,
        pushgateway.router,
        scraping.router,
        logs.router,
        dashboard,
    ]
    server.service_factories += [
        lambda s: Service(*scraping.service(s)),
        lambda s: Service(*pushgateway.service(s)),
        logs.syslog_service,
        logs.service,
        lambda s: Service(*forwarding.service(s)),
    ]


def _promql_router(server: Server) -> APIRouter:
    assert server.store is not None
    querier = server.store.querier
    return prometheus_router(Engine(querier, server.config.promql), querier)


async def _nothing() -> None:
    return None


@dataclass
class _Logs:
    """The log pipeline, opened once on first use by either factory."""

    pipeline: LogPipeline | None = None
    syslog: SyslogServer | None = field(default=None, repr=False)

    def open(self, server: Server) -> LogPipeline:
        if self.pipeline is None:
            assert server.database is not None
            assert server.store is not None
            cfg = server.config
            # Blocking (replays the log WAL): runs once during start-up, before serving.
            self.pipeline = open_log_pipeline(
                server.database,
                server.data_dir / "logs",
                store_options=cfg.logs,
                writer_options=cfg.log_ingest,
                parser_options=cfg.log_parser,
                metrics_sink=server.store.appender.append,
                wal_fsync=cfg.storage.wal_fsync,
            )
        return self.pipeline

    def router(self, server: Server) -> APIRouter:
        p = self.open(server)
        web = LogsWeb(
            appender=p.writer,
            querier=p.querier,
            store=p.store,
            compressor=p.compressor,
            aggregator=p.aggregator,
            bus=p.bus,
            parser_stats=p.parser.stats,
        )
        router = APIRouter()
        router.include_router(logs_router(web))
        router.include_router(loki_router(web))
        return router

    def service(self, server: Server) -> Service:
        p = self.open(server)
        return Service("logs", p.run, p.aclose)

    def syslog_service(self, server: Server) -> Service:
        opts = server.config.syslog
        if not opts.enabled:
            return Service("syslog", _nothing, _nothing)
        syslog = SyslogServer(self.open(server).writer, opts)

        async def run() -> None:
            await syslog.start()
            await syslog.run()

        return Service("syslog", run, syslog.aclose)
