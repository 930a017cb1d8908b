"""Text ingest routes (``monitoring:write``), all answering 204 on success:

* ``POST /api/v1/import/prometheus``: Prometheus text exposition, or OpenMetrics when the
  ``Content-Type`` is ``application/openmetrics-text``. Query parameters: ``timestamp``
  (epoch seconds or milliseconds) for samples without one (default: now), and repeated
  ``extra_label=name=value`` added to every series (overriding the body's).
* ``POST /write`` (InfluxDB 1.x) and ``POST /api/v2/write`` (2.x): line protocol with
  ``precision`` (``ns`` default); ``db`` (1.x) becomes a ``db`` label. ``GET /ping`` answers
  204 for clients that probe it.

Parsing runs on a worker thread (bodies can be megabytes); errors are 400 ``cannot parse ...``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError, MonitoringError
from monitoringserver.ingest.influx import parse_influx
from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.model.labels import METRIC_NAME, validate_label_name
from monitoringserver.model.samples import SampleBatch
from monitoringserver.util.timestamps import parse_timestamp_ms
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.ingest_common import append_counted, count_error

__all__ = ["create_import_router", "import_router"]


def _text(body: bytes, what: str) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadDataError(f"cannot parse {what}: body is not UTF-8: {exc}") from exc


def _extra_labels(request: Request) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for item in request.query_params.getlist("extra_label"):
        name, sep, value = item.partition("=")
        if not sep:
            raise BadDataError(f"cannot parse extra_label {item!r}: expected name=value")
        validate_label_name(name)
        if name == METRIC_NAME:
            raise BadDataError("cannot parse extra_label: __name__ is not allowed")
        out.append((name, value))
    return tuple(out)


def _with_extra(batch: SampleBatch, extra: tuple[tuple[str, str], ...]) -> SampleBatch:
    if not extra:
        return batch
    series = [tuple(sorted({**dict(labels), **dict(extra)}.items())) for labels in batch.series]
    series = [tuple(p for p in s if p[1] != "") for s in series]
    return SampleBatch(series, batch.series_idx, batch.ts_ms, batch.values)


def create_import_router() -> APIRouter:
    router = APIRouter()
    parser = ExpositionParser()
    parser_lock = asyncio.Lock()

    async def import_prometheus(request: Request) -> Response:
        require(request, Scope.WRITE)
        comps = components(request)
        fmt = "prometheus_text"
        try:
            now_ms = int(comps.clock() * 1000)
            stamp = request.query_params.get("timestamp")
            try:
                default_ts = parse_timestamp_ms(stamp, now_ms=now_ms) if stamp else now_ms
            except (TypeError, ValueError) as exc:
                raise BadDataError(f"cannot parse timestamp: {exc}") from exc
            extra = _extra_labels(request)
            text = _text(await request.body(), "exposition")
            ctype = request.headers.get("content-type", "")
            openmetrics = "openmetrics" in ctype.lower()
            async with parser_lock:
                parsed = await asyncio.to_thread(
                    parser.parse, text, default_ts_ms=default_ts, openmetrics=openmetrics
                )
            batch = _with_extra(parsed.batch, extra)
        except MonitoringError:
            count_error(comps, fmt)
            raise
        await append_counted(comps, batch, fmt=fmt, source=_source(request, fmt))
        return Response(status_code=204)

    async def influx_write(request: Request) -> Response:
        require(request, Scope.WRITE)
        comps = components(request)
        fmt = "influx"
        try:
            extra: tuple[tuple[str, str], ...] = ()
            db = request.query_params.get("db")
            if db and request.url.path == "/write":
                extra = (("db", db),)
            text = _text(await request.body(), "influx line protocol")
            result = await asyncio.to_thread(
                parse_influx,
                text,
                now_ms=int(comps.clock() * 1000),
                precision=request.query_params.get("precision"),
                extra=extra,
            )
        except MonitoringError:
            count_error(comps, fmt)
            raise
        if result.skipped_strings and comps.ingest_metrics is not None:
            comps.ingest_metrics.rejected.labels(fmt, "string_field").inc(result.skipped_strings)
        await append_counted(comps, result.batch, fmt=fmt, source=_source(request, fmt))
        return Response(status_code=204)

    async def ping(request: Request) -> Response:
        return Response(status_code=204, headers={"X-Influxdb-Version": "1.8-compatible"})

    router.add_route(
        "/api/v1/import/prometheus", import_prometheus, methods=["POST"], include_in_schema=False
    )
    router.add_route("/write", influx_write, methods=["POST"], include_in_schema=False)
    router.add_route("/api/v2/write", influx_write, methods=["POST"], include_in_schema=False)
    router.add_route("/ping", ping, methods=["GET", "HEAD"], include_in_schema=False)
    return router


def _source(request: Request, fmt: str) -> str:
    return request.client.host if request.client else fmt


def import_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories``."""
    return create_import_router()
