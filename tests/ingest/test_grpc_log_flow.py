"""SendLogs/StreamLogs admission and backpressure against a real grpc.aio server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
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
            yield _batch(seq, lines=500, size=200)

    call = asyncio.ensure_future(srv.stream()(counting()))
    async with asyncio.timeout(10):
        while sent < 5:
            await asyncio.sleep(0.01)
    # The server holds the first group (10 batches) and reads no further: the
    # transport's flow control windows fill and the client stalls far before its 200
    # batches (20 MB) are sent, however long it is given (half a second here).
    await asyncio.sleep(0.5)
    assert sent < 200
    gate.set()
    resp = pb.StreamLogsResponse.FromString(await call)
    assert (resp.batches, resp.accepted) == (200, 100_000)


@dataclass
class SeqStore:
    """A log store with the writer's dedup rule (a batch whose sequence number is not
    above the agent's last one is a duplicate); ``refuse(dedup)`` makes it overloaded."""

    last: dict[str, int] = field(default_factory=dict)
    stored: list[int] = field(default_factory=list)  # the batch of every stored line
    keys: list[int] = field(default_factory=list)  # the sequence number of each append
    refuse: Callable[[DedupKey | None], bool] = lambda dedup: False

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        if self.refuse(dedup):
            raise OverloadedError("cannot append logs: the write queue is full")
        if dedup is not None:
            if dedup.batch_seq <= self.last.get(dedup.agent_id, -1):
                return LogAppendResult(accepted=0, duplicate=True)
            self.last[dedup.agent_id] = dedup.batch_seq
            self.keys.append(dedup.batch_seq)
        self.stored += [int(m.partition(":")[0]) for m in batch.message]
        return LogAppendResult(accepted=len(batch))


@contextlib.asynccontextmanager
async def _serving(
    store: SeqStore, wait_s: float, group_wait_s: float = 30.0
) -> AsyncIterator[Served]:
    """A server over ``store``; groups wait long for the next batch (by default), so
    they form by size, whatever the machine's load."""
    service = NodeAgentService(
        NoMetrics(), log_appender=store, options=GrpcOptions(overload_wait_s=wait_s)
    )
    service.logs.group_wait_s = group_wait_s
    service.logs.group_wait_s = group_wait_s
    server = GrpcServer(service, listen="127.0.0.1:0")
    port = await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(service, channel)
    finally:
        await channel.close()
        await server.aclose(grace_s=1)


def _seq_batch(seq: int, lines: int = 500, agent_id: str = "web-1") -> bytes:
    records = [pb.LogRecord(level="info", message=f"{seq}:{i}") for i in range(lines)]
    return pb.LogBatch(agent_id=agent_id, batch_seq=seq, records=records).SerializeToString()


def _once(store: SeqStore, seqs: range, lines: int = 500) -> bool:
    return sorted(store.stored) == [s for s in seqs for _ in range(lines)]


async def test_a_stream_is_appended_in_groups_of_batches() -> None:
    store = SeqStore()
    async with _serving(store, 5.0) as srv:
        raw = await srv.stream()(_gen([_seq_batch(s) for s in range(1, 31)]))
    resp = pb.StreamLogsResponse.FromString(raw)
    assert (resp.accepted, resp.batches, resp.duplicates) == (15_000, 30, 0)
    # The first batch alone (its acceptance tells the store's state), then groups.
    assert store.keys == [1, 10, 20, 30]
    assert _once(store, range(1, 31))


async def test_batches_without_sequence_numbers_are_grouped_too() -> None:
    store = SeqStore()
    async with _serving(store, 5.0) as srv:
        raw = await srv.stream()(_gen([_seq_batch(0, lines=100)] * 7))
    resp = pb.StreamLogsResponse.FromString(raw)
    assert (resp.accepted, resp.batches, resp.duplicates) == (700, 7, 0)
    assert srv.service.logs.appends == 1


async def test_a_retried_stream_stores_each_batch_once() -> None:
    store = SeqStore()
    store.refuse = lambda dedup: dedup is not None and dedup.batch_seq == 20
    async with _serving(store, 0.0) as srv:
        batches = [_seq_batch(s) for s in range(1, 31)]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await srv.stream()(_gen(batches))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _once(store, range(1, 11))
        store.refuse = lambda dedup: False
        raw = await srv.stream()(_gen(batches))
    resp = pb.StreamLogsResponse.FromString(raw)
    assert (resp.accepted, resp.batches, resp.duplicates) == (10_000, 30, 10)
    assert _once(store, range(1, 31))


async def test_another_call_for_the_agent_stops_a_merge() -> None:
    # Batch 1 of the stream is accepted; its group 2..10 is held (overloaded) until a
    # second call has stored batch 2 on its own. Merging 2..10 now would store batch 2
    # twice: the stream must notice the other append and go batch by batch.
    store = SeqStore()
    store.refuse = lambda dedup: (
        dedup is not None and dedup.batch_seq == 10 and 2 not in store.stored
    )
    async with _serving(store, 10.0) as srv:
        call = asyncio.ensure_future(srv.stream()(_gen([_seq_batch(s) for s in range(1, 11)])))
        async with asyncio.timeout(10):
            while srv.service.logs.held == 0:
                await asyncio.sleep(0.01)
        other = pb.SendLogsResponse.FromString(await srv.send()(_seq_batch(2)))
        assert (other.accepted, other.duplicate) == (500, False)
        resp = pb.StreamLogsResponse.FromString(await call)
    assert (resp.accepted, resp.batches, resp.duplicates) == (4_500, 10, 1)
    assert _once(store, range(1, 11))


async def test_a_slow_stream_is_not_held_back_for_a_group() -> None:
    # Each batch is sent only once the previous one is in the store: a server waiting
    # to fill a group would never get the next one.
    store = SeqStore()
    async with _serving(store, 5.0, group_wait_s=0.02) as srv:

        async def lockstep() -> AsyncIterator[bytes]:
            for seq in range(1, 6):
                async with asyncio.timeout(10):
                    while len(store.stored) < (seq - 1) * 10:
                        await asyncio.sleep(0.01)
                yield _seq_batch(seq, lines=10)

        raw = await srv.stream()(lockstep())
    resp = pb.StreamLogsResponse.FromString(raw)
    assert (resp.accepted, resp.batches, resp.duplicates) == (50, 5, 0)
    assert _once(store, range(1, 6), lines=10)
    assert srv.service.logs._buffered == 0


async def test_a_stream_failing_with_a_group_pending_releases_it() -> None:
    store = SeqStore()
    async with _serving(store, 5.0) as srv:
        batches = [_seq_batch(1, lines=10), _seq_batch(2, lines=10), b"\xff\xff"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await srv.stream()(_gen(batches))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert srv.service.logs._buffered == 0
