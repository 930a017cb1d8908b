"""Node agent footprint: RSS and CPU of a real ``node-agent`` process at a 10 s interval.

All collectors on (system, hardware, containers when a socket exists, top processes,
GPU when NVML exists, systemd services for a small allowlist) plus the local
``/metrics`` exposition, reporting to a gRPC server in this process (an appender that
only counts). CPU is measured from ``/proc/<pid>/stat`` over the steady window (after
the first cycle), RSS is the peak ``VmRSS`` seen. Targets (issue 4): RSS ≤ 40 MiB,
CPU ≤ 0.5 % of one core.

Second run, ``outage``: ``OUTAGE_AGENTS`` agents (in this process, real delivery code:
shipper, spool, replay; ``OUTAGE_SERIES`` series each at a 1 s interval) report into the
real embedded store through the gRPC listener; the listener is stopped for
``outage_s`` seconds (the issue asks for 600; default 60 to keep ``make bench`` short)
and restarted; when every spool is empty the samples in the store are counted exactly
against what the agents produced (lost = expected − stored distinct, duplicated =
stored − distinct).

Results: ``bench/results/agent.json``.
Usage: ``python -m bench.bench_agent [window_seconds [outage_seconds]]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.samples import SampleBatch

RESULTS = Path(__file__).parent / "results" / "agent.json"
INTERVAL_S = 10
WINDOW_S = 120
OUTAGE_S = 60
OUTAGE_AGENTS = 100
OUTAGE_SERIES = 50


class CountingAppender:
    def __init__(self) -> None:
        self.batches = 0
        self.samples = 0

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        self.batches += 1
        self.samples += len(batch)
        return AppendResult(accepted=len(batch))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def _run(window_s: float) -> dict[str, Any]:
    appender = CountingAppender()
    server = GrpcServer(NodeAgentService(appender), listen="127.0.0.1:0")
    port = await server.start()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "agent.log"
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [
                    sys.executable, "-m", "monitoringserver.agent.main",
                    "--server", f"127.0.0.1:{port}",
                    "--node-id", "bench-node",
                    "--interval", str(INTERVAL_S),
                    "--spool-dir", str(Path(tmp) / "state"),
                    "--metrics-listen", "127.0.0.1:0",
                    "--service", "ssh", "--service", "cron",
                    "--log-level", "WARNING",
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                # As in deploy/node-agent.service: fewer malloc arenas for the threads.
                env={**os.environ, "MALLOC_ARENA_MAX": "2"},
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while appender.batches < 1:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"agent did not report: {log.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
            cpu0, t0, batches0 = _cpu_seconds(proc.pid), time.monotonic(), appender.batches
            peak = _rss(proc.pid)
            while time.monotonic() - t0 < window_s:
                await asyncio.sleep(1)
                peak = max(peak, _rss(proc.pid))
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    await server.aclose(1)
    return {
        "benchmark": "agent",
        "interval_s": INTERVAL_S,
        "window_s": round(t1 - t0, 1),
        "cycles_in_window": appender.batches - batches0,
        "samples_per_cycle": appender.samples // max(1, appender.batches),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "peak_rss_mib": round(peak / 2**20, 1),
        "targets": {"rss_mib": 40, "cpu_percent": 0.5},
    }


class _Gauges:
    """A light collector: ``OUTAGE_SERIES`` gauges whose value is the cycle number."""

    name = "bench"

    def __init__(self) -> None:
        self.n = 0

    def collect(self, out: Any) -> None:
        from monitoringserver.agent.metrics import gauge

        self.n += 1
        g = gauge("bench_value", "", "Cycle number.")
        for i in range(OUTAGE_SERIES):
            out.add(g, self.n, {"i": str(i)})


async def _outage(outage_s: float) -> dict[str, Any]:
    from prometheus_client import CollectorRegistry

    from monitoringserver.agent.agent import Agent
    from monitoringserver.agent.config import AgentConfig
    from monitoringserver.model.matchers import Matcher, MatchOp
    from monitoringserver.pipeline.metric_store import open_metric_store
    from monitoringserver.storage.options import StorageOptions

    # 100 agents would each warn about the outage: count the reasons instead of printing.
    reasons: dict[str, int] = {}

    class _Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            text = record.getMessage()
            key = text.split(": ", 1)[-1][:60] if "cannot" in text else text[:40]
            reasons[key] = reasons.get(key, 0) + 1

    ship_log = logging.getLogger("monitoringserver.agent.shipper")
    ship_log.setLevel(logging.DEBUG)
    ship_log.propagate = False
    ship_log.addHandler(_Count())
    logging.getLogger("monitoringserver.agent").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        handle = await open_metric_store(
            Path(tmp) / "data", StorageOptions(), registry=CollectorRegistry()
        )
        store_task = asyncio.ensure_future(handle.run())

        def listener(port: int) -> GrpcServer:
            return GrpcServer(NodeAgentService(handle.appender), listen=f"127.0.0.1:{port}")

        server = listener(0)
        port = await server.start()
        agents = [
            Agent(
                AgentConfig(
                    server=f"127.0.0.1:{port}",
                    node_id=f"outage-{a:03d}",
                    interval_s=1.0,
                    spool_dir=Path(tmp) / f"agent-{a:03d}",
                    labels={"job_group": "outage"},
                    control=False,
                ),
                collectors=[_Gauges()],
            )
            for a in range(OUTAGE_AGENTS)
        ]
        tasks = [asyncio.ensure_future(a.run()) for a in agents]
        await asyncio.sleep(5)
        await server.aclose(0.5)
        t_down = time.monotonic()
        await asyncio.sleep(outage_s)
        spooled = sum(len(a.spool) for a in agents)
        server = listener(port)
        await server.start()
        t_up = time.monotonic()
        while any(len(a.spool) for a in agents):
            await asyncio.sleep(0.2)
        drain_s = time.monotonic() - t_up
        # Quiesce: no new cycles; in-flight ones finish (deliver, then count the report).
        for a in agents:
            a.interval.set_fixed(1e9)
        await asyncio.sleep(3)
        while any(len(a.spool) for a in agents):
            await asyncio.sleep(0.2)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for a in agents:
            await a.aclose()
        await server.aclose(0.5)
        await handle.writer.commit_pending()
        expected = sum(a.stats_.total_reports for a in agents) * OUTAGE_SERIES
        series = handle.querier.select(
            [Matcher("job_group", MatchOp.EQ, "outage")], 0, int(time.time() * 1000) + 60_000
        )
        stored = sum(len(sd.ts_ms) for sd in series)
        distinct = sum(len(set(sd.ts_ms.tolist())) for sd in series)
        await handle.aclose()
        await store_task
    return {
        "agents": OUTAGE_AGENTS,
        "series_per_agent": OUTAGE_SERIES,
        "interval_s": 1.0,
        "outage_s": round(t_up - t_down, 1),
        "batches_spooled_at_restart": spooled,
        "drain_s": round(drain_s, 1),
        "samples_expected": expected,
        "samples_stored": stored,
        "lost": expected - distinct,
        "duplicated": stored - distinct,
        "shipper_log": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:6]),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv

    async def both() -> dict[str, Any]:
        # One event loop for both phases: grpc.aio stays bound to the first loop it saw.
        result = await _run(float(args[0]) if args else WINDOW_S)
        result["outage"] = await _outage(float(args[1]) if len(args) > 1 else OUTAGE_S)
        return result

    doc = asyncio.run(both())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
