"""What the Prometheus-ecosystem ingest routes share: append a batch and count it.

Every route counts under ``monitoring_ingest_*{format=...}`` (the foundation's
:class:`~monitoringserver.web.selfmetrics.IngestMetrics`). Samples the store refuses for
their timestamps are counted and dropped; the request still succeeds when anything was
accepted, as Prometheus' own receiver does (a 4xx would make the sender drop the rest).
"""

from __future__ import annotations

from monitoringserver.errors import MonitoringError
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.metrics.api import AppendResult
from monitoringserver.model.samples import SampleBatch
from monitoringserver.web.app import WebComponents

__all__ = ["append_counted", "count_error", "prom_ingest_options"]


async def append_counted(
    comps: WebComponents, batch: SampleBatch, *, fmt: str, source: str
) -> AppendResult:
    """Append ``batch`` through the components' appender and count the outcome by ``fmt``."""
    metrics = comps.ingest_metrics
    if not len(batch):
        if metrics is not None:
            metrics.requests.labels(fmt, "ok").inc()
        return AppendResult(accepted=0)
    try:
        result = await comps.appender.append(batch, source=source)
    except MonitoringError:
        count_error(comps, fmt)
        raise
    count_result(comps, fmt, result)
    return result


def count_result(comps: WebComponents, fmt: str, result: AppendResult) -> None:
    """Count one appended request of ``fmt``: its accepted and rejected samples, and the
    request as ``ok`` (``rejected`` when it refused every sample)."""
    metrics = comps.ingest_metrics
    if metrics is None:
        return
    if not result.rejected:
        metrics.count_ok(fmt, result.accepted)
        return
    metrics.samples.labels(fmt).inc(result.accepted)
    for reason, n in result.rejected.items():
        metrics.rejected.labels(fmt, reason).inc(n)
    outcome = "rejected" if result.accepted == 0 else "ok"
    metrics.requests.labels(fmt, outcome).inc()


def count_error(comps: WebComponents, fmt: str) -> None:
    """Count one request of ``fmt`` that failed before or during the append."""
    if comps.ingest_metrics is not None:
        comps.ingest_metrics.requests.labels(fmt, "error").inc()


def prom_ingest_options(server: object) -> PromIngestOptions:
    """``server.config.prometheus_ingest`` when the configuration has it, else the defaults."""
    config = getattr(server, "config", None)
    found = getattr(config, "prometheus_ingest", None)
    return found if isinstance(found, PromIngestOptions) else PromIngestOptions()
