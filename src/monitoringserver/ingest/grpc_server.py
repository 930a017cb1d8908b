"""gRPC ingest: the ``monitoringserver.v1.NodeAgent`` service and the listener.

Runs on the server's event loop (``grpc.aio``), next to uvicorn. Every call needs a
bearer token with ``monitoring:write`` (checked through the injected
:class:`~monitoringserver.auth.api.Authenticator`; ``None`` turns auth off).

Sessions: ``Register`` opens a session whose series table (id -> labels) lives here,
bounded by ``GrpcOptions.max_sessions`` (least recently used sessions are dropped; their
agents get ``NOT_FOUND`` and register again). Batches are handed to the
:class:`~monitoringserver.metrics.api.MetricAppender` with ``DedupKey(agent_id,
batch_seq)`` so retries and spool replays are applied once. When the appender is a
:class:`~monitoringserver.metrics.api.SeriesIdAppender`, each session remembers the
store id of every series it defined (resolved on first use), so a batch costs one
array lookup instead of a label-set lookup per series.
"""

from __future__ import annotations

import functools
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc

from monitoringserver.auth.api import Authenticator, Scope
from monitoringserver.errors import BadDataError, ConfigError, NotFoundError, UnavailableError
from monitoringserver.ingest.grpc_common import (
    GrpcOptions,
    InflightLimiter,
    abort,
    authorize,
    run_to_completion,
)
from monitoringserver.ingest.grpc_decode import (
    MetricMeta,
    SeriesTable,
    decode_columns,
    decode_samples,
)
from monitoringserver.ingest.grpc_logs import LogIngest
from monitoringserver.logs.api import LogAppender
from monitoringserver.metrics.api import DedupKey, MetricAppender, SeriesIdAppender
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import CommandOutcome, NodeInfo
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc

__all__ = ["GrpcServer", "NodeAgentService"]

_MAX_AGENT_ID = 200


@dataclass(slots=True)
class _Session:
    agent_id: str
    table: SeriesTable


def _agent_id(value: str) -> str:
    if not value or len(value) > _MAX_AGENT_ID or not value.isprintable():
        raise BadDataError(f"cannot accept agent_id {value[:40]!r}: 1-200 printable characters")
    return value


class NodeAgentService(pb_grpc.NodeAgentServicer):
    """The servicer. ``registry``/``hub`` may be None (ingest without node tracking);
    ``log_appender`` None answers ``SendLogs``/``StreamLogs`` with UNAVAILABLE."""

    def __init__(
        self,
        appender: MetricAppender,
        *,
        registry: NodeRegistry | None = None,
        hub: ControlHub | None = None,
        log_appender: LogAppender | None = None,
        authenticator: Authenticator | None = None,
        options: GrpcOptions | None = None,
    ) -> None:
        self._appender = appender
        self._registry = registry
        self._hub = hub
        self._auth = authenticator
        self.options = options or GrpcOptions()
        self.limiter = InflightLimiter(self.options.max_inflight, self.options.retry_after_s)
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._last_seq: dict[str, int] = {}
        #: metric name -> self-description sent by agents (for /api/v1/metadata).
        self.metadata: dict[str, MetricMeta] = {}
        self.logs = LogIngest(
            log_appender,
            limiter=self.limiter,
            check_agent_id=_agent_id,
            authenticator=authenticator,
            overload_wait_s=self.options.overload_wait_s,
            on_batch=registry.touch if registry is not None else None,
        )

    # ------------------------------------------------------------ sessions

    def _open_session(self, agent_id: str) -> str:
        session_id = uuid.uuid4().hex
        table = SeriesTable(agent_id, max_series=self.options.max_series_per_session)
        self._sessions[session_id] = _Session(agent_id, table)
        while len(self._sessions) > self.options.max_sessions:
            self._sessions.popitem(last=False)
        return session_id

    def _session(self, session_id: str, agent_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None or session.agent_id != agent_id:
            raise NotFoundError(
                f"cannot find session {session_id[:32]!r} of agent {agent_id!r}: register again"
            )
        self._sessions.move_to_end(session_id)
        return session

    # ------------------------------------------------------------ RPCs

    async def Register(  # noqa: N802 (gRPC method name)
        self, request: pb.RegisterRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            agent_id = _agent_id(request.agent_id)
            n = request.node
            if self._registry is not None:
                await self._registry.register(
                    agent_id,
                    NodeInfo(
                        hostname=n.hostname,
                        os=n.os,
                        os_version=n.os_version,
                        kernel=n.kernel,
                        arch=n.arch,
                        cpu_count=n.cpu_count,
                        memory_bytes=n.memory_bytes,
                        agent_version=n.agent_version,
                        labels=dict(n.labels),
                        boot_time_s=n.boot_time_s,
                    ),
                )
            return pb.RegisterResponse(
                session_id=self._open_session(agent_id),
                suggested_interval_s=self.options.suggested_interval_s,
                last_batch_seq=self._last_seq.get(agent_id, 0),
            )
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def Heartbeat(  # noqa: N802 (gRPC method name)
        self, request: pb.HeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.HeartbeatResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            agent_id = _agent_id(request.agent_id)
            self._session(request.session_id, agent_id)
            if self._registry is not None:
                if not self._registry.known(agent_id):
                    raise NotFoundError(f"cannot find node {agent_id!r}: register again")
                s = request.stats
                self._registry.heartbeat(
                    agent_id,
                    {
                        "total_reports": s.total_reports,
                        "failed_reports": s.failed_reports,
                        "success_rate_percent": s.success_rate_percent,
                        "last_report_status": s.last_report_status,
                        "current_interval": s.current_interval_s,
                        "adaptive": s.adaptive,
                        "spool_depth": s.spool_depth,
                        "spool_bytes": s.spool_bytes,
                        "spool_dropped": s.spool_dropped,
                        "last_report_time": s.last_report_time_s,
                    },
                )
            return pb.HeartbeatResponse(suggested_interval_s=self.options.suggested_interval_s)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def SendMetrics(  # noqa: N802 (gRPC method name)
        self, request: pb.MetricsBatch, context: grpc.aio.ServicerContext
    ) -> pb.SendMetricsResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            agent_id = _agent_id(request.agent_id)
            with self.limiter:
                if request.self_contained:
                    table = SeriesTable(agent_id, max_series=self.options.max_series_per_session)
                else:
                    table = self._session(request.session_id, agent_id).table
                table.define(request.series, self.metadata)
                ids, ts, values = decode_columns(request)
                if self._registry is not None:
                    self._registry.touch(agent_id)
                if len(ids) == 0:
                    return pb.SendMetricsResponse(
                        suggested_interval_s=self.options.suggested_interval_s
                    )
                seq = request.batch_seq
                dedup = DedupKey(agent_id, seq) if seq else None
                appender = self._appender
                if isinstance(appender, SeriesIdAppender):
                    # Label sets are resolved once per session; a batch is an id lookup.
                    sids = table.store_ids(
                        ids, functools.partial(appender.resolve_series, source=agent_id)
                    )
                    append = appender.append_ids(sids, ts, values, source=agent_id, dedup=dedup)
                else:
                    batch = decode_samples(request, table)
                    append = appender.append(batch, source=agent_id, dedup=dedup)
                result = await run_to_completion(append)
            if seq > self._last_seq.get(agent_id, 0):
                self._last_seq[agent_id] = seq
            return pb.SendMetricsResponse(
                accepted=result.accepted,
                duplicate=result.duplicate,
                rejected=result.rejected,
                suggested_interval_s=self.options.suggested_interval_s,
            )
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def SendLogs(  # noqa: N802 (gRPC method name)
        self, request: bytes, context: grpc.aio.ServicerContext
    ) -> pb.SendLogsResponse:
        """``request``: an encoded ``LogBatch`` (see :mod:`.grpc_logs`)."""
        return await self.logs.send(request, context)

    async def StreamLogs(  # noqa: N802 (gRPC method name)
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> pb.StreamLogsResponse:
        """``request_iterator``: encoded ``LogBatch`` messages (see :mod:`.grpc_logs`)."""
        return await self.logs.stream(request_iterator, context)

    async def Control(  # noqa: N802 (gRPC method name)
        self, request: pb.ControlSubscribe, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ControlCommand]:
        try:
            authorize(self._auth, context, Scope.WRITE)
            agent_id = _agent_id(request.agent_id)
            self._session(request.session_id, agent_id)
            if self._hub is None:
                raise UnavailableError("cannot open control stream: remote control is off")
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)
        hub = self._hub
        sub = hub.subscribe(agent_id)
        if self._registry is not None:
            self._registry.set_connected(agent_id, True)
        try:
            # Initial metadata tells the agent the subscription is in place (its
            # ``initial_metadata()`` resolves) before any command is sent.
            await context.send_initial_metadata(())
            while (command := await sub.get()) is not None:
                yield pb.ControlCommand(
                    command_id=command.command_id,
                    kind=command.kind,
                    args=dict(command.args),
                    timeout_s=command.timeout_s,
                )
        finally:
            sub.close()
            # A newer stream of the same agent may have replaced this one.
            if self._registry is not None:
                self._registry.set_connected(agent_id, hub.connected(agent_id))

    def close_streams(self) -> None:
        """End every Control stream (before a graceful stop, which would wait on them)."""
        if self._hub is not None:
            self._hub.close()

    async def ReportResult(  # noqa: N802 (gRPC method name)
        self, request: pb.CommandResult, context: grpc.aio.ServicerContext
    ) -> pb.ReportResultResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            if self._hub is not None:
                self._hub.resolve(
                    CommandOutcome(
                        command_id=request.command_id,
                        node_id=_agent_id(request.agent_id),
                        ok=request.ok,
                        exit_status=request.exit_status,
                        output=request.output[-16384:],
                        error=request.error[-4096:],
                    )
                )
            return pb.ReportResultResponse()
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)


_RAW_REQUESTS = frozenset({"SendLogs", "StreamLogs"})
_HANDLERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def _add_node_agent(servicer: NodeAgentService, server: grpc.aio.Server) -> None:
    """Register the ``NodeAgent`` methods like the generated
    ``add_NodeAgentServicer_to_server``, except that ``SendLogs``/``StreamLogs`` get
    their requests as bytes (decoded by :mod:`.grpc_logs`, after admission)."""
    service = pb.DESCRIPTOR.services_by_name["NodeAgent"]
    handlers = {
        m.name: _HANDLERS[m.client_streaming, m.server_streaming](
            getattr(servicer, m.name),
            request_deserializer=(
                None if m.name in _RAW_REQUESTS else getattr(pb, m.input_type.name).FromString
            ),
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in service.methods
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


class GrpcServer:
    """The ``grpc.aio`` listener. Create and use it inside the running event loop.

    ``await start()`` binds ``listen`` (``HOST:PORT``; port 0 picks a free one, see
    :attr:`port`; with ``addr_file`` the bound ``host:port`` is written there),
    ``await run()`` serves until :meth:`aclose` (then returns), ``await aclose()`` ends
    the Control streams and stops with a grace period.
    """

    def __init__(
        self,
        node_agent: NodeAgentService,
        *,
        listen: str = "127.0.0.1:9941",
        state_manager: pb_grpc.StateManagerServicer | None = None,
        options: GrpcOptions | None = None,
        addr_file: Path | None = None,
    ) -> None:
        self.listen = listen
        self.options = options or node_agent.options
        self._node_agent = node_agent
        self._state_manager = state_manager
        self._addr_file = addr_file
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def start(self) -> int:
        opts = self.options
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", opts.max_message_bytes),
                ("grpc.max_send_message_length", opts.max_message_bytes),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.keepalive_timeout_ms", 20_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.server.max_pending_requests", opts.max_pending_calls),
                ("grpc.server.max_pending_requests_hard_limit", 2 * opts.max_pending_calls),
            ]
        )
        _add_node_agent(self._node_agent, server)
        if self._state_manager is not None:
            pb_grpc.add_StateManagerServicer_to_server(  # type: ignore[no-untyped-call]
                self._state_manager, server
            )
        if opts.tls_cert is not None and opts.tls_key is not None:
            creds = grpc.ssl_server_credentials(
                [(opts.tls_key.read_bytes(), opts.tls_cert.read_bytes())]
            )
            self.port = self._bind(server, creds)
        else:
            self.port = self._bind(server, None)
        await server.start()
        self._server = server
        if self._addr_file is not None:
            host = self.listen.rpartition(":")[0] or "127.0.0.1"
            host = "127.0.0.1" if host in ("0.0.0.0", "[::]", "") else host
            tmp = self._addr_file.with_suffix(".tmp")
            tmp.write_text(f"{host}:{self.port}\n")
            tmp.replace(self._addr_file)
        return self.port

    def _bind(self, server: grpc.aio.Server, creds: grpc.ServerCredentials | None) -> int:
        try:
            if creds is None:
                port = server.add_insecure_port(self.listen)
            else:
                port = server.add_secure_port(self.listen, creds)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.listen} (gRPC): {exc}") from exc
        if port == 0 and not self.listen.endswith(":0"):
            raise ConfigError(f"cannot listen on {self.listen} (gRPC): address in use")
        return int(port)

    async def run(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.wait_for_termination()

    async def aclose(self, grace_s: float = 5.0) -> None:
        server, self._server = self._server, None
        if self._addr_file is not None:
            self._addr_file.unlink(missing_ok=True)
        if server is not None:
            self._node_agent.close_streams()
            await server.stop(grace_s)
