"""Remote write out: encoding, send outcomes, and the forwarder through outages,
4xx, restarts and the metric writer's subscriber hook."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cramjam
import httpx
import pytest
from prometheus_client import CollectorRegistry

from monitoringserver.backends.remote_write_out import (
    RemoteWriteClient,
    SendOutcome,
    encode_write_request,
)
from monitoringserver.errors import ConfigError
from monitoringserver.ingest.remote_write import decode_write_request
from monitoringserver.model.samples import STALE_NAN, SampleBatch, is_stale_nan
from monitoringserver.pipeline.disk_queue import DiskQueue
from monitoringserver.pipeline.forwarder import Forwarder, ForwardOptions, forward_service
from monitoringserver.proto.prompb import remote_pb2
from tests.ingest.promhelp import wait_for
from tests.pipeline.storehelp import T0_MS, open_store, series

A = series("a", host="h1")
B = series("b", host="h2")


def rows_of(batch: SampleBatch) -> list[tuple[object, int, float]]:
    return sorted(batch.rows())


class Receiver:
    """A remote-write receiver whose answers the test scripts."""

    def __init__(self) -> None:
        self.status: list[int] = []  # answers to give first; then 204
        self.received: list[tuple[object, int, float]] = []
        self.calls = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        status = self.status.pop(0) if self.status else 204
        if status == -1:
            raise httpx.ConnectError("refused", request=request)
        if status == 204:
            assert request.headers["content-encoding"] == "snappy"
            self.received.extend(decode_write_request(request.content).rows())
        return httpx.Response(status, headers={"Retry-After": "0.01"} if status == 429 else {})


def test_encode_roundtrip_sorted_per_series() -> None:
    batch = SampleBatch.from_rows([(A, 3, 1.0), (B, 1, 2.0), (A, 1, STALE_NAN), (A, 2, -1.5)])
    back = decode_write_request(encode_write_request(batch))
    assert [(lbl, t) for lbl, t, _ in back.rows()] == [(A, 1), (A, 2), (A, 3), (B, 1)]
    assert is_stale_nan(back.values).tolist() == [True, False, False, False]
    assert len(decode_write_request(encode_write_request(SampleBatch.empty()))) == 0


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, SendOutcome.OK),
        (204, SendOutcome.OK),
        (400, SendOutcome.DROP),
        (404, SendOutcome.DROP),
        (429, SendOutcome.RETRY),
        (500, SendOutcome.RETRY),
        (503, SendOutcome.RETRY),
        (-1, SendOutcome.RETRY),
    ],
)
async def test_send_outcomes(status: int, outcome: SendOutcome) -> None:
    receiver = Receiver()
    receiver.status = [status]
    client = RemoteWriteClient(
        "http://rx/api/v1/write",
        bearer_token="t",
        basic_auth=("u", "p"),
        transport=httpx.MockTransport(receiver.handler),
    )
    result = await client.send(encode_write_request(SampleBatch.from_rows([(A, 1, 1.0)])))
    await client.aclose()
    assert result.outcome is outcome
    if status == 429:
        assert result.retry_after_s == 0.01


def make(tmp_path: Path, receiver: Receiver, **opts: Any) -> Forwarder:
    options = ForwardOptions(
        url="http://rx/api/v1/write",
        min_backoff_s=0.01,
        max_backoff_s=0.05,
        flush_interval_s=0.01,
        **opts,
    )
    queue = DiskQueue(tmp_path / "q", segment_bytes=4096, max_bytes=1 << 20)
    client = RemoteWriteClient(options.url, transport=httpx.MockTransport(receiver.handler))
    return Forwarder(queue, client, options, registry=CollectorRegistry())


async def test_outage_retry_drop_and_restart_exactly_once(tmp_path: Path) -> None:
    receiver = Receiver()
    receiver.status = [-1, 503, 429, 500]
    fw = make(tmp_path, receiver, max_samples_per_request=3)
    sent = [(A, t, float(t)) for t in range(10)]
    fw.offer(SampleBatch.from_rows(sent))
    fw.offer(SampleBatch.empty())
    task = asyncio.create_task(fw.run())
    await wait_for(lambda: len(receiver.received) == 10, timeout_s=20, what="all samples")
    assert fw.metrics.retries._value.get() == 4
    await fw.stop()
    await task
    assert sorted(receiver.received) == sorted(sent)

    # offered but not yet sent when stopping: kept on disk and sent after a restart
    receiver.status = [503] * 1000
    fw = make(tmp_path, receiver)
    task = asyncio.create_task(fw.run())
    later = [(B, t, 1.0) for t in range(5)]
    fw.offer(SampleBatch.from_rows(later))
    await wait_for(lambda: receiver.calls > 12, timeout_s=20, what="retries")
    await fw.stop()
    await task
    receiver.status = [400]
    fw = make(tmp_path, receiver)
    task = asyncio.create_task(fw.run())
    fw.offer(SampleBatch.from_rows([(A, 100, 1.0)]))
    await wait_for(lambda: (A, 100, 1.0) in receiver.received, timeout_s=20, what="resume")
    await fw.stop()
    await task
    # the queued request met the 400 and was dropped; the next one arrived once
    assert fw.metrics.samples.labels("dropped_4xx")._value.get() == 5
    assert receiver.received.count((A, 100, 1.0)) == 1


async def test_buffer_bound_counts_drops(tmp_path: Path) -> None:
    fw = make(tmp_path, Receiver(), max_buffered_samples=5)
    fw.offer(SampleBatch.from_rows([(A, t, 1.0) for t in range(4)]))
    fw.offer(SampleBatch.from_rows([(A, t, 1.0) for t in range(10, 14)]))
    assert fw.metrics.samples.labels("dropped_buffer")._value.get() == 4
    assert await fw.flush() == 4
    fw.queue.close()
    await fw.client.aclose()


def test_options() -> None:
    for bad in (
        {"url": "vm:8428"},
        {"max_queue_bytes": 0},
        {"flush_interval_s": 0},
        {"min_backoff_s": 2, "max_backoff_s": 1},
    ):
        with pytest.raises(ConfigError):
            ForwardOptions(**bad)


async def test_service_subscribes_to_the_metric_writer(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with open_store(data, now_ms=T0_MS) as h:
        server = SimpleNamespace(
            config=SimpleNamespace(forward=ForwardOptions()),
            store=h.handle,
            data_dir=data,
            registry=CollectorRegistry(),
        )
        name, run, stop = forward_service(server)  # no url: idles
        idle = asyncio.create_task(run())
        await stop()
        await idle
        assert name == "forward"

        server.config = SimpleNamespace(
            forward=ForwardOptions(
                url="http://127.0.0.1:9/api/v1/write", min_backoff_s=0.01, max_backoff_s=0.02
            )
        )
        name, run, stop = forward_service(server)
        task = asyncio.create_task(run())
        await h.handle.appender.append(SampleBatch.from_rows([(A, T0_MS, 1.0)]))

        def queued() -> bool:
            return any(p.stat().st_size for p in (data / "forward").glob("*.seg"))

        await wait_for(queued, timeout_s=10, what="queued on disk")
        await stop()
        await task
        q = DiskQueue(data / "forward")
        record = q.peek()
        assert record is not None
        assert list(decode_write_request(record[4:]).rows()) == [(A, T0_MS, 1.0)]
        q.close()


def test_encoding_is_plain_protobuf() -> None:
    rows = [(A, -5, 0.0), (A, 0, 0.0), (A, 7, 1.25), (B, 2**62, -2.5)]
    body = encode_write_request(SampleBatch.from_rows(rows))
    req = remote_pb2.WriteRequest()
    req.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    decoded = [
        (tuple((lbl.name, lbl.value) for lbl in ts.labels), s.timestamp, s.value)
        for ts in req.timeseries
        for s in ts.samples
    ]
    assert decoded == rows


async def test_health_probe_states(tmp_path: Path) -> None:
    from monitoringserver.web.app import HealthStatus
    from monitoringserver.web.routers.forwarding import Forwarding, forward_health

    assert (await forward_health(None)).status is HealthStatus.HEALTHY
    receiver = Receiver()
    fw = make(tmp_path, receiver)
    assert (await forward_health(fw)).status is HealthStatus.HEALTHY
    receiver.status = [503]
    fw.offer(SampleBatch.from_rows([(A, 1, 1.0)]))
    await fw.flush()
    assert await fw.send_once() is SendOutcome.RETRY
    degraded = await forward_health(fw)
    assert degraded.status is HealthStatus.DEGRADED
    assert "1 failed sends: HTTP 503" in degraded.detail
    assert await fw.send_once() is SendOutcome.OK
    assert (await forward_health(fw)).status is HealthStatus.HEALTHY
    fw.queue.close()
    await fw.client.aclose()

    checks: dict[str, object] = {}
    server = SimpleNamespace(config=SimpleNamespace(forward=ForwardOptions()), health_checks=checks)
    forwarding = Forwarding()
    name, run, stop = forwarding.service(server)
    assert name == "forward"
    assert forwarding.forwarder is None
    assert "forward" in checks
    task = asyncio.create_task(run())
    await stop()
    await task


@pytest.mark.parametrize(("payload", "status"), [(1500, "degraded"), (2100, "unhealthy")])
async def test_health_probe_queue_fill(tmp_path: Path, payload: int, status: str) -> None:
    from monitoringserver.web.routers.forwarding import forward_health

    options = ForwardOptions(url="http://rx/api/v1/write", max_queue_bytes=2048)
    queue = DiskQueue(tmp_path / "q", segment_bytes=2048, max_bytes=2048)
    client = RemoteWriteClient(options.url, transport=httpx.MockTransport(Receiver().handler))
    fw = Forwarder(queue, client, options, registry=CollectorRegistry())
    queue.put(b"x" * payload)
    assert (await forward_health(fw)).status.value == status
    queue.close()
    await client.aclose()
