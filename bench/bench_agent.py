"""Node agent footprint: RSS and CPU of a real ``node-agent`` process at a 10 s interval.

All collectors on (system, hardware, containers when a socket exists, top processes,
GPU when NVML exists, systemd services for a small allowlist) plus the local
``/metrics`` exposition, reporting to a gRPC server in this process (an appender that
only counts). CPU is measured from ``/proc/<pid>/stat`` over the steady window (after
the first cycle), RSS is the peak ``VmRSS`` seen. Targets (issue 4): RSS ≤ 40 MiB,
CPU ≤ 0.5 % of one core.

Results: ``bench/results/agent.json``. Usage: ``python -m bench.bench_agent [seconds]``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.samples import SampleBatch

RESULTS = Path(__file__).parent / "results" / "agent.json"
INTERVAL_S = 10
WINDOW_S = 120


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
    server = GrpcServer(NodeAgentService(appender, options=GrpcOptions(listen="127.0.0.1:0")))
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    doc = asyncio.run(_run(float(args[0]) if args else WINDOW_S))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
