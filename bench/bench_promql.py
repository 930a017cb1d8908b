"""Benchmark of the PromQL engine (issue 5 figures): latency of the three issue queries.

Workload (``bench.common.workload``): ``--hosts`` (1000) × 100 node-exporter-like series
× ``--points`` (60) samples at a 10 s interval (6 M samples). It is loaded into

* the real embedded store (``open_metric_store`` in a temp dir; appended, flushed and
  compacted so every read hits the final Parquet block, as in production),
* an array-backed in-memory querier (selection costs ~nothing: the engine alone),
* Debian's ``victoria-metrics`` when installed (the anchor; timed over HTTP, so its
  figures include JSON encoding and a local round trip).

Queries: one series (``node_load1{instance=...}``), ``sum by (instance) (rate(
node_cpu_seconds_total[5m]))`` and ``sum(rate(node_network_receive_bytes_total[5m]))``, as
range queries over the whole range at a 15 s step and as instant queries at its end.
Warm medians of wall time; for our engine split into store ``select``, evaluation
and the JSON encoding of the response body (what ``/api/v1/query_range`` sends, so the
total compares with VictoriaMetrics' HTTP figure less the local round trip), plus the
process CPU time (``cpu_ms``: robust when other work shares the cores); for
VictoriaMetrics the server process' CPU time per query (``server_cpu_ms``, clock ticks
of 10 ms, so small values read 0 or 10).

A second scenario repeats the engine author's stress case on the in-memory querier:
8000 counters × 1440 points, range queries of 300 steps.

Writes ``bench/results/promql.json``. Run: ``.venv/bin/python -m bench.bench_promql``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry

from bench.common.workload import INTERVAL_MS, SERIES_PER_HOST, Workload
from bench.promql_support import ArrayQuerier, VictoriaMetrics, timed
from monitoringserver.errors import OverloadedError
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.pipeline.metric_store import open_metric_store
from monitoringserver.promql import Engine, Result
from monitoringserver.storage.options import StorageOptions
from monitoringserver.web.routers.prometheus_encode import encode_data

RESULTS = Path(__file__).parent / "results" / "promql.json"
DAY_MS = 86_400_000
START_MS = 1_700_006_400_000 - 1_700_006_400_000 % DAY_MS
STEP_MS = 15_000

QUERIES = {
    "one_series": 'node_load1{instance="host-0007:9100"}',
    "sum_by_instance_rate_cpu": "sum by (instance) (rate(node_cpu_seconds_total[5m]))",
    "sum_rate_network_receive": "sum(rate(node_network_receive_bytes_total[5m]))",
}
STRESS_QUERIES = {
    "sum_by_instance_rate": "sum by (instance) (rate(x_total[5m]))",
    "sum_rate": "sum(rate(x_total[5m]))",
    "avg_over_time": "avg_over_time(x_total[5m])",
    "quantile_over_time": "quantile_over_time(0.9, x_total[5m])",
}


def _arrays(hosts: int, points: int) -> tuple[list[Labels], NDArray[np.int64], NDArray[np.float64]]:
    workload = Workload(hosts)
    values = np.stack([workload.step() for _ in range(points)], axis=1)
    ts = START_MS + np.arange(points, dtype=np.int64) * INTERVAL_MS
    return workload.labels, np.broadcast_to(ts, values.shape).copy(), values


def _time_engine(
    querier: MetricQuerier, queries: dict[str, str], start: int, end: int, step: int, repeat: int
) -> dict[str, Any]:
    """Warm medians (ms) of range and instant queries, split into select and evaluation."""
    timer = timed(querier)
    engine = Engine(timer)
    out: dict[str, Any] = {}
    for name, q in queries.items():
        for kind in ("range", "instant"):

            def run(q: str = q, kind: str = kind) -> Result:
                if kind == "range":
                    return engine.range(q, start, end, step)
                return engine.instant(q, end)

            series = len(run().series)
            totals, selects, encodes, cpus = [], [], [], []
            for _ in range(repeat):
                timer.select_s = 0.0
                c0, t0 = time.process_time(), time.perf_counter()
                result = run()
                t1 = time.perf_counter()
                encode_data(result)
                t2 = time.perf_counter()
                totals.append(t2 - t0)
                encodes.append(t2 - t1)
                cpus.append(time.process_time() - c0)
                selects.append(timer.select_s)
            total = statistics.median(totals)
            sel = statistics.median(selects)
            enc = statistics.median(encodes)
            out[f"{name}.{kind}"] = {
                "total_ms": round(total * 1000, 1),
                "select_ms": round(sel * 1000, 1),
                "eval_ms": round((total - sel - enc) * 1000, 1),
                "encode_ms": round(enc * 1000, 1),
                "cpu_ms": round(statistics.median(cpus) * 1000, 1),
                "result_series": series,
            }
    return out


async def _load_store(
    data_dir: Path, labels: list[Labels], ts: NDArray[np.int64], values: NDArray[np.float64]
) -> tuple[Any, dict[str, float]]:
    from monitoringserver.model.samples import SampleBatch

    now = [float(ts[0, -1]) / 1000 + 1]
    handle = await open_metric_store(
        data_dir,
        StorageOptions(flush_interval_s=3600, merge_check_interval_s=3600),
        registry=CollectorRegistry(),
        clock=lambda: now[0],
    )
    runner = asyncio.create_task(handle.run())
    points = ts.shape[1]
    idx = np.repeat(np.arange(SERIES_PER_HOST, dtype=np.uint32), points)
    t0 = time.perf_counter()
    for h in range(0, len(labels), SERIES_PER_HOST):
        sl = slice(h, h + SERIES_PER_HOST)
        batch = SampleBatch(labels[sl], idx, ts[sl].ravel(), values[sl].ravel())
        while True:
            try:
                await handle.appender.append(batch, source=dict(labels[h])["instance"])
                break
            except OverloadedError:
                await asyncio.sleep(0.01)
    await handle.flush_now()
    append_s = time.perf_counter() - t0
    # Move the clock past the day's partition so the final block is built.
    now[0] = (START_MS + DAY_MS) / 1000 + 3600
    t0 = time.perf_counter()
    await handle.compact_now()
    compact_s = time.perf_counter() - t0
    runner.cancel()
    return handle, {"append_and_flush_s": round(append_s, 1), "compact_s": round(compact_s, 1)}


def _time_victoria(
    vm: VictoriaMetrics, start: int, end: int, step: int, repeat: int
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, q in QUERIES.items():
        rng = {"query": q, "start": str(start / 1000), "end": str(end / 1000)}
        for kind, path, params in (
            ("range", "/api/v1/query_range", {**rng, "step": f"{step // 1000}s"}),
            ("instant", "/api/v1/query", {"query": q, "time": str(end / 1000)}),
        ):
            series = vm.query(path, params)
            totals, cpus = [], []
            for _ in range(repeat):
                c0, t0 = vm.cpu_s(), time.perf_counter()
                vm.query(path, params)
                totals.append(time.perf_counter() - t0)
                cpus.append(vm.cpu_s() - c0)
            out[f"{name}.{kind}"] = {
                "total_ms": round(statistics.median(totals) * 1000, 1),
                "server_cpu_ms": round(statistics.median(cpus) * 1000, 1),
                "result_series": series,
            }
    return out


def _stress(repeat: int) -> dict[str, Any]:
    hosts, points = 1000, 1440
    labels = [
        make_labels({"__name__": "x_total", "instance": f"h{h}", "cpu": str(c)})
        for h in range(hosts)
        for c in range(8)
    ]
    rng = np.random.default_rng(1)
    values = np.cumsum(rng.uniform(0, 10, (len(labels), points)), axis=1)
    ts = START_MS + np.arange(points, dtype=np.int64) * INTERVAL_MS
    querier = ArrayQuerier(labels, np.broadcast_to(ts, values.shape).copy(), values)
    end = int(ts[-1])
    start = int(ts[0]) + 300_000
    step = (end - start) // 299
    res = _time_engine(querier, STRESS_QUERIES, start, start + 299 * step, step, repeat)
    return {
        "workload": f"{len(labels)} counters x {points} points, range 300 steps of {step} ms",
        "queries_ms": {k: v for k, v in res.items() if k.endswith(".range")},
    }


def run(hosts: int, points: int, repeat: int, victoria: bool, tmp: Path) -> dict[str, Any]:
    labels, ts, values = _arrays(hosts, points)
    start, end = int(ts[0, 0]), int(ts[0, -1])
    result: dict[str, Any] = {
        "workload": {
            "hosts": hosts,
            "series": len(labels),
            "points_per_series": points,
            "samples": int(values.size),
            "interval_s": INTERVAL_MS / 1000,
            "range": f"{start}..{end} ms, step {STEP_MS // 1000} s ({(end - start) // STEP_MS + 1}"
            " steps); instant queries at the end",
            "repeat": repeat,
        },
        "queries": QUERIES,
    }
    memory = ArrayQuerier(labels, ts, values)
    result["memory_querier_ms"] = _time_engine(memory, QUERIES, start, end, STEP_MS, repeat)
    handle, load = asyncio.run(_load_store(tmp / "store", labels, ts, values))
    try:
        gc.collect()
        result["store_load"] = load
        result["embedded_store_ms"] = _time_engine(
            handle.querier, QUERIES, start, end, STEP_MS, repeat
        )
    finally:
        asyncio.run(handle.aclose())
    if victoria and VictoriaMetrics.available():
        with VictoriaMetrics(tmp / "vm") as vm:
            t0 = time.perf_counter()
            vm.import_arrays(labels, ts, values)
            result["victoria_import_s"] = round(time.perf_counter() - t0, 1)
            result["victoria_metrics_http_ms"] = _time_victoria(vm, start, end, STEP_MS, repeat)
    result["stress_memory_querier"] = _stress(max(3, repeat // 2))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--points", type=int, default=60)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-victoria", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-promql-", dir=args.data_dir))
    load_before = os.getloadavg()[0]
    try:
        result = run(args.hosts, args.points, args.repeat, not args.no_victoria, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_average_1m"] = {
        "before": round(load_before, 2),
        "after": round(os.getloadavg()[0], 2),
    }
    result["cpus"] = os.cpu_count()
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
