"""The server side of :mod:`bench.bench_logs`: a server process (log routers and the
gRPC NodeAgent service over the embedded log pipeline, on a uvloop loop like
``server.py``, auth off) and its handle in the bench (start, CPU seconds, py-spy).

``python -m bench.logs_server DATA_DIR PORT_FILE`` serves until SIGTERM and
writes ``HTTP_PORT GRPC_PORT`` to ``PORT_FILE`` once both listen. It applies the
server's GC policy once listening (``BENCH_GC_POLICY`` / ``BENCH_GC_STATS``: see
:mod:`bench.common.gcbench`).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from monitoringserver.errors import UnavailableError
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.samples import SampleBatch

__all__ = ["LogBenchServer", "load_average", "serve"]


class _NoMetrics:
    """The bench server stores logs only; agents' metric calls are refused."""

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        raise UnavailableError("cannot accept metrics: the log bench stores logs only")


def serve(data_dir: Path, port_file: Path) -> None:
    """The server process: log routers and the gRPC NodeAgent service over the embedded
    log pipeline, on a uvloop loop like ``server.py``. Writes ``HTTP_PORT GRPC_PORT``."""
    import uvicorn
    import uvloop
    from fastapi import FastAPI

    from bench.common.gcbench import bench_gc_policy, start_gc_stats
    from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
    from monitoringserver.logs.store import LogStoreOptions
    from monitoringserver.pipeline.log_pipeline import open_log_pipeline
    from monitoringserver.pipeline.log_writer import LogWriterOptions
    from monitoringserver.storage.db import Database
    from monitoringserver.util.gcpolicy import apply_gc_policy
    from monitoringserver.web.errors import install_error_handlers
    from monitoringserver.web.routers.logs import LogsWeb, logs_router
    from monitoringserver.web.routers.loki import loki_router

    start_gc_stats()
    db = Database(data_dir / "db.duckdb", threads=2)
    pipeline = open_log_pipeline(
        db,
        data_dir / "logs",
        store_options=LogStoreOptions(flush_lines=250_000, retention_s=None),
        writer_options=LogWriterOptions(batch_interval_s=0.5, maintenance_interval_s=1.0),
        wal_fsync="interval",
    )
    web = LogsWeb(pipeline.writer, pipeline.querier, pipeline.store, pipeline.compressor,
                  pipeline.aggregator, pipeline.bus, pipeline.parser.stats)  # fmt: skip
    app = FastAPI()
    install_error_handlers(app)
    app.state.auth_enabled = False
    app.include_router(logs_router(web))
    app.include_router(loki_router(web))

    async def main() -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        server = uvicorn.Server(config)
        grpc_server = GrpcServer(
            NodeAgentService(_NoMetrics(), log_appender=pipeline.writer), listen="127.0.0.1:0"
        )
        grpc_port = await grpc_server.start()
        runner = asyncio.create_task(pipeline.run())
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        gc_handle = apply_gc_policy(bench_gc_policy())  # like Server at the end of start()
        port_file.write_text(f"{port} {grpc_port}")
        await serving
        await grpc_server.aclose()
        await pipeline.aclose()
        runner.cancel()
        gc_handle.remove()  # like Server.aclose(): nothing stays frozen at exit

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        loop_runner.run(main())
    db.close()


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LogBenchServer:
    """The server subprocess on a fresh data directory; optionally sampled by py-spy."""

    def __init__(self, tmp: Path, profile: Path | None) -> None:
        self.tmp = tmp
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = self.grpc_port = 0
        self._spy: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> LogBenchServer:
        port_file = self.tmp / "port"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.logs_server", str(self.tmp), str(port_file)],
            cwd=Path(__file__).parent.parent,
        )
        end = time.monotonic() + 60
        while not port_file.exists() or not port_file.read_text():
            if time.monotonic() > end or self.proc.poll() is not None:
                raise RuntimeError("the bench server did not start")
            await asyncio.sleep(0.05)
        http, grpc_port = port_file.read_text().split()
        self.port, self.grpc_port = int(http), int(grpc_port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return _cpu_seconds(self.proc.pid)

    def start_profile(self, name: str) -> None:
        spy = shutil.which("py-spy")
        if self.profile is None or spy is None or self.proc is None:
            return
        self.profile.mkdir(parents=True, exist_ok=True)
        out = self.profile / f"{name}.txt"
        argv = [spy, "record", "--pid", str(self.proc.pid), "--threads", "--nonblocking"]
        argv += ["--rate", "50", "--format", "raw", "-o", str(out)]
        self._spy = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop_profile(self) -> None:
        if self._spy is not None:
            self._spy.send_signal(signal.SIGINT)
            self._spy.wait(timeout=60)
            self._spy = None


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))
