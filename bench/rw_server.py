"""Run ``monitoring-server serve`` with the remote-write and PromQL routers wired in.

Until ``server.compose()`` includes them, the remote-write benchmark starts the server
through this launcher (same ``Server`` class, same config loading, same event loop as
``monitoring-server serve``): ``python -m bench.rw_server --data-dir D --http-listen A``.
``BENCH_GC_POLICY`` / ``BENCH_GC_STATS`` select and record the GC policy
(:mod:`bench.common.gcbench`).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import uvloop
from fastapi import APIRouter

from bench.common.gcbench import bench_gc_policy, start_gc_stats
from monitoringserver.config import load_config
from monitoringserver.promql.engine import Engine
from monitoringserver.server import Server, compose
from monitoringserver.web.routers.prometheus import create_router
from monitoringserver.web.routers.remote_write import remote_write_router


def _query_router(server: Server) -> APIRouter:
    assert server.store is not None
    return create_router(Engine(server.store.querier), server.store.querier)


async def _run(args: argparse.Namespace) -> int:
    config = load_config(
        None,
        flags={"data_dir": args.data_dir, "http_listen": args.http_listen,
               "grpc_listen": "127.0.0.1:0"},
    )  # fmt: skip
    start_gc_stats()
    server = Server(config=config, out=sys.stdout, gc_policy=bench_gc_policy())
    compose(server)
    server.router_factories.extend([remote_write_router, _query_router])
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
