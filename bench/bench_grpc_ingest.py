"""gRPC ingest throughput: simulated node agents → NodeAgent.SendMetrics → metric store.

Workload (issue 4): ``AGENTS`` agents × ``SERIES`` series each; every agent registers,
defines its series once in its first batch, then sends one batch per round with one
sample per series (columnar bytes). A load-generator subprocess keeps ``INFLIGHT``
calls open so the server process (this one: grpc.aio + the real embedded store, WAL
``fsync = interval``) has most of one core. Two runs: ``null`` (an appender that only
counts: protocol + decode ceiling) and ``store`` (the real store; acknowledged = in the
WAL; ``commit_s`` is the time to get everything into DuckDB afterwards).

A third run, ``fleet``: ``FLEET_AGENTS`` agents register, keep their Control stream
open (set-up ends when the server has confirmed every Control subscription) and
report ``FLEET_SERIES`` samples every ``FLEET_INTERVAL_S`` (spread evenly)
into the real store, with the node registry and control hub on DuckDB as in the server;
it reports the acknowledgement latency percentiles (goal: p99 < 100 ms at 10,000 agents).

Results: ``bench/results/grpc_ingest.json``.
Usage: ``python -m bench.bench_grpc_ingest [--out PATH] [--only null|store|fleet]...
[rounds [agents [fleet_agents]]]``; ``--out`` writes the results elsewhere (e.g. a temp
file while iterating), ``--only`` (repeatable) runs a subset; the environment variable
``BENCH_FLEET_ROUNDS`` overrides ``FLEET_ROUNDS`` (e.g. 1 to profile round 0 alone).
The server side applies the server's GC policy once listening, as ``Server.start()``
does (``BENCH_GC_POLICY``: see :mod:`bench.common.gcbench`).
"""

from __future__ import annotations

import array
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
from prometheus_client import CollectorRegistry

from bench.common.gcbench import bench_gc_policy
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.metric_store import open_metric_store
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc
from monitoringserver.storage.options import StorageOptions
from monitoringserver.util.gcpolicy import apply_gc_policy

RESULTS = Path(__file__).parent / "results" / "grpc_ingest.json"
AGENTS = 1000
SERIES = 1000
ROUNDS = 6
INFLIGHT = 48
FLEET_AGENTS = 10_000
FLEET_SERIES = 100
FLEET_INTERVAL_S = 30.0
FLEET_ROUNDS = int(os.environ.get("BENCH_FLEET_ROUNDS", "4"))


class NullAppender:
    def __init__(self) -> None:
        self.samples = 0

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        self.samples += len(batch)
        return AppendResult(accepted=len(batch))


def _defs(agent: int) -> list[pb.SeriesDef]:
    host = f"host-{agent:04d}"
    out = []
    for i in range(SERIES):
        labels = [
            pb.Label(name="__name__", value=f"node_metric_{i % 100}"),
            pb.Label(name="instance", value=host),
            pb.Label(name="job", value="node"),
            pb.Label(name="k", value=str(i // 100)),
            pb.Label(name="server_id", value=host),
        ]
        out.append(pb.SeriesDef(id=i, labels=labels))
    return out


async def _client(target: str, rounds: int, agents: int, out: Any) -> None:
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(4)]
    stubs = [pb_grpc.NodeAgentStub(c) for c in channels]  # type: ignore[no-untyped-call]
    sessions = []
    for a in range(agents):
        resp = await stubs[a % 4].Register(pb.RegisterRequest(agent_id=f"host-{a:04d}"))
        sessions.append(resp.session_id)
    ids = array.array("I", range(SERIES)).tobytes()
    value_bufs = [array.array("d", [float(r * 7 + i % 13) for i in range(SERIES)]).tobytes()
                  for r in range(rounds)]  # fmt: skip
    base_ts = int(time.time() * 1000) - rounds * 10_000
    sem = asyncio.Semaphore(INFLIGHT)
    latencies: list[float] = []

    async def send(a: int, r: int) -> None:
        msg = pb.MetricsBatch(
            agent_id=f"host-{a:04d}",
            batch_seq=r + 1,
            session_id=sessions[a],
            series=_defs(a) if r == 0 else (),
            series_ids=ids,
            timestamps_ms=array.array("q", [base_ts + r * 10_000]).tobytes() * SERIES,
            values=value_bufs[r],
        )
        async with sem:
            t0 = time.perf_counter()
            while True:
                try:
                    await stubs[a % 4].SendMetrics(msg, timeout=60)
                    break
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                        raise
                    await asyncio.sleep(0.05)
            latencies.append(time.perf_counter() - t0)

    # Round 0 carries the definitions (the session set-up); time rounds 1.. only.
    await asyncio.gather(*(send(a, 0) for a in range(agents)))
    latencies.clear()
    t0 = time.perf_counter()
    for r in range(1, rounds):
        await asyncio.gather(*(send(a, r) for a in range(agents)))
    elapsed = time.perf_counter() - t0
    for c in channels:
        await c.close()
    lat = sorted(latencies)
    out.put(
        {
            "elapsed_s": elapsed,
            "samples": (rounds - 1) * agents * SERIES,
            "p50_ms": 1000 * statistics.median(lat),
            "p99_ms": 1000 * lat[int(len(lat) * 0.99) - 1],
        }
    )


def _client_main(target: str, rounds: int, agents: int, out: Any) -> None:
    asyncio.run(_client(target, rounds, agents, out))


async def _fleet_client(target: str, agents: int, out: Any) -> None:
    opts = [("grpc.use_local_subchannel_pool", 1)]
    channels = [grpc.aio.insecure_channel(target, options=opts) for _ in range(16)]
    stubs = [pb_grpc.NodeAgentStub(c) for c in channels]  # type: ignore[no-untyped-call]
    reg_sem = asyncio.Semaphore(64)

    async def register(a: int) -> str:
        async with reg_sem:
            resp = await stubs[a % 16].Register(
                pb.RegisterRequest(agent_id=f"fleet-{a:05d}", node=pb.NodeInfo(hostname=f"h{a}"))
            )
            return str(resp.session_id)

    t_setup = time.perf_counter()
    sessions = await asyncio.gather(*(register(a) for a in range(agents)))
    streams = [
        stubs[a % 16].Control(pb.ControlSubscribe(agent_id=f"fleet-{a:05d}", session_id=sid))
        for a, sid in enumerate(sessions)
    ]
    # Connected means the server confirmed each Control subscription: the rounds start
    # after the connection storm, not in the middle of it.
    await asyncio.gather(*(st.initial_metadata() for st in streams))
    setup_s = time.perf_counter() - t_setup
    ids = array.array("I", range(FLEET_SERIES)).tobytes()
    values = array.array("d", [1.0] * FLEET_SERIES).tobytes()
    latencies: list[list[float]] = [[] for _ in range(FLEET_ROUNDS)]
    errors: dict[str, int] = {}
    error_details: dict[str, str] = {}
    retries = 0
    start = time.perf_counter()
    base_ts = int(time.time() * 1000)

    async def agent(a: int) -> None:
        nonlocal retries
        stub = stubs[a % 16]
        defined = False  # like the agent: definitions go along until a batch succeeded
        for r in range(FLEET_ROUNDS):
            due = start + (r + a / agents) * FLEET_INTERVAL_S
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            defs = []
            if not defined:
                defs = [
                    pb.SeriesDef(
                        id=i,
                        labels=[
                            pb.Label(name="__name__", value=f"node_metric_{i}"),
                            pb.Label(name="instance", value=f"fleet-{a:05d}"),
                        ],
                    )
                    for i in range(FLEET_SERIES)
                ]
            msg = pb.MetricsBatch(
                agent_id=f"fleet-{a:05d}",
                batch_seq=r + 1,
                session_id=sessions[a],
                series=defs,
                series_ids=ids,
                timestamps_ms=array.array("q", [base_ts + r * 30_000]).tobytes() * FLEET_SERIES,
                values=values,
            )
            t0 = time.perf_counter()
            while True:  # like the agent: RESOURCE_EXHAUSTED waits the server's hint
                try:
                    await stub.SendMetrics(msg, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    hint = dict(exc.trailing_metadata() or ()).get("retry-after-ms")
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and hint:
                        retries += 1
                        await asyncio.sleep(int(hint) / 1000)
                        continue
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    error_details.setdefault(exc.code().name, str(exc.details())[:300])
                    break
                latencies[r].append(time.perf_counter() - t0)
                defined = True
                break

    await asyncio.gather(*(agent(a) for a in range(agents)))
    for st in streams:
        st.cancel()
    for c in channels:
        await c.close()

    def pct(values: list[float]) -> dict[str, float]:
        v = sorted(values) or [0.0]
        return {
            "acks": len(values),
            "p50_ms": round(1000 * statistics.median(v), 2),
            "p99_ms": round(1000 * v[max(0, int(len(v) * 0.99) - 1)], 2),
            "max_ms": round(1000 * v[-1], 2),
        }

    out.put(
        {
            "agents": agents,
            "setup_s": round(setup_s, 2),
            # Round 0 creates every series (1 M at 10k agents); later rounds only append.
            "rounds": [pct(lat) for lat in latencies],
            "errors": errors,
            "error_details": error_details,
            "overload_retries": retries,
            "samples": sum(len(x) for x in latencies) * FLEET_SERIES,
        }
    )


def _fleet_main(target: str, agents: int, out: Any) -> None:
    asyncio.run(_fleet_client(target, agents, out))


async def _wait_result(proc: Any, q: Any) -> dict[str, Any]:
    while True:
        try:
            result: dict[str, Any] = q.get_nowait()
            return result
        except Exception:
            if not proc.is_alive():
                raise RuntimeError("load generator died") from None
            await asyncio.sleep(0.05)


async def _run_fleet(agents: int) -> dict[str, Any]:
    from monitoringserver.nodes.audit import AuditLog
    from monitoringserver.nodes.control import ControlHub
    from monitoringserver.nodes.registry import NodeRegistry

    with tempfile.TemporaryDirectory() as tmp:
        handle = await open_metric_store(Path(tmp), StorageOptions(), registry=CollectorRegistry())
        store_task = asyncio.ensure_future(handle.run())
        registry = NodeRegistry(handle.database)
        hub = ControlHub(AuditLog(handle.database))
        service = NodeAgentService(
            handle.appender, registry=registry, hub=hub, options=GrpcOptions()
        )
        server = GrpcServer(service, listen="127.0.0.1:0")
        port = await server.start()
        gc_handle = apply_gc_policy(bench_gc_policy())  # as Server.start() does
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=_fleet_main, args=(f"127.0.0.1:{port}", agents, q))
        proc.start()
        peak = 0

        async def sample_connected() -> None:
            nonlocal peak
            while True:
                peak = max(peak, len(hub.connected_nodes()))
                await asyncio.sleep(1)

        sampler = asyncio.ensure_future(sample_connected())
        result = await _wait_result(proc, q)
        sampler.cancel()
        proc.join(30)
        result["control_streams_connected_peak"] = peak
        result["registered"] = len(registry.list(include_stale=True))
        gc_handle.remove()
        await server.aclose(1)
        await registry.aclose()
        await handle.aclose()
        await store_task
    result["kind"] = "fleet"
    result["interval_s"] = FLEET_INTERVAL_S
    result["series_per_agent"] = FLEET_SERIES
    return result


async def _run(kind: str, rounds: int, agents: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        handle = None
        if kind == "store":
            handle = await open_metric_store(
                Path(tmp), StorageOptions(), registry=CollectorRegistry()
            )
            appender: Any = handle.appender
            store_task = asyncio.ensure_future(handle.run())
        else:
            appender = NullAppender()
        service = NodeAgentService(appender, options=GrpcOptions())
        server = GrpcServer(service, listen="127.0.0.1:0")
        port = await server.start()
        gc_handle = apply_gc_policy(bench_gc_policy())  # as Server.start() does
        ctx = mp.get_context("spawn")
        q = ctx.Queue()
        proc = ctx.Process(target=_client_main, args=(f"127.0.0.1:{port}", rounds, agents, q))
        proc.start()
        result = await _wait_result(proc, q)
        proc.join(30)
        commit_s = 0.0
        if handle is not None:
            t0 = time.perf_counter()
            await handle.writer.commit_pending()
            commit_s = time.perf_counter() - t0
            stats = handle.querier.stats()
            result["series_in_store"] = stats.series
            await handle.aclose()
            await store_task
        gc_handle.remove()
        await server.aclose(1)
    result["kind"] = kind
    result["samples_per_s"] = result["samples"] / result["elapsed_s"]
    result["commit_s"] = commit_s
    result["samples_per_s_incl_commit"] = result["samples"] / (result["elapsed_s"] + commit_s)
    return result


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    out_path = RESULTS
    only: list[str] = []
    while args and args[0].startswith("--"):
        flag, value = args.pop(0), args.pop(0)
        if flag == "--out":
            out_path = Path(value)
        elif flag == "--only":
            only.append(value)
        else:
            raise SystemExit(f"cannot parse arguments: unknown option {flag}")
    kinds = only or ["null", "store", "fleet"]
    rounds = int(args[0]) if args else ROUNDS
    agents = int(args[1]) if len(args) > 1 else AGENTS
    fleet_agents = int(args[2]) if len(args) > 2 else FLEET_AGENTS

    async def all_runs() -> list[dict[str, Any]]:
        # One event loop for every run: grpc.aio stays bound to the first loop it saw.
        out = [await _run(kind, rounds, agents) for kind in ("null", "store") if kind in kinds]
        if "fleet" in kinds:
            out.append(await _run_fleet(fleet_agents))
        return out

    load_before = os.getloadavg()[0]
    runs = asyncio.run(all_runs())
    doc = {
        "benchmark": "grpc_ingest",
        "load_average_1m_before": round(load_before, 2),
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "agents": agents,
        "series_per_agent": SERIES,
        "timed_rounds": rounds - 1,
        "inflight": INFLIGHT,
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(doc, indent=2))
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
