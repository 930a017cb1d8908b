"""Benchmark of the embedded metric store (issue 3): ingest, size, memory, query latency.

Workload: ``--hosts`` (1000) × 100 node-exporter-like series at a 10 s interval, for
``--hours`` (2) of simulated time, appended in per-host batches of 100 series × 10
intervals (1000 samples, like one JSON ingest request) while the store's batcher runs.
The head is flushed every 10 simulated minutes and merges run as they become due (the
first 2-hour partition closes during the run and is rolled up); queries run in that live
state, then again after the clock moves past the day (day block, every rollup built).

Writes ``bench/results/store.json``. Run: ``.venv/bin/python -m bench.bench_store``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from bench.common.rss import PeakRss, rss_bytes
from bench.common.workload import INTERVAL_MS, Workload
from monitoringserver.errors import OverloadedError
from monitoringserver.metrics.api import Resolution
from monitoringserver.model.matchers import Matcher
from monitoringserver.pipeline.metric_store import MetricStoreHandle, open_metric_store
from monitoringserver.storage.options import StorageOptions

RESULTS = Path(__file__).parent / "results" / "store.json"
DAY_MS = 86_400_000
#: 01:00 UTC: two hours of data cross the 02:00 partition boundary, so the live state
#: holds a closed, rolled-up partition next to open parts and the head.
START_MS = 1_700_006_400_000 - 1_700_006_400_000 % DAY_MS + 3_600_000
STEPS_PER_BATCH = 10
FLUSH_EVERY_STEPS = 60  # 10 simulated minutes


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _queries(handle: MetricStoreHandle, end_ms: int, repeat: int) -> dict[str, float]:
    q = handle.querier
    host = "host-0007:9100"
    one = [Matcher.eq("__name__", "node_load1"), Matcher.eq("instance", host)]
    six_h = end_ms - 6 * 3_600_000

    def one_series_24h() -> object:
        return q.select(one, end_ms - DAY_MS, end_ms)

    def host_1m_avg_6h() -> object:
        out = []
        for s in q.select([Matcher.eq("instance", host)], six_h, end_ms):
            bucket = (s.ts_ms - six_h) // 60_000
            sums = np.bincount(bucket, weights=s.values)
            counts = np.bincount(bucket)
            out.append(sums[counts > 0] / counts[counts > 0])
        return out

    def fleet_sum_5m_avg_6h() -> object:
        rows = q.select_rollup([Matcher.eq("__name__", "node_load1")], six_h, end_ms, Resolution.M5)
        total: dict[int, float] = {}
        stacked_ts = np.concatenate([r.ts_ms for r in rows])
        stacked_avg = np.concatenate([r.sum / r.count for r in rows])
        keys, inv = np.unique(stacked_ts, return_inverse=True)
        sums = np.bincount(inv, weights=stacked_avg)
        total.update(zip(keys.tolist(), sums.tolist(), strict=True))
        return total

    return {
        "one_series_24h_ms": _median_ms(one_series_24h, repeat),
        "host_100_series_6h_1m_avg_ms": _median_ms(host_1m_avg_6h, repeat),
        "fleet_1000_hosts_sum_5m_avg_6h_ms": _median_ms(fleet_sum_5m_avg_6h, repeat),
    }


async def run(hosts: int, hours: float, data_dir: Path) -> dict[str, Any]:
    gc.collect()
    rss_start = rss_bytes()
    workload = Workload(hosts)
    now = [START_MS / 1000]
    options = StorageOptions(flush_interval_s=3600, merge_check_interval_s=3600)
    handle = await open_metric_store(
        data_dir, options, registry=CollectorRegistry(), clock=lambda: now[0]
    )
    runner = asyncio.create_task(handle.run())
    rss_store_open = rss_bytes()
    steps = int(hours * 3600_000 // INTERVAL_MS)
    appended = 0
    overloaded = 0
    append_s = 0.0
    flush_s = 0.0
    t_all = time.perf_counter()
    for step in range(0, steps, STEPS_PER_BATCH):
        start_ms = START_MS + step * INTERVAL_MS
        batches = workload.host_batches(start_ms, STEPS_PER_BATCH)
        now[0] = (start_ms + STEPS_PER_BATCH * INTERVAL_MS) / 1000
        t0 = time.perf_counter()
        for b in batches:
            while True:
                try:
                    res = await handle.appender.append(b, source=dict(b.series[0])["instance"])
                    break
                except OverloadedError:
                    overloaded += 1  # a client backs off and retries
                    await asyncio.sleep(0.01)
            appended += res.accepted
        append_s += time.perf_counter() - t0
        if (step + STEPS_PER_BATCH) % FLUSH_EVERY_STEPS == 0:
            t0 = time.perf_counter()
            await handle.flush_now()
            await handle.maintain_now()
            flush_s += time.perf_counter() - t0
    await handle.writer.commit_pending()
    ingest_wall_s = time.perf_counter() - t_all
    gc.collect()
    rss_after_ingest = rss_bytes()
    series = handle.querier.stats().series
    end_ms = START_MS + steps * INTERVAL_MS

    queries_parts = _queries(handle, end_ms, repeat=5)

    day_start = START_MS - START_MS % DAY_MS
    now[0] = (day_start + DAY_MS) / 1000 + options.merge_grace_s + 60
    with PeakRss() as peak:
        t0 = time.perf_counter()
        await handle.compact_now()
        final_s = time.perf_counter() - t0
    stats = handle.querier.stats()
    raw = stats.resolutions["raw"]
    m5, h1 = stats.resolutions["5m"], stats.resolutions["1h"]
    queries_blocks = _queries(handle, end_ms, repeat=7)
    runner.cancel()
    await handle.aclose()
    return {
        "workload": {
            "hosts": hosts,
            "series": series,
            "hours": hours,
            "interval_s": INTERVAL_MS / 1000,
            "samples": appended,
            "samples_per_append": 100 * STEPS_PER_BATCH,
        },
        "ingest": {
            "appended_samples_per_s": round(appended / append_s),
            "end_to_end_samples_per_s": round(appended / ingest_wall_s),
            "flush_and_merge_s": round(flush_s, 1),
            "overloaded_retries": overloaded,
            "note": "appended = acknowledged (WAL written); end-to-end includes batcher "
            "commits, head flushes and merges on the same 2 cores",
        },
        "size": {
            "raw_bytes_per_sample": round(raw.bytes / raw.samples, 3),
            "raw_bytes": raw.bytes,
            "raw_samples": raw.samples,
            "raw_files": raw.files,
            "rollup_5m_bytes": m5.bytes,
            "rollup_1h_bytes": h1.bytes,
            "all_bytes_per_raw_sample": round((raw.bytes + m5.bytes + h1.bytes) / raw.samples, 3),
        },
        "memory": {
            "rss_bytes_per_series_whole_process": round(rss_after_ingest / series),
            "rss_bytes_per_series_store_only": round((rss_after_ingest - rss_start) / series),
            "rss_at_start_mib": round(rss_start / 2**20, 1),
            "rss_after_store_open_mib": round(rss_store_open / 2**20, 1),
            "rss_after_ingest_mib": round(rss_after_ingest / 2**20, 1),
            "peak_rss_final_compaction_mib": round(peak.peak / 2**20, 1),
            "final_compaction_s": round(final_s, 1),
        },
        "query_ms_warm_median": {
            "live_rolled_partition_plus_parts_and_head": queries_parts,
            "after_day_close_blocks_and_rollups": queries_blocks,
            "note": f"data covers {hours} h; the 24 h query spans that range",
        },
    }


async def rss_probe(hosts: int, data_dir: Path) -> dict[str, float]:
    """RSS of a fresh process holding ``hosts`` × 100 series, labels built per batch
    (as a parser would) so the store's own copies are the only ones kept."""
    from bench.common.workload import _host_specs
    from monitoringserver.model.labels import make_labels
    from monitoringserver.model.samples import SampleBatch

    specs = _host_specs(np.random.default_rng(0))
    gc.collect()
    before = rss_bytes()
    now = START_MS / 1000
    handle = await open_metric_store(
        data_dir, StorageOptions(), registry=CollectorRegistry(), clock=lambda: now
    )
    opened = rss_bytes()
    idx = np.arange(len(specs), dtype=np.uint32)
    for h in range(hosts):
        labels = [
            make_labels({**s.labels, "instance": f"host-{h:04d}:9100", "job": "node"})
            for s in specs
        ]
        batch = SampleBatch(labels, idx, np.full(len(specs), START_MS), np.ones(len(specs)))
        await handle.appender.append(batch)
    await handle.flush_now()
    gc.collect()
    after = rss_bytes()
    series = handle.querier.stats().series
    await handle.aclose()
    return {
        "series": series,
        "rss_before_open_mib": round(before / 2**20, 1),
        "rss_after_open_mib": round(opened / 2**20, 1),
        "rss_with_series_mib": round(after / 2**20, 1),
        "bytes_per_series_whole_process": round(after / series),
        "bytes_per_series_added": round((after - opened) / series),
    }


def _probe_in_subprocess(hosts: int, parent: Path | None) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.bench_store", "--rss-probe", "--hosts", str(hosts)]
        + (["--data-dir", str(parent)] if parent is not None else []),
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--rss-probe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--data-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-", dir=args.data_dir))
    try:
        if args.rss_probe:
            print(json.dumps(asyncio.run(rss_probe(args.hosts, tmp))))
            return 0
        result = asyncio.run(run(args.hosts, args.hours, tmp))
        result["memory"]["series_only_process"] = _probe_in_subprocess(args.hosts, args.data_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
