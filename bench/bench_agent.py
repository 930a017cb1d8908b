"""Node agent footprint: RSS and CPU of a real ``node-agent`` process at a 10 s interval.

The agent runs exactly as the documented command starts it (``node-agent`` with flags,
no special environment): all collectors on (system, hardware, containers when a socket
exists, top processes, GPU when NVML exists, systemd services for a small allowlist)
plus the local ``/metrics`` exposition, reporting to a gRPC server in this process (an
appender that only counts). CPU is measured from ``/proc/<pid>/stat`` over the steady
window (after the first cycle); ``peak_rss_mib`` is the largest ``VmRSS`` sampled each
second in that window, ``vmhwm_mib`` the kernel's high-water mark including start-up,
and the final RSS is split into anonymous and file-backed (shared library) pages.
Targets (issue 4): RSS ≤ 40 MiB, CPU ≤ 0.5 % of one core.

``with_containers``: the same agent again, pointed at a fake Podman/Docker API on a
unix socket served by this process (``FAKE_CONTAINERS`` running containers), so the
container collector (``http.client`` over the socket) is measured too even on a host
without an engine; ``engine_connections`` shows the collector's keep-alive reuse.

``outage`` (the issue's figure): ``OUTAGE_AGENTS`` agents (in this process, real
delivery code: shipper, spool, replay; ``OUTAGE_SERIES`` series each at a 1 s interval)
report into the real embedded store through the gRPC listener; the listener is stopped
for ``outage_s`` seconds (600, as the issue asks) and restarted; when every spool is
empty the samples in the store are counted exactly against what the agents produced
(lost = expected − stored distinct, duplicated = stored − distinct). The drain is
bounded (``drain_deadline_s``); a run that misses it says so in the result.

Results: ``bench/results/agent.json`` (``--out`` writes elsewhere).
Usage: ``python -m bench.bench_agent [--quick] [--window S] [--outage S] [--out F]``
(``--quick``: 30 s window and a 60 s outage, for iterating; ``make bench`` runs the
defaults: 120 s window, 600 s outage).
"""

from __future__ import annotations

import argparse
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
OUTAGE_S = 600
OUTAGE_AGENTS = 100
OUTAGE_SERIES = 50
FAKE_CONTAINERS = 10


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


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _rss(pid: int) -> int:
    return _status_kib(pid, "VmRSS") * 1024


def _rollup_mib(pid: int) -> dict[str, float]:
    """RSS split: anonymous (heap, stacks, Python objects) vs file-backed (libraries)."""
    kib: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split()[:2]
        kib[key.rstrip(":")] = int(value)
    return {
        "rss_anon_mib": round(kib.get("Anonymous", 0) / 1024, 1),
        "rss_file_mib": round((kib.get("Rss", 0) - kib.get("Anonymous", 0)) / 1024, 1),
    }


def _loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class FakeEngine:
    """A Podman/Docker REST API on a unix socket: ``n`` running containers with stats.

    HTTP/1.1 with keep-alive, GET only, the three endpoints the collector reads.
    """

    def __init__(self, path: Path, n: int) -> None:
        self.path = path
        self.ids = [f"{i:02d}" + "c0ffee" * 10 for i in range(n)]
        self.requests = 0
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._conn, path=str(self.path))

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _body(self, target: str) -> Any:
        path = target.split("?", 1)[0]
        if path == "/containers/json":
            return [
                {"Id": cid, "Names": [f"/app-{i}"], "Image": "bench:1", "State": "running"}
                for i, cid in enumerate(self.ids)
            ]
        cid = path.split("/")[2]
        if path.endswith("/json"):
            return {"Id": cid, "RestartCount": 1}
        t = time.time()
        return {
            "cpu_stats": {"cpu_usage": {"total_usage": int(t * 1e6)}},
            "memory_stats": {"usage": 50 << 20, "limit": 1 << 30},
            "networks": {"eth0": {"rx_bytes": int(t), "tx_bytes": int(t) // 2}},
            "blkio_stats": {
                "io_service_bytes_recursive": [
                    {"op": "read", "value": 4096},
                    {"op": "write", "value": 8192},
                ]
            },
        }

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                target = head.split(b" ", 2)[1].decode()
                self.requests += 1
                body = json.dumps(self._body(target)).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def _run(window_s: float, *, containers: int = 0) -> dict[str, Any]:
    """One ``node-agent`` process for ``window_s`` steady seconds; with ``containers``,
    against a fake engine with that many running containers."""
    appender = CountingAppender()
    server = GrpcServer(NodeAgentService(appender), listen="127.0.0.1:0")
    port = await server.start()
    with tempfile.TemporaryDirectory() as tmp:
        engine = FakeEngine(Path(tmp) / "engine.sock", containers) if containers else None
        extra: list[str] = []
        if engine is not None:
            await engine.start()
            conf = Path(tmp) / "agent.toml"
            conf.write_text(f'[collectors]\ncontainer_socket = "{engine.path}"\n')
            extra = ["--config", str(conf)]
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
                    *extra,
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                # The documented command as a user runs it: no tuning in the environment.
                env={k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")},
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while appender.batches < 1:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"agent did not report: {log.read_text()[-2000:]}")
                await asyncio.sleep(0.1)
            load0 = _loadavg()
            cpu0, t0, batches0 = _cpu_seconds(proc.pid), time.monotonic(), appender.batches
            peak = _rss(proc.pid)
            while time.monotonic() - t0 < window_s:
                await asyncio.sleep(1)
                peak = max(peak, _rss(proc.pid))
            cpu1, t1 = _cpu_seconds(proc.pid), time.monotonic()
            hwm_kib = _status_kib(proc.pid, "VmHWM")
            split = _rollup_mib(proc.pid)
            threads = len(os.listdir(f"/proc/{proc.pid}/task"))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            if engine is not None:
                await engine.aclose()
    await server.aclose(1)
    result: dict[str, Any] = {
        "interval_s": INTERVAL_S,
        "window_s": round(t1 - t0, 1),
        "cycles_in_window": appender.batches - batches0,
        "samples_per_cycle": appender.samples // max(1, appender.batches),
        "cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / (t1 - t0), 3),
        "peak_rss_mib": round(peak / 2**20, 1),
        "vmhwm_mib": round(hwm_kib / 1024, 1),
        **split,
        "threads": threads,
        "loadavg_1m": [load0, _loadavg()],
    }
    if engine is not None:
        result["containers"] = containers
        result["engine_requests"] = engine.requests
        result["engine_connections"] = engine.connections
    return result


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


def _progress(agents: list[Any], t_up: float) -> None:
    waiting = [a for a in agents if len(a.spool)]
    failing = sum(1 for a in waiting if a.shipper.retry_in_s > 0)
    print(
        f"outage drain +{time.monotonic() - t_up:.0f}s: {len(waiting)} agents hold "
        f"{sum(len(a.spool) for a in waiting)} batches, {failing} in backoff",
        file=sys.stderr,
        flush=True,
    )


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
        largest_spool = max(a.spool.bytes for a in agents)
        server = listener(port)
        await server.start()
        t_up = time.monotonic()
        load_up = _loadavg()
        # Bounded: 100 agents replay 10 batches each per outage-second well within this.
        drain_deadline_s = max(300.0, outage_s)
        next_note = t_up + 10
        while any(len(a.spool) for a in agents) and time.monotonic() - t_up < drain_deadline_s:
            await asyncio.sleep(0.2)
            if time.monotonic() >= next_note:
                next_note += 10
                _progress(agents, t_up)
        drain_s = time.monotonic() - t_up
        drained = not any(len(a.spool) for a in agents)
        # Quiesce: no new cycles; in-flight ones finish (deliver, then count the report).
        for a in agents:
            a.interval.set_fixed(1e9)
        await asyncio.sleep(3)
        quiet_deadline = time.monotonic() + 60
        while any(len(a.spool) for a in agents) and time.monotonic() < quiet_deadline:
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
        "largest_spool_mib_at_restart": round(largest_spool / 2**20, 2),
        "spool_bound_mib_per_agent": agents[0].cfg.spool_max_bytes // 2**20,
        "spool_dropped": sum(a.spool.dropped for a in agents),
        "drain_s": round(drain_s, 1),
        "drained_within_deadline": drained,
        "drain_deadline_s": drain_deadline_s,
        "loadavg_1m_at_restart": load_up,
        "samples_expected": expected,
        "samples_stored": stored,
        "lost": expected - distinct,
        "duplicated": stored - distinct,
        "shipper_log": dict(sorted(reasons.items(), key=lambda kv: -kv[1])[:6]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_agent", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="30 s window, 60 s outage")
    parser.add_argument("--window", type=float, help=f"steady window, s (default {WINDOW_S})")
    parser.add_argument("--outage", type=float, help=f"outage, s (default {OUTAGE_S})")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"result file ({RESULTS})")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    window_s = args.window or (30.0 if args.quick else WINDOW_S)
    outage_s = args.outage or (60.0 if args.quick else OUTAGE_S)

    async def both() -> dict[str, Any]:
        # One event loop for every phase: grpc.aio stays bound to the first loop it saw.
        result: dict[str, Any] = {"benchmark": "agent", "quick": bool(args.quick)}
        result.update(await _run(window_s))
        result["targets"] = {"rss_mib": 40, "cpu_percent": 0.5}
        result["with_containers"] = await _run(min(window_s, 60.0), containers=FAKE_CONTAINERS)
        result["outage"] = await _outage(outage_s)
        return result

    doc = asyncio.run(both())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
