"""A real ``node-agent`` process against a real gRPC listener (in the test process):
survives ``kill -9`` with its spool, and a server outage without loss or duplicates."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from monitoringserver.proto import monitoring_pb2 as pb
from tests.agent.server_fixture import TOKEN, TestServer

pytestmark = pytest.mark.e2e


class AgentProcess:
    def __init__(self, tmp: Path, target: str, *extra: str) -> None:
        self.state = tmp / "state"
        self.tmp = tmp
        self.target = target
        self.extra = extra
        (tmp / "token").write_text(TOKEN + "\n")
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        with open(self.tmp / f"agent.{self.runs}.log", "wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "monitoringserver.agent.main",
                    "--server",
                    self.target,
                    "--token-file",
                    str(self.tmp / "token"),
                    "--node-id",
                    "e2e-node",
                    "--interval",
                    "1",
                    "--spool-dir",
                    str(self.state),
                    *self.extra,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def status(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.state / "status.json").read_text())
        except (OSError, ValueError):
            return {}
        return data

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def log(self) -> str:
        return (self.tmp / f"agent.{self.runs}.log").read_text(errors="replace")


async def until(
    cond: Callable[[], bool], what: str, agent: AgentProcess, timeout: float = 60
) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not cond():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(
            f"timed out waiting for {what}; agent log:\n{agent.log()[-3000:]}"
        ) from None


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer()
    await srv.start()
    yield srv
    await srv.stop()


def spooled_seqs(state: Path) -> list[int]:
    return [
        pb.MetricsBatch.FromString(p.read_bytes()).batch_seq
        for p in sorted((state / "spool").glob("*.batch"))
    ]


async def test_spool_survives_kill_9(tmp_path: Path, server: TestServer) -> None:
    await server.stop()  # the server is away from the start
    agent = AgentProcess(tmp_path, server.target)
    agent.start()
    try:
        await until(lambda: agent.status().get("spool_depth", 0) >= 3, "3 spooled batches", agent)
        agent.signal(signal.SIGKILL)
        on_disk = spooled_seqs(agent.state)
        assert len(on_disk) >= 3
        assert on_disk == sorted(on_disk)
        await server.start()
        agent.start()
        await until(lambda: set(on_disk) <= set(server.appender.seqs()), "replay", agent)
        await until(lambda: agent.status().get("last_report_status") == "ok", "live", agent)
    finally:
        agent.signal(signal.SIGTERM)
    received = server.appender.seqs()
    assert len(received) == len(set(received))
    assert received[: len(on_disk)] == on_disk  # replayed first, in order
    assert received == sorted(received)
    assert {"node_cpu_seconds_total", "node_load1", "cpu_usage_percent"} <= server.appender.names()


async def test_outage_without_loss_or_duplicates(tmp_path: Path, server: TestServer) -> None:
    agent = AgentProcess(tmp_path, server.target)
    agent.start()
    try:
        await until(lambda: len(server.appender.seqs()) >= 2, "first batches", agent)
        await server.stop()
        await until(lambda: agent.status().get("spool_depth", 0) >= 3, "spooling", agent)
        await server.start()

        def settled() -> bool:
            st = agent.status()
            return st.get("spool_depth") == 0 and st.get("total_reports") == len(
                server.appender.seqs()
            )

        await until(settled, "replay of the outage", agent)
        agent.signal(signal.SIGTERM)
    finally:
        if agent.proc is not None and agent.proc.poll() is None:
            agent.signal(signal.SIGKILL)
    status = agent.status()
    received = server.appender.seqs()
    # settled() saw total_reports == batches stored at one moment: every report the
    # agent made arrived, and none twice (the store keeps each batch_seq once).
    assert len(received) == len(set(received)) >= status["total_reports"]
    assert received == sorted(received)
    assert status["failed_reports"] >= 3
