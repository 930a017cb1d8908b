"""Seed-002 metrics over HTTP JSON, and the server's own exposition.

* ``POST /api/v1/metrics`` and ``POST /metrics`` (``monitoring:write``): ingest. A
  structurally invalid body is refused whole (400). Samples with out-of-window timestamps
  are dropped and counted; the answer is 200 with ``accepted`` and ``rejected`` counts
  when anything was accepted, 400 when nothing was.
* ``GET /api/v1/metrics`` and ``GET /metrics`` with query parameters (``monitoring:read``):
  history (see :mod:`monitoringserver.web.history`).
* ``GET /metrics`` without query parameters (``monitoring:read``): Prometheus exposition of
  the shared ``CollectorRegistry``.

These are plain Starlette routes: msgspec decodes the body, no pydantic on the hot path.
"""

from __future__ import annotations

import asyncio

import msgspec
import numpy as np
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError, CardinalityLimitError, MonitoringError
from monitoringserver.ingest.json_metrics import ParsedMetrics, split_by_server, split_by_window
from monitoringserver.model.samples import SampleBatch
from monitoringserver.web.app import WebComponents
from monitoringserver.web.deps import components, require
from monitoringserver.web.history import parse_history_query, run_history_query

__all__ = ["install"]

_FORMAT = "json"
_encoder = msgspec.json.Encoder()


def _json(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


async def ingest(request: Request) -> Response:
    require(request, Scope.WRITE)
    comps = components(request)
    metrics = comps.ingest_metrics
    assert metrics is not None
    try:
        body = await request.body()
        now_s = comps.clock()
        now_ms = int(now_s * 1000)
        parsed = comps.json_decoder.decode(body, now_ms=now_ms)
        window = split_by_window(
            parsed,
            min_ms=now_ms - int(comps.sample_max_age_s * 1000),
            max_ms=now_ms + int(comps.sample_max_future_s * 1000),
        )
        rejected = dict(window.rejected)
        errors = list(window.errors)
        accepted = await _append(comps, parsed, window.batch, rejected, errors)
    except MonitoringError as exc:
        # bounded label set: the error classes of errors.py
        metrics.requests.labels(_FORMAT, exc.error_type).inc()
        raise
    for reason, n in rejected.items():
        metrics.rejected.labels(_FORMAT, reason).inc(n)
    metrics.samples.labels(_FORMAT).inc(accepted)
    if accepted == 0 and rejected:
        metrics.requests.labels(_FORMAT, "rejected").inc()
        detail = "; ".join(errors) or ", ".join(f"{k}: {v}" for k, v in rejected.items())
        raise BadDataError(f"cannot accept metrics: every sample was refused: {detail}")
    metrics.requests.labels(_FORMAT, "ok").inc()
    return _json(
        {
            "status": "success",
            "data": {
                "items": parsed.items,
                "accepted": accepted,
                "rejected": sum(rejected.values()),
                "rejected_by_reason": rejected,
                "errors": errors,
            },
        }
    )


async def _append(
    comps: WebComponents,
    parsed: ParsedMetrics,
    batch: SampleBatch,
    rejected: dict[str, int],
    errors: list[str],
) -> int:
    """Append ``batch`` (``parsed`` minus out-of-window samples); returns accepted samples.

    New series are created with source ``json:<server_id>``: the source is what the store's
    per-source cardinality limit counts, so one noisy host cannot use up the limit of every
    other host. That needs one append per server; once every series of a body is known to
    be stored (steady state) one append for the whole body suffices, as it cannot create
    series. A server over a cardinality limit has its samples counted under
    ``too_many_series`` while the other servers' are kept; when every server is over, the
    ``CardinalityLimitError`` (429) propagates. Any other error propagates at once (a retry
    of the whole body is harmless: a sample with the same series and timestamp is stored
    once).
    """
    if not len(batch):
        return 0
    cache = comps.json_decoder.cache
    appender = comps.appender
    if cache.all_stored(parsed.series_numbers, parsed.generation):
        result = await appender.append(batch, source="json")
        _merge(rejected, result.rejected)
        return result.accepted
    accepted = 0
    refused: CardinalityLimitError | None = None
    for server, part in split_by_server(batch):
        try:
            result = await appender.append(part, source=f"json:{server}")
        except CardinalityLimitError as exc:
            refused = exc
            rejected["too_many_series"] = rejected.get("too_many_series", 0) + len(part)
            errors.append(f"server_id {server!r}: {exc}")
            continue
        cache.mark_stored(parsed.series_numbers[np.unique(part.series_idx)], parsed.generation)
        accepted += result.accepted
        _merge(rejected, result.rejected)
    if refused is not None and accepted == 0:
        raise refused
    return accepted


def _merge(into: dict[str, int], counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        into[reason] = into.get(reason, 0) + n


async def history(request: Request) -> Response:
    require(request, Scope.READ)
    comps = components(request)
    # repeated parameters (?server_id=a&server_id=b) count like a comma list
    params = {k: ",".join(request.query_params.getlist(k)) for k in request.query_params}
    query = parse_history_query(params, now_ms=int(comps.clock() * 1000))
    data = await asyncio.to_thread(run_history_query, comps.querier, query, comps.limits)
    return _json({"status": "success", "data": data})


async def metrics_get(request: Request) -> Response:
    """``GET /metrics``: history with query parameters, self-metrics without."""
    if request.url.query:
        return await history(request)
    require(request, Scope.READ)
    payload = generate_latest(components(request).registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Register the routes on ``app`` (plain Starlette routes, outside the OpenAPI schema)."""
    app.router.add_route("/api/v1/metrics", ingest, methods=["POST"], include_in_schema=False)
    app.router.add_route("/metrics", ingest, methods=["POST"], include_in_schema=False)
    app.router.add_route("/api/v1/metrics", history, methods=["GET"], include_in_schema=False)
    app.router.add_route("/metrics", metrics_get, methods=["GET"], include_in_schema=False)
