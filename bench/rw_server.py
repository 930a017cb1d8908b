"""Run ``monitoring-server serve`` for the benchmarks, with a benchmark GC policy.

The same ``Server`` class, config loading (defaults plus ``MONITORING_*`` environment
variables), ``server.compose()`` wiring and uvloop event loop as ``monitoring-server
serve``: the remote-write route with its decode worker, PromQL, the admin flush and
everything else come from ``compose()``; this launcher adds no route of its own.
``BENCH_GC_POLICY`` / ``BENCH_GC_STATS`` select and record the GC policy
(:mod:`bench.common.gcbench`).

Usage: ``python -m bench.rw_server --data-dir D [--http-listen A]`` (gRPC on a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop

from bench.common.gcbench import bench_gc_policy, start_gc_stats
from monitoringserver.config import load_config
from monitoringserver.server import Server, compose


async def _run(args: argparse.Namespace) -> int:
    config = load_config(
        None,
        flags={"data_dir": args.data_dir, "http_listen": args.http_listen,
               "grpc_listen": "127.0.0.1:0"},
    )  # fmt: skip
    start_gc_stats()
    server = Server(config=config, out=sys.stdout, gc_policy=bench_gc_policy())
    compose(server)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    try:
        await server.start()
        await server.serve()
    finally:
        await server.aclose()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--http-listen", default="127.0.0.1:0")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())
