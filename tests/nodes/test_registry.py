"""Node registry: status transitions, persistence, forget; audit log; control hub."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitoringserver.errors import (
    BadDataError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
)
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import CommandOutcome, NodeInfo, NodeStatus, validate_command
from monitoringserver.storage.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_status_online_offline_stale_and_persistence(tmp_path: Path) -> None:
    clock = Clock()
    db = Database(tmp_path / "s.duckdb")
    reg = NodeRegistry(db, stale_after_s=600, clock=clock)
    await reg.register("n1", NodeInfo(hostname="h", kernel="6.1", labels={"rack": "a"}))
    assert reg.get("n1").status is NodeStatus.ONLINE
    reg.set_connected("n1", True)
    reg.set_connected("n1", False)
    assert reg.get("n1").status is NodeStatus.OFFLINE
    clock.now += 601
    assert reg.get("n1").status is NodeStatus.STALE
    assert reg.list() == []
    assert [v.node_id for v in reg.list(include_stale=True)] == ["n1"]
    reg.touch("n1")
    reg.heartbeat("n1", {"total_reports": 3})
    assert reg.get("n1").status is NodeStatus.OFFLINE
    assert await reg.flush() == 1
    assert await reg.flush() == 0
    db.close()
    db2 = Database(tmp_path / "s.duckdb")
    reg2 = NodeRegistry(db2, clock=clock)
    view = reg2.get("n1")
    assert view.info.labels == {"rack": "a"}
    assert view.stats == {"total_reports": 3}
    assert view.last_seen_ms == int(clock.now * 1000)
    assert view.to_json()["kernel"] == "6.1"
    await reg2.forget("n1")
    with pytest.raises(NotFoundError):
        reg2.get("n1")
    with pytest.raises(NotFoundError):
        await reg2.forget("n1")
    assert NodeRegistry(db2).list(include_stale=True) == []
    db2.close()


async def test_run_flushes_and_stops(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    reg = NodeRegistry(db, flush_interval_s=0.01)
    await reg.register("n1", NodeInfo())
    reg.heartbeat("n1", {"x": 1})
    task = asyncio.ensure_future(reg.run())
    async with asyncio.timeout(10):
        while db.read("SELECT stats FROM nodes")[0][0] != '{"x": 1}':
            await asyncio.sleep(0.01)
    reg.heartbeat("n1", {"x": 2})
    await reg.aclose()  # run() returns, the last change is written
    await task
    assert db.read("SELECT stats FROM nodes")[0][0] == '{"x": 2}'
    db.close()


@pytest.mark.parametrize(
    ("kind", "args", "expected"),
    [
        (
            "service",
            {"action": "restart", "name": "nginx.service"},
            {"action": "restart", "name": "nginx.service"},
        ),
        ("set_interval", {"interval": "60"}, {"interval": "60"}),
        ("set_interval", {"interval": "adaptive"}, {"interval": "adaptive"}),
        ("report_now", {}, {}),
        ("get_stats", {"ignored": "x"}, {}),
    ],
)
def test_validate_command_ok(kind: str, args: dict[str, str], expected: dict[str, str]) -> None:
    assert validate_command(kind, args) == expected


@pytest.mark.parametrize(
    ("kind", "args"),
    [
        ("reboot", {}),
        ("service", {"action": "kill", "name": "x"}),
        ("service", {"action": "stop", "name": "x; rm -rf /"}),
        ("service", {"action": "stop", "name": ""}),
        ("set_interval", {"interval": "10"}),
        ("set_interval", {"interval": "301"}),
        ("set_interval", {"interval": "soon"}),
    ],
)
def test_validate_command_rejects(kind: str, args: dict[str, str]) -> None:
    with pytest.raises(BadDataError):
        validate_command(kind, args)


async def test_hub_dispatch_outcomes_and_audit(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    audit = AuditLog(db)
    hub = ControlHub(audit, queue_size=1, default_timeout_s=5)
    with pytest.raises(NotFoundError):
        await hub.dispatch("n1", "report_now", actor="bob")
    sub = hub.subscribe("n1")
    assert hub.connected_nodes() == ["n1"]

    async def agent() -> None:
        cmd = await sub.get()
        assert cmd is not None
        assert not hub.resolve(CommandOutcome(cmd.command_id, "other", ok=True))
        assert hub.resolve(CommandOutcome(cmd.command_id, "n1", ok=False, exit_status=3, error="x"))
        assert not hub.resolve(CommandOutcome(cmd.command_id, "n1", ok=True))

    task = asyncio.ensure_future(agent())
    outcome = await hub.dispatch("n1", "service", {"action": "stop", "name": "db"}, actor="bob")
    await task
    assert (outcome.ok, outcome.exit_status) == (False, 3)
    # No answer: times out, audit records the failure.
    with pytest.raises(UnavailableError):
        await hub.dispatch("n1", "get_stats", actor="bob", timeout_s=0.05)
    # The queue (size 1) still holds the unanswered command: the next one is refused.
    with pytest.raises(OverloadedError):
        await hub.dispatch("n1", "get_stats", actor="bob", timeout_s=0.05)
    with pytest.raises(BadDataError):
        await hub.dispatch("n1", "get_stats", actor="bob", timeout_s=0)
    entries = await audit.entries()
    assert [e.status for e in entries] == ["failed", "failed", "failed", "failed"]
    assert entries[2].action == "control.service"
    assert entries[2].result["exit_status"] == 3
    assert entries[2].to_json()["target"] == "n1"
    assert len(await audit.entries(target="n1", since_ms=0, limit=2)) == 2
    db.close()


async def test_disconnect_fails_waiting_caller_and_replacement(tmp_path: Path) -> None:
    hub = ControlHub(None, default_timeout_s=5)
    first = hub.subscribe("n1")
    second = hub.subscribe("n1")  # a reconnect replaces the old stream
    assert first.closed
    assert await first.get() is None
    call = asyncio.ensure_future(hub.dispatch("n1", "report_now", actor="a"))
    cmd = await second.get()
    assert cmd is not None
    assert cmd.kind == "report_now"
    hub.close()
    with pytest.raises(UnavailableError):
        await call
    assert await second.get() is None
    assert not hub.connected("n1")


async def test_concurrent_registrations_share_writes(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.duckdb")
    reg = NodeRegistry(db)
    writes = 0
    original = db.awrite

    async def counting(fn):  # type: ignore[no-untyped-def]
        nonlocal writes
        writes += 1
        return await original(fn)

    db.awrite = counting  # type: ignore[method-assign]
    await asyncio.gather(*(reg.register(f"n{i}", NodeInfo(hostname=f"h{i}")) for i in range(50)))
    assert db.read("SELECT count(*) FROM nodes")[0][0] == 50
    assert writes <= 3
    await reg.register("n1", NodeInfo(hostname="renamed"))
    assert NodeRegistry(db).get("n1").info.hostname == "renamed"
    db.close()
