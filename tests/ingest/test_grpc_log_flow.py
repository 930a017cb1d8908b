"""SendLogs/StreamLogs admission and backpressure against a real grpc.aio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest

from monitoringserver.errors import OverloadedError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.ingest.grpc_status import RETRY_AFTER_KEY
from monitoringserver.logs.api import LogAppendResult
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.logs import LogBatch
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto import monitoring_pb2 as pb

_STREAM = "/monitoringserver.v1.NodeAgent/StreamLogs"
_SEND = "/monitoringserver.v1.NodeAgent/SendLogs"


class NoMetrics:
    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        return AppendResult(accepted=len(batch))


@dataclass
class OverloadedLogs:
    """Refuses the first ``refusals`` appends as overloaded (hint ``retry_after_s``)."""

    refusals: int = 0
    retry_after_s: float = 1.0
    batches: list[LogBatch] = field(default_factory=list)
    offers: int = 0

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        self.offers += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise OverloadedError(
                "cannot append logs: the write queue is full", retry_after_s=self.retry_after_s
            )
        self.batches.append(batch)
        return LogAppendResult(accepted=len(batch))


@dataclass
class Served:
    service: NodeAgentService
    channel: grpc.aio.Channel

    def stream(self) -> grpc.aio.StreamUnaryMultiCallable:
        """StreamLogs taking and giving bytes."""
        return self.channel.stream_unary(_STREAM)

    def send(self) -> grpc.aio.UnaryUnaryMultiCallable:
        """SendLogs taking and giving bytes."""
        return self.channel.unary_unary(_SEND)


@pytest.fixture
async def served(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Served, OverloadedLogs]]:
    wait_s, refusals, retry_after_s = request.param
    logs = OverloadedLogs(refusals=refusals, retry_after_s=retry_after_s)
    service = NodeAgentService(
        NoMetrics(), log_appender=logs, options=GrpcOptions(overload_wait_s=wait_s)
    )
    server = GrpcServer(service, listen="127.0.0.1:0")
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(service, channel), logs
    finally:
        await channel.close()
        await server.aclose(grace_s=1)


def _batch(seq: int, lines: int = 3, size: int = 10) -> bytes:
    rec = pb.LogRecord(timestamp_ms=5, level="info", message="x" * size)
    return pb.LogBatch(agent_id="web-1", batch_seq=seq, records=[rec] * lines).SerializeToString()


async def _gen(batches: list[bytes]) -> AsyncIterator[bytes]:
    for b in batches:
        yield b


@pytest.mark.parametrize("served", [(5.0, 3, 1.0)], indirect=True)
async def test_a_full_queue_is_waited_out_not_refused(
    served: tuple[Served, OverloadedLogs],
) -> None:
    srv, logs = served
    raw = await srv.stream()(_gen([_batch(1), _batch(2)]))
    resp = pb.StreamLogsResponse.FromString(raw)
    assert (resp.accepted, resp.batches) == (6, 2)
    assert logs.offers == 5  # the first batch was offered four times, never re-sent
    assert srv.service.logs.held == 3


@pytest.mark.parametrize(
    ("served", "hint_ms"),
    [
        ((0.0, 1, 2.5), "2500"),  # no waiting configured
        ((0.05, 1000, 1.0), "1000"),  # the overload outlasts the wait
        ((5.0, 1, 30.0), "30000"),  # the store asks for longer than the wait
    ],
    indirect=["served"],
)
async def test_lasting_overload_is_resource_exhausted_with_the_store_hint(
    served: tuple[Served, OverloadedLogs], hint_ms: str
) -> None:
    srv, logs = served
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await srv.send()(_batch(1))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(info.value.trailing_metadata() or ())[RETRY_AFTER_KEY] == hint_ms
    assert not logs.batches


@pytest.mark.parametrize("served", [(30.0, 10**9, 1.0)], indirect=True)
async def test_a_held_batch_is_refused_before_the_client_deadline(
    served: tuple[Served, OverloadedLogs],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served[0].send()(_batch(1), timeout=1.5)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served[1].offers > 1


@pytest.mark.parametrize("served", [(0.0, 1000, 1.0)], indirect=True)
async def test_a_stream_refused_midway_reports_its_status_not_internal(
    served: tuple[Served, OverloadedLogs],
) -> None:
    # Many large messages: the client is still writing when the server gives up.
    batches = [_batch(seq, lines=50, size=2000) for seq in range(1, 41)]
    call = served[0].stream()(_gen(batches))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert served[1].offers == 1  # nothing after the refused batch was decoded


@pytest.mark.parametrize("served", [(5.0, 0, 1.0)], indirect=True)
async def test_bytes_that_are_not_a_log_batch_are_invalid_argument(
    served: tuple[Served, OverloadedLogs],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await served[0].send()(b"\xff\xff\xff")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("served", [(5.0, 0, 1.0)], indirect=True)
async def test_too_many_appends_in_flight_are_refused_before_decoding(
    served: tuple[Served, OverloadedLogs],
) -> None:
    srv, logs = served
    limiter = srv.service.limiter
    limiter.inflight = limiter.limit  # every slot taken
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await srv.send()(b"\xff not even a message")
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    limiter.inflight = 0
    resp = pb.SendLogsResponse.FromString(await srv.send()(_batch(1)))
    assert resp.accepted == 3
    assert logs.offers == 1


@pytest.mark.parametrize("served", [(5.0, 0, 1.0)], indirect=True)
async def test_unread_stream_paces_the_client(served: tuple[Served, OverloadedLogs]) -> None:
    srv, logs = served
    gate = asyncio.Event()
    original = logs.append

    async def gated(
        batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        await gate.wait()
        return await original(batch, source=source, dedup=dedup)

    logs.append = gated  # type: ignore[method-assign]
    sent = 0

    async def counting() -> AsyncIterator[bytes]:
        nonlocal sent
        for seq in range(1, 201):
            sent += 1
            yield _batch(seq, lines=20, size=4000)

    call = asyncio.ensure_future(srv.stream()(counting()))
    async with asyncio.timeout(10):
        while sent < 5:
            await asyncio.sleep(0.01)
    # The server holds the first batch and reads no further: the transport's flow
    # control windows fill and the client stalls far before its 200 batches (16 MB)
    # are sent, however long it is given (half a second here).
    await asyncio.sleep(0.5)
    assert sent < 200
    gate.set()
    resp = pb.StreamLogsResponse.FromString(await call)
    assert (resp.batches, resp.accepted) == (200, 4000)
