"""Self-metrics of the embedded metric store, registered on an injected registry."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from monitoringserver.metrics.api import StoreStats

__all__ = ["StoreMetrics"]


class StoreMetrics:
    """Counters the writer and compactor update; gauges read from ``stats`` on scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry
        self.appended = Counter(
            "monitoring_store_samples_appended_total",
            "Samples acknowledged into the metric store.",
            registry=registry,
        )
        self.rejected = Counter(
            "monitoring_store_samples_rejected_total",
            "Samples refused by the metric store, by reason.",
            ["reason"],
            registry=registry,
        )
        self.duplicates = Counter(
            "monitoring_store_duplicate_batches_total",
            "Batches dropped because their agent sequence was already applied.",
            registry=registry,
        )
        self.compaction = Histogram(
            "monitoring_store_compaction_duration_seconds",
            "Duration of flush, merge and retention jobs.",
            ["kind"],
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
            registry=registry,
        )
        self._wal = Gauge(
            "monitoring_store_wal_bytes", "Bytes kept by the write-ahead log.", registry=registry
        )
        self._series = Gauge("monitoring_store_series", "Series in the index.", registry=registry)
        self._head = Gauge(
            "monitoring_store_head_samples",
            "Samples in the head table, not yet in Parquet.",
            registry=registry,
        )
        self._files = Gauge(
            "monitoring_store_files",
            "Parquet files (parts and blocks) per resolution.",
            ["resolution"],
            registry=registry,
        )
        self._bytes = Gauge(
            "monitoring_store_bytes",
            "Bytes of Parquet files per resolution.",
            ["resolution"],
            registry=registry,
        )

    def bind(self, stats: Callable[[], StoreStats], series: Callable[[], int]) -> None:
        """Read gauges from the live store at scrape time."""
        self._series.set_function(lambda: float(series()))
        self._wal.set_function(lambda: float(stats().wal_bytes))
        self._head.set_function(lambda: float(stats().head_samples))
        for res in ("raw", "5m", "1h"):
            self._files.labels(res).set_function(
                lambda r=res: float(stats().resolutions[r].files)  # type: ignore[misc]
            )
            self._bytes.labels(res).set_function(
                lambda r=res: float(stats().resolutions[r].bytes)  # type: ignore[misc]
            )
        self._registry.register(_ReadCacheCollector(stats))


class _ReadCacheCollector(Collector):
    """``monitoring_store_read_cache_{hits,misses}_total`` and ``..._bytes``, read from
    the store's stats at scrape time."""

    def __init__(self, stats: Callable[[], StoreStats]) -> None:
        self._stats = stats

    def describe(self) -> list[Metric]:
        return []  # values come from the live store; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        s = self._stats()
        prefix = "monitoring_store_read_cache"
        help_ = "Lookups of decoded Parquet rows in the read cache that {} (read_cache_bytes)."
        yield CounterMetricFamily(f"{prefix}_hits", help_.format("found them"), s.read_cache_hits)
        yield CounterMetricFamily(
            f"{prefix}_misses", help_.format("had to read files"), s.read_cache_misses
        )
        yield GaugeMetricFamily(
            f"{prefix}_bytes", "Bytes held by the read cache.", s.read_cache_bytes
        )
