"""Child process for the kill -9 test: appends batches forever, printing each ack.

Usage: ``python kill9_child.py DATA_DIR NOW_MS``. Batch ``k`` holds 50 series × 20 samples
at ``NOW_MS - 86_400_000 + k * 20_000 + j * 1000`` with value ``k * 1000 + j``; even batches
are appended by store series id (``append_ids``), odd ones by label set (``append``).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import numpy as np
from prometheus_client import CollectorRegistry

from monitoringserver.metrics.api import DedupKey
from monitoringserver.model.labels import make_labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.metric_store import open_metric_store
from monitoringserver.storage.options import StorageOptions

SERIES = [make_labels({"__name__": "load", "host": f"h{i}"}) for i in range(50)]
PER_SERIES = 20


def make_batch(k: int, now_ms: int) -> SampleBatch:
    ts = now_ms - 86_400_000 + k * 20_000 + np.arange(PER_SERIES, dtype=np.int64) * 1000
    return SampleBatch(
        series=SERIES,
        series_idx=np.repeat(np.arange(len(SERIES), dtype=np.uint32), PER_SERIES),
        ts_ms=np.tile(ts, len(SERIES)),
        values=np.tile(k * 1000.0 + np.arange(PER_SERIES), len(SERIES)),
    )


async def main(data_dir: Path, now_ms: int) -> None:
    options = StorageOptions(batch_rows=3000, batch_interval_s=0.02, flush_interval_s=0.2)
    handle = await open_metric_store(
        data_dir, options, registry=CollectorRegistry(), clock=lambda: now_ms / 1000
    )
    runner = asyncio.create_task(handle.run())
    # Even batches go by store id (the gRPC path): the series are created here and
    # become durable with batch 0's WAL record.
    ids = handle.writer.resolve_series(SERIES)
    k = 0
    while True:
        batch = make_batch(k, now_ms)
        if k % 2 == 0:
            await handle.writer.append_ids(
                ids[batch.series_idx], batch.ts_ms, batch.values, dedup=DedupKey("child", k)
            )
        else:
            await handle.appender.append(batch, dedup=DedupKey("child", k))
        print(k, flush=True)
        k += 1
        await asyncio.sleep(0)
        if runner.done():
            runner.result()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
