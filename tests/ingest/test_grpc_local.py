"""The in-process local agent: samples to the appender, registry, remote control."""

from __future__ import annotations

import asyncio
from pathlib import Path

from monitoringserver.agent.metrics import Emitter, gauge
from monitoringserver.ingest.grpc_local import LocalAgent, emitter_to_batch
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import NodeStatus
from monitoringserver.storage.db import Database
from tests.agent.server_fixture import CountingAppender


def test_emitter_to_batch() -> None:
    out = Emitter({"job": "node"})
    g = gauge("a", "", "A.")
    out.add(g, 1, {"x": "1"})
    out.add(g, 2, {"x": "2"})
    out.add(g, 3, {"x": "1"})
    batch = emitter_to_batch(out, 5)
    assert len(batch.series) == 2
    assert [(dict(lbl)["x"], t, v) for lbl, t, v in batch.rows()] == [
        ("1", 5, 1.0),
        ("2", 5, 2.0),
        ("1", 5, 3.0),
    ]


async def test_local_agent_end_to_end(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    registry = NodeRegistry(db)
    hub = ControlHub(None, default_timeout_s=10)
    appender = CountingAppender()
    agent = LocalAgent(appender, registry=registry, hub=hub, node_id="srv", interval_s=60)
    task = asyncio.ensure_future(agent.run())
    try:
        async with asyncio.timeout(30):
            while agent.cycles < 1 or not hub.connected("srv"):
                await asyncio.sleep(0.02)
        view = registry.get("srv")
        assert view.status is NodeStatus.ONLINE
        assert view.info.agent_version.endswith("(local)")
        assert {"node_cpu_seconds_total", "cpu_usage_percent"} <= appender.names()
        labels = next(iter(appender.rows()))[0]
        assert (labels["server_id"], labels["instance"], labels["job"]) == ("srv", "srv", "node")
        outcome = await hub.dispatch("srv", "report_now", actor="t")
        assert outcome.ok
        async with asyncio.timeout(30):
            while agent.cycles < 2:
                await asyncio.sleep(0.02)
        denied = await hub.dispatch("srv", "service", {"action": "stop", "name": "x"}, actor="t")
        assert denied.exit_status == 126
        assert (await hub.dispatch("srv", "set_interval", {"interval": "45"}, actor="t")).ok
        assert agent.interval.current_s == 45
        assert registry.get("srv").stats["total_reports"] >= 2
    finally:
        await agent.aclose()
        await task
    assert registry.get("srv").status is NodeStatus.OFFLINE
    await registry.forget("srv")
    appender.overload = 1
    assert await agent.cycle() == "error: cannot append batch: queue full"
    assert registry.known("srv")  # registered again after being forgotten
    assert agent.stats()["failed_reports"] == 1
    db.close()
