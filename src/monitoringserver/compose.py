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

from monitoringserver.ingest.grpc_local import LocalAgent
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.ingest.grpc_state import StateManagerService
from monitoringserver.ingest.syslog import SyslogServer
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.pipeline.log_pipeline import LogPipeline, open_log_pipeline
from monitoringserver.promql.engine import Engine
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.admin_storage import create_admin_storage_router
from monitoringserver.web.routers.dashboard import dashboard_router
from monitoringserver.web.routers.dashboard_events import EventHub
from monitoringserver.web.routers.federate import federate_router
from monitoringserver.web.routers.forwarding import Forwarding
from monitoringserver.web.routers.imports import import_router
from monitoringserver.web.routers.logs import LogsWeb, logs_router
from monitoringserver.web.routers.loki import loki_router
from monitoringserver.web.routers.nodes import nodes_router
from monitoringserver.web.routers.prometheus import create_router as prometheus_router
from monitoringserver.web.routers.pushgateway import Pushgateway
from monitoringserver.web.routers.remote_write import RemoteWrite
from monitoringserver.web.routers.seed004 import seed004_router
from monitoringserver.web.routers.targets import Scraping

__all__ = ["wire_all"]


def wire_all(server: Server) -> None:
    """Register every optional subsystem, in the service order documented above."""
    pushgateway, scraping, forwarding = Pushgateway(), Scraping(), Forwarding()
    remote_write = RemoteWrite()
    logs = _Logs()
    nodes = _Nodes()
    events = EventHub()

    def dashboard(s: Server) -> APIRouter:
        pipeline = logs.open(s)
        return dashboard_router(
            s,
            nodes=nodes.open(s).registry,
            log_bus=pipeline.bus,
            log_querier=pipeline.querier,
            hub=events,
        )

    server.router_factories += [
        _promql_router,
        _admin_storage_router,
        remote_write.router,
        import_router,
        federate_router,
        seed004_router,
        pushgateway.router,
        scraping.router,
        logs.router,
        nodes.router,
        dashboard,
    ]
    server.service_factories += [
        lambda s: nodes.grpc_service(s, logs.open(s)),
        nodes.local_agent_service,
        lambda s: Service(*scraping.service(s)),
        lambda s: Service(*pushgateway.service(s)),
        logs.syslog_service,
        logs.service,
        nodes.registry_service,
        lambda s: Service(*forwarding.service(s)),
        lambda s: Service(*remote_write.service(s)),
    ]


def _promql_router(server: Server) -> APIRouter:
    assert server.store is not None
    querier = server.store.querier
    return prometheus_router(Engine(querier, server.config.promql), querier)


def _admin_storage_router(server: Server) -> APIRouter:
    assert server.store is not None
    return create_admin_storage_router(server.store.flush_now)


async def _nothing() -> None:
    return None


@dataclass
class _NodeParts:
    registry: NodeRegistry
    hub: ControlHub
    audit: AuditLog


@dataclass
class _Nodes:
    """Node registry, control hub and audit log, shared by gRPC, the API and the local agent."""

    parts: _NodeParts | None = None

    def open(self, server: Server) -> _NodeParts:
        if self.parts is None:
            assert server.database is not None
            audit = AuditLog(server.database)
            opts = server.config.nodes
            registry = NodeRegistry(
                server.database,
                stale_after_s=opts.stale_after_s,
                flush_interval_s=opts.flush_interval_s,
            )
            self.parts = _NodeParts(registry, ControlHub(audit), audit)
        return self.parts

    def router(self, server: Server) -> APIRouter:
        p = self.open(server)
        return nodes_router(p.registry, p.hub, p.audit)

    def registry_service(self, server: Server) -> Service:
        registry = self.open(server).registry
        return Service("node-registry", registry.run, registry.aclose)

    def grpc_service(self, server: Server, logs: LogPipeline) -> Service:
        assert server.store is not None
        p = self.open(server)
        cfg = server.config
        auth = server.tokens if cfg.auth.enabled else None
        agents = NodeAgentService(
            server.store.appender,
            registry=p.registry,
            hub=p.hub,
            log_appender=logs.writer,
            authenticator=auth,
            options=cfg.grpc,
        )
        grpc_server = GrpcServer(
            agents,
            listen=cfg.server.grpc_listen,
            state_manager=StateManagerService(server.store.appender, authenticator=auth),
            options=cfg.grpc,
            addr_file=server.data_dir / "grpc.addr",
        )

        async def run() -> None:
            await grpc_server.start()
            await grpc_server.run()

        return Service("grpc", run, grpc_server.aclose)

    def local_agent_service(self, server: Server) -> Service:
        cfg = server.config.agent
        if not cfg.local:
            return Service("local-agent", _nothing, _nothing)
        assert server.store is not None
        p = self.open(server)
        agent = LocalAgent(
            server.store.appender,
            registry=p.registry,
            hub=p.hub,
            node_id=cfg.node_id or None,
            interval_s=cfg.interval_s,
            service_allowlist=cfg.service_allowlist,
        )
        return Service("local-agent", agent.run, agent.aclose)


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
