"""NodeAgent gRPC service against a real grpc.aio server on 127.0.0.1 (port 0)."""

from __future__ import annotations

import array
import asyncio
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import BadDataError, OverloadedError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.ingest.grpc_status import RETRY_AFTER_KEY
from monitoringserver.logs.api import LogAppendResult
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.samples import SampleBatch
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import NodeStatus
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc
from monitoringserver.storage.db import Database


@dataclass
class FakeAppender:
    batches: list[SampleBatch] = field(default_factory=list)
    seen: set[DedupKey] = field(default_factory=set)
    fail: Exception | None = None

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        if self.fail is not None:
            raise self.fail
        if dedup is not None:
            if dedup in self.seen:
                return AppendResult(accepted=0, duplicate=True)
            self.seen.add(dedup)
        self.batches.append(batch)
        return AppendResult(accepted=len(batch))

    def rows(self) -> list[tuple[dict[str, str], int, float]]:
        return [(dict(lbl), t, v) for b in self.batches for lbl, t, v in b.rows()]


@dataclass
class FakeLogAppender:
    batches: list[LogBatch] = field(default_factory=list)
    seen: set[DedupKey] = field(default_factory=set)

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        if dedup is not None:
            if dedup in self.seen:
                return LogAppendResult(accepted=0, duplicate=True)
            self.seen.add(dedup)
        self.batches.append(batch)
        return LogAppendResult(accepted=len(batch))


class FakeAuth:
    def authenticate(self, credential: str) -> Principal | None:
        return {
            "writer": Principal("writer", frozenset({Scope.WRITE})),
            "reader": Principal("reader", frozenset({Scope.READ})),
        }.get(credential)


def sample_bytes(rows: Iterable[tuple[int, int, float]]) -> tuple[bytes, bytes, bytes]:
    ids, ts, vals = array.array("I"), array.array("q"), array.array("d")
    for i, t, v in rows:
        ids.append(i)
        ts.append(t)
        vals.append(v)
    return ids.tobytes(), ts.tobytes(), vals.tobytes()


def series_def(sid: int, name: str, **labels: str) -> pb.SeriesDef:
    pairs = [pb.Label(name="__name__", value=name)]
    pairs += [pb.Label(name=k, value=v) for k, v in labels.items()]
    return pb.SeriesDef(id=sid, labels=pairs, unit="bytes", help="h", type="gauge")


@dataclass
class Harness:
    server: GrpcServer
    service: NodeAgentService
    appender: FakeAppender
    logs: FakeLogAppender
    registry: NodeRegistry
    hub: ControlHub
    audit: AuditLog
    channel: grpc.aio.Channel
    stub: pb_grpc.NodeAgentStub

    def md(self, token: str = "writer") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {token}"),)

    async def register(self, agent_id: str = "node-1") -> str:
        resp = await self.stub.Register(
            pb.RegisterRequest(
                agent_id=agent_id, node=pb.NodeInfo(hostname="h1", os="Linux", cpu_count=4)
            ),
            metadata=self.md(),
        )
        return str(resp.session_id)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    db = Database(tmp_path / "state.duckdb")
    appender, logs = FakeAppender(), FakeLogAppender()
    registry = NodeRegistry(db)
    audit = AuditLog(db)
    hub = ControlHub(audit, default_timeout_s=5)
    options = GrpcOptions(max_inflight=4, suggested_interval_s=60)
    service = NodeAgentService(
        appender,
        registry=registry,
        hub=hub,
        log_appender=logs,
        authenticator=FakeAuth(),
        options=options,
    )
    server = GrpcServer(service, listen="127.0.0.1:0", addr_file=tmp_path / "grpc.addr")
    port = await server.start()
    assert (tmp_path / "grpc.addr").read_text() == f"127.0.0.1:{port}\n"
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(
            server,
            service,
            appender,
            logs,
            registry,
            hub,
            audit,
            channel,
            pb_grpc.NodeAgentStub(channel),  # type: ignore[no-untyped-call]
        )
    finally:
        await channel.close()
        await server.aclose(grace_s=1)
        db.close()


async def test_register_then_send_columnar_batch(harness: Harness) -> None:
    session = await harness.register()
    ids, ts, vals = sample_bytes([(0, 1000, 1.5), (1, 1000, 2.5), (0, 2000, 3.5)])
    resp = await harness.stub.SendMetrics(
        pb.MetricsBatch(
            agent_id="node-1",
            batch_seq=1,
            session_id=session,
            series=[series_def(0, "node_load1"), series_def(1, "node_load5", mode="x")],
            series_ids=ids,
            timestamps_ms=ts,
            values=vals,
        ),
        metadata=harness.md(),
    )
    assert resp.accepted == 3
    assert not resp.duplicate
    assert resp.suggested_interval_s == 60
    rows = harness.appender.rows()
    assert rows == [
        ({"__name__": "node_load1", "server_id": "node-1"}, 1000, 1.5),
        ({"__name__": "node_load5", "mode": "x", "server_id": "node-1"}, 1000, 2.5),
        ({"__name__": "node_load1", "server_id": "node-1"}, 2000, 3.5),
    ]
    assert harness.service.metadata["node_load1"].unit == "bytes"
    # Second batch of the session refers to known ids only; a sparse subset is compacted.
    ids, ts, vals = sample_bytes([(1, 3000, 9.0)])
    resp = await harness.stub.SendMetrics(
        pb.MetricsBatch(
            agent_id="node-1",
            batch_seq=2,
            session_id=session,
            series_ids=ids,
            timestamps_ms=ts,
            values=vals,
        ),
        metadata=harness.md(),
    )
    assert resp.accepted == 1
    assert harness.appender.rows()[-1] == (
        {"__name__": "node_load5", "mode": "x", "server_id": "node-1"},
        3000,
        9.0,
    )
    assert harness.registry.get("node-1").info.cpu_count == 4


async def test_duplicate_batch_seq_is_applied_once(harness: Harness) -> None:
    session = await harness.register()
    ids, ts, vals = sample_bytes([(0, 1000, 1.0)])
    msg = pb.MetricsBatch(
        agent_id="node-1",
        batch_seq=7,
        session_id=session,
        series=[series_def(0, "up")],
        series_ids=ids,
        timestamps_ms=ts,
        values=vals,
    )
    first = await harness.stub.SendMetrics(msg, metadata=harness.md())
    second = await harness.stub.SendMetrics(msg, metadata=harness.md())
    assert (first.accepted, first.duplicate) == (1, False)
    assert (second.accepted, second.duplicate) == (0, True)
    assert len(harness.appender.rows()) == 1
    again = await harness.stub.Register(
        pb.RegisterRequest(agent_id="node-1"), metadata=harness.md()
    )
    assert again.last_batch_seq == 7


async def test_self_contained_batch_needs_no_session(harness: Harness) -> None:
    ids, ts, vals = sample_bytes([(5, 1000, 1.0)])
    resp = await harness.stub.SendMetrics(
        pb.MetricsBatch(
            agent_id="node-9",
            batch_seq=1,
            self_contained=True,
            series=[series_def(5, "up", server_id="custom")],
            series_ids=ids,
            timestamps_ms=ts,
            values=vals,
        ),
        metadata=harness.md(),
    )
    assert resp.accepted == 1
    assert harness.appender.rows() == [({"__name__": "up", "server_id": "custom"}, 1000, 1.0)]


def _bad(**kw: object) -> pb.MetricsBatch:
    ids, ts, vals = sample_bytes([(0, 1000, 1.0), (1, 1000, 2.0)])
    fields: dict[str, object] = {
        "agent_id": "node-1",
        "batch_seq": 1,
        "self_contained": True,
        "series": [series_def(0, "a"), series_def(1, "b")],
        "series_ids": ids,
        "timestamps_ms": ts,
        "values": vals,
    }
    fields.update(kw)
    return pb.MetricsBatch(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (_bad(series=[series_def(0, "a")]), "unknown series id 1"),
        (_bad(values=b"\x00" * 8), "hold 2, 2 and 1 elements"),
        (_bad(timestamps_ms=b"\x00" * 15), "not a multiple of 8"),
        (_bad(series_ids=b"\x00" * 3), "not a multiple of 4"),
        (_bad(series=[pb.SeriesDef(id=0), series_def(1, "b")]), "no __name__"),
        (_bad(series=[series_def(0, "bad-name"), series_def(1, "b")]), "cannot accept metric"),
        (_bad(agent_id=""), "agent_id"),
        (
            _bad(series=[series_def(0, "a", **{"1x": "v"}), series_def(1, "b")]),
            "label name",
        ),
    ],
)
async def test_malformed_batches_are_invalid_argument(
    harness: Harness, msg: pb.MetricsBatch, reason: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(msg, metadata=harness.md())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in (info.value.details() or "")
    assert harness.appender.batches == []


async def test_unknown_session_is_not_found(harness: Harness) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(
            _bad(self_contained=False, session_id="nope"), metadata=harness.md()
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer wrong"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer reader"),), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_auth_is_required(
    harness: Harness, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.Register(pb.RegisterRequest(agent_id="x"), metadata=metadata)
    assert info.value.code() == code


async def test_store_overload_is_resource_exhausted_with_retry_hint(harness: Harness) -> None:
    harness.appender.fail = OverloadedError("cannot append: queue full", retry_after_s=2.5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(_bad(), metadata=harness.md())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata() or ())[RETRY_AFTER_KEY] == "2500"


async def test_too_many_concurrent_appends_are_refused(harness: Harness) -> None:
    gate = asyncio.Event()
    started = 0

    class SlowAppender(FakeAppender):
        async def append(
            self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
        ) -> AppendResult:
            nonlocal started
            started += 1
            await gate.wait()
            return AppendResult(accepted=len(batch))

    harness.service._appender = SlowAppender()
    calls = [
        asyncio.ensure_future(harness.stub.SendMetrics(_bad(batch_seq=i), metadata=harness.md()))
        for i in range(1, 5)
    ]
    async with asyncio.timeout(10):
        while started < 4:
            await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(_bad(batch_seq=99), metadata=harness.md())
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert RETRY_AFTER_KEY in dict(info.value.trailing_metadata() or ())
    gate.set()
    assert [r.accepted for r in await asyncio.gather(*calls)] == [2, 2, 2, 2]
    assert harness.service.limiter.refused == 1


async def test_unexpected_error_is_internal_without_details(harness: Harness) -> None:
    harness.appender.fail = RuntimeError("secret stack")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(_bad(), metadata=harness.md())
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (info.value.details() or "")


async def test_bad_data_from_store_is_invalid_argument(harness: Harness) -> None:
    harness.appender.fail = BadDataError("cannot append batch: too old")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(_bad(), metadata=harness.md())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_logs_unary_and_stream_with_dedup(harness: Harness) -> None:
    rec = pb.LogRecord(timestamp_ms=5, level="WARN", logger="app", source="/var/log/x", message="m")
    resp = await harness.stub.SendLogs(
        pb.LogBatch(agent_id="node-1", batch_seq=1, records=[rec, rec]), metadata=harness.md()
    )
    assert (resp.accepted, resp.duplicate) == (2, False)

    async def gen() -> AsyncIterator[pb.LogBatch]:
        for seq in (1, 2, 3):
            yield pb.LogBatch(agent_id="node-1", batch_seq=seq, records=[rec])

    sresp = await harness.stub.StreamLogs(gen(), metadata=harness.md())
    assert (sresp.accepted, sresp.batches, sresp.duplicates) == (2, 3, 1)
    first = next(iter(harness.logs.batches[0].records()))
    assert (first.level, first.server_id, first.logger) == ("warning", "node-1", "app")


async def test_heartbeat_records_stats(harness: Harness) -> None:
    session = await harness.register()
    resp = await harness.stub.Heartbeat(
        pb.HeartbeatRequest(
            agent_id="node-1",
            session_id=session,
            stats=pb.AgentStats(total_reports=10, failed_reports=1, success_rate_percent=90),
        ),
        metadata=harness.md(),
    )
    assert resp.suggested_interval_s == 60
    stats = harness.registry.get("node-1").stats
    assert stats["total_reports"] == 10
    assert stats["success_rate_percent"] == 90


async def test_heartbeat_of_forgotten_node_asks_to_register(harness: Harness) -> None:
    session = await harness.register()
    await harness.registry.forget("node-1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.Heartbeat(
            pb.HeartbeatRequest(agent_id="node-1", session_id=session), metadata=harness.md()
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_control_stream_round_trip_and_offline(harness: Harness) -> None:
    session = await harness.register()
    stream = harness.stub.Control(
        pb.ControlSubscribe(agent_id="node-1", session_id=session), metadata=harness.md()
    )
    async with asyncio.timeout(10):
        while not harness.hub.connected("node-1"):
            await asyncio.sleep(0.01)
    assert harness.registry.get("node-1").status is NodeStatus.ONLINE

    async def agent_side() -> None:
        cmd = await stream.read()
        assert cmd.kind == "service"
        assert dict(cmd.args) == {"action": "restart", "name": "nginx"}
        await harness.stub.ReportResult(
            pb.CommandResult(
                agent_id="node-1", command_id=cmd.command_id, ok=True, output="restarted"
            ),
            metadata=harness.md(),
        )

    agent = asyncio.ensure_future(agent_side())
    outcome = await harness.hub.dispatch(
        "node-1", "service", {"action": "restart", "name": "nginx"}, actor="alice"
    )
    await agent
    assert outcome.ok
    assert outcome.output == "restarted"
    entries = await harness.audit.entries()
    assert entries[0].status == "ok"
    assert entries[0].actor == "alice"
    stream.cancel()
    async with asyncio.timeout(10):
        while harness.hub.connected("node-1"):
            await asyncio.sleep(0.01)
    assert harness.registry.get("node-1").status is NodeStatus.OFFLINE


async def test_control_stream_is_confirmed_before_any_command(harness: Harness) -> None:
    session = await harness.register()
    stream = harness.stub.Control(
        pb.ControlSubscribe(agent_id="node-1", session_id=session), metadata=harness.md()
    )
    async with asyncio.timeout(10):
        await stream.initial_metadata()
    # Subscribed by the time the confirmation arrives: no polling needed.
    assert harness.hub.connected("node-1")
    stream.cancel()


async def test_append_survives_client_deadline(harness: Harness) -> None:
    gate = asyncio.Event()

    class Slow(FakeAppender):
        async def append(
            self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
        ) -> AppendResult:
            await gate.wait()
            return await super().append(batch, source=source, dedup=dedup)

    slow = Slow()
    harness.service._appender = slow
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await harness.stub.SendMetrics(_bad(batch_seq=5), metadata=harness.md(), timeout=0.2)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gate.set()
    async with asyncio.timeout(10):  # the cut-off append still completes...
        while not slow.batches:
            await asyncio.sleep(0.01)
    retry = await harness.stub.SendMetrics(_bad(batch_seq=5), metadata=harness.md())
    assert retry.duplicate  # ...so the client's retry is a duplicate, not a second copy
    assert len(slow.batches) == 1


async def test_thousands_of_simultaneous_calls_are_served() -> None:
    # gRPC core's default hard limit of 3,000 pending calls would cancel most of these.
    server = GrpcServer(NodeAgentService(FakeAppender()), listen="127.0.0.1:0")
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.NodeAgentStub(channel)  # type: ignore[no-untyped-call]
    try:
        replies = await asyncio.gather(
            *(stub.Register(pb.RegisterRequest(agent_id=f"a{i}")) for i in range(4000))
        )
    finally:
        await channel.close()
        await server.aclose(1)
    assert len({r.session_id for r in replies}) == 4000
