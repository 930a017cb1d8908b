"""Agent delivery against a real gRPC server: live, outage + replay, restart, control."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from monitoringserver.agent.agent import Agent
from monitoringserver.agent.config import AgentConfig
from monitoringserver.agent.metrics import Emitter, gauge
from monitoringserver.nodes.types import NodeStatus
from tests.agent.server_fixture import TOKEN, TestServer

G = gauge("test_value", "", "A test gauge.")


class Counter:
    """A collector whose value counts cycles; cpu_usage_percent stays flat."""

    name = "counter"

    def __init__(self, series: int = 3) -> None:
        self.n = 0
        self.series = series

    def collect(self, out: Emitter) -> None:
        self.n += 1
        for i in range(self.series):
            out.add(G, self.n, {"i": str(i)})
        out.add(gauge("cpu_usage_percent", "percent", "cpu"), 5.0)


def make_agent(tmp_path: Path, target: str, **kw: object) -> Agent:
    cfg = AgentConfig(
        server=target,
        token=TOKEN,
        node_id="n1",
        interval_s=1.0,
        spool_dir=tmp_path / "state",
        call_timeout_s=2.0,
        **kw,  # type: ignore[arg-type]
    )
    agent = Agent(cfg, collectors=[Counter()])
    agent.shipper.options = type(agent.shipper.options)(
        target=target, token=TOKEN, call_timeout_s=2.0, backoff_min_s=0.01, backoff_max_s=0.05
    )
    return agent


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer()
    await srv.start()
    yield srv
    await srv.stop()


async def test_cycles_deliver_live_with_labels(tmp_path: Path, server: TestServer) -> None:
    agent = make_agent(tmp_path, server.target)
    try:
        assert await agent.cycle() == "ok"
        assert await agent.cycle() == "ok"
    finally:
        await agent.aclose()
    rows = list(server.appender.rows())
    assert len(rows) == 8
    labels = rows[0][0]
    assert (labels["server_id"], labels["instance"], labels["job"]) == ("n1", "n1", "node")
    stats = agent.stats()
    assert (stats["total_reports"], stats["failed_reports"], stats["success_rate_percent"]) == (
        2,
        0,
        100.0,
    )
    status = json.loads((tmp_path / "state/status.json").read_text())
    assert status["last_report_status"] == "ok"
    assert server.service is not None


async def test_outage_spools_then_replays_in_order_without_loss(
    tmp_path: Path, server: TestServer
) -> None:
    agent = make_agent(tmp_path, server.target)
    replay = asyncio.ensure_future(agent.shipper.replay_loop())
    try:
        assert await agent.cycle() == "ok"
        await server.stop()
        for _ in range(5):
            assert await agent.cycle() == "spooled"
        assert len(agent.spool) == 5
        assert agent.stats()["failed_reports"] == 5
        await server.start()  # new service: old session unknown, agent re-registers
        async with asyncio.timeout(20):
            while len(agent.spool):
                await asyncio.sleep(0.02)
        assert await agent.cycle() == "ok"
    finally:
        replay.cancel()
        await agent.aclose()
    seqs = server.appender.seqs()
    assert seqs == sorted(seqs)
    assert len(seqs) == len(set(seqs)) == 7
    values = [v for lbl, _, v in server.appender.rows() if lbl["__name__"] == "test_value"]
    assert sorted(set(values)) == [
        1,
        2,
        3,
        4,
        5,
        6,
        7,
    ]
    assert server.appender.duplicates == 0


async def test_overload_is_retried_after_hint(tmp_path: Path, server: TestServer) -> None:
    agent = make_agent(tmp_path, server.target)
    replay = asyncio.ensure_future(agent.shipper.replay_loop())
    server.appender.overload = 2
    try:
        assert await agent.cycle() == "spooled"
        async with asyncio.timeout(20):
            while len(agent.spool) or not server.appender.batches:
                await asyncio.sleep(0.02)
    finally:
        replay.cancel()
        await agent.aclose()
    assert len(server.appender.seqs()) == 1


async def test_spool_survives_restart_of_agent(tmp_path: Path, server: TestServer) -> None:
    await server.stop()
    first = make_agent(tmp_path, server.target)
    for _ in range(3):
        assert await first.cycle() == "spooled"
    await first.aclose()
    await server.start()
    second = make_agent(tmp_path, server.target)
    try:
        assert len(second.spool) == 3
        assert await second.shipper.drain() == 3
        assert await second.cycle() == "ok"
    finally:
        await second.aclose()
    seqs = server.appender.seqs()
    assert len(seqs) == 4
    assert seqs == sorted(seqs)


async def test_control_stream_commands(tmp_path: Path, server: TestServer) -> None:
    calls: list[list[str]] = []

    def runner(argv: object, timeout: float) -> tuple[int, str]:
        calls.append(list(argv))  # type: ignore[call-overload]
        return 0, "done\n"

    agent = make_agent(tmp_path, server.target, service_allowlist=("nginx",))
    agent.executor._run = runner
    task = asyncio.ensure_future(agent.run())
    try:
        async with asyncio.timeout(20):
            while not server.hub.connected("n1"):
                await asyncio.sleep(0.02)
        ok = await server.hub.dispatch(
            "n1", "service", {"action": "restart", "name": "nginx"}, actor="t"
        )
        denied = await server.hub.dispatch(
            "n1", "service", {"action": "stop", "name": "sshd"}, actor="t"
        )
        stats = await server.hub.dispatch("n1", "get_stats", actor="t")
        changed = await server.hub.dispatch("n1", "set_interval", {"interval": "120"}, actor="t")
        assert agent.interval.current_s == 120
        await server.hub.dispatch("n1", "set_interval", {"interval": "adaptive"}, actor="t")
        assert agent.interval.adaptive
        before = agent.cycles
        await server.hub.dispatch("n1", "report_now", actor="t")
        async with asyncio.timeout(20):
            while agent.cycles == before:
                await asyncio.sleep(0.02)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await agent.aclose()
    assert (ok.ok, ok.output) == (True, "done\n")
    assert calls == [["systemctl", "restart", "nginx.service"]]
    assert (denied.ok, denied.exit_status) == (False, 126)
    assert json.loads(stats.output)["node_id"] == "n1"
    assert changed.ok
    assert NodeStatus.ONLINE.value == "online"
