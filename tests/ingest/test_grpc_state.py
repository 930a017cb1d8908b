"""StateManager gRPC service on a real grpc.aio server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import pytest

from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.ingest.grpc_state import (
    AlertRuleInfo,
    StateAlert,
    StateManagerService,
)
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc
from tests.ingest.test_grpc_server import FakeAppender


@dataclass
class Sink:
    alerts: list[StateAlert] = field(default_factory=list)

    async def handle_state_alert(self, alert: StateAlert) -> str:
        self.alerts.append(alert)
        return f"a{len(self.alerts)}"


class Rules:
    eval_interval_s = 15.0

    def alert_rules(self) -> Sequence[AlertRuleInfo]:
        return [AlertRuleInfo("HighCpu", "cpu_usage_percent > 90", 60, "critical", {"t": "x"})]


@dataclass
class H:
    appender: FakeAppender
    sink: Sink
    stub: pb_grpc.StateManagerStub


async def _harness(with_extras: bool) -> AsyncIterator[H]:
    appender, sink = FakeAppender(), Sink()
    state = StateManagerService(
        appender,
        alert_sink=sink if with_extras else None,
        config_source=Rules() if with_extras else None,
    )
    server = GrpcServer(NodeAgentService(appender), state_manager=state, listen="127.0.0.1:0")
    port = await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield H(appender, sink, pb_grpc.StateManagerStub(channel))  # type: ignore[no-untyped-call]
    await server.aclose(grace_s=1)


@pytest.fixture
async def h() -> AsyncIterator[H]:
    async for x in _harness(True):
        yield x


@pytest.fixture
async def bare() -> AsyncIterator[H]:
    async for x in _harness(False):
        yield x


async def test_state_alert_is_stored_as_metric_and_forwarded(h: H) -> None:
    resp = await h.stub.HandleStateAlert(
        pb.StateAlertRequest(
            source="sm@n1",
            name="DiskFull",
            severity="critical",
            state="firing",
            labels={"node": "n1"},
            timestamp_ms=1234,
        )
    )
    assert (resp.alert_id, resp.accepted) == ("a1", True)
    assert h.appender.rows() == [
        (
            {
                "__name__": "piccolo_state_alert",
                "alertname": "DiskFull",
                "node": "n1",
                "severity": "critical",
                "source": "sm@n1",
            },
            1234,
            1.0,
        )
    ]
    assert h.sink.alerts[0].labels == {"node": "n1"}


@pytest.mark.parametrize(
    "req",
    [pb.StateAlertRequest(name="", state="firing"), pb.StateAlertRequest(name="x", state="odd")],
)
async def test_invalid_state_alert(h: H, req: pb.StateAlertRequest) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await h.stub.HandleStateAlert(req)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_state_alert_without_sink_still_recorded(bare: H) -> None:
    resp = await bare.stub.HandleStateAlert(pb.StateAlertRequest(name="X", state="resolved"))
    assert resp.accepted
    assert resp.alert_id == ""
    assert bare.appender.rows()[0][2] == 0.0


async def test_state_metrics(h: H) -> None:
    resp = await h.stub.HandleStateMetrics(
        pb.StateMetricsRequest(
            source="sm",
            samples=[
                pb.StateSample(name="m1", labels={"a": "b"}, value=2, timestamp_ms=10),
                pb.StateSample(name="m1", labels={"a": "b"}, value=3, timestamp_ms=20),
            ],
        )
    )
    assert resp.accepted == 2
    assert h.appender.rows() == [
        ({"__name__": "m1", "a": "b", "source": "sm"}, 10, 2.0),
        ({"__name__": "m1", "a": "b", "source": "sm"}, 20, 3.0),
    ]
    empty = await h.stub.HandleStateMetrics(pb.StateMetricsRequest())
    assert empty.accepted == 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await h.stub.HandleStateMetrics(
            pb.StateMetricsRequest(samples=[pb.StateSample(name="bad name")])
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_alert_config(h: H, bare: H) -> None:
    resp = await h.stub.GetAlertConfig(pb.AlertConfigRequest(source="x"))
    assert resp.eval_interval_s == 15
    assert [(r.name, r.for_s, dict(r.labels)) for r in resp.rules] == [("HighCpu", 60, {"t": "x"})]
    empty = await bare.stub.GetAlertConfig(pb.AlertConfigRequest())
    assert list(empty.rules) == []
    assert empty.eval_interval_s == 30
