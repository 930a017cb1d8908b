"""Text ingest routes (``monitoring:write``), all answering 204 on success:

* ``POST /api/v1/import/prometheus``: Prometheus text exposition, or OpenMetrics when the
  ``Content-Type`` is ``application/openmetrics-text``. Query parameters: ``timestamp``
  (epoch seconds or milliseconds) for samples without one (default: now), and repeated
  ``extra_label=name=value`` added to every series (overriding the body's).
* ``POST /write`` (InfluxDB 1.x) and ``POST /api/v2/write`` (2.x): line protocol with
  ``precision`` (``ns`` default); ``db`` (1.x) becomes a ``db`` label. Besides a bearer
  token, the token is accepted the way InfluxDB clients send it: ``Authorization: Token
  <token>`` (2.x), Basic auth with the token as password, or ``?p=<token>`` (1.x).
  ``GET /ping`` answers 204 for clients that probe it.

Parsing runs on a worker thread (bodies can be megabytes); errors are 400 ``cannot parse ...``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Authenticator, Principal, Scope
from monitoringserver.errors import AuthError, BadDataError, ForbiddenError, MonitoringError
from monitoringserver.ingest.influx import parse_influx
from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.model.labels import METRIC_NAME, validate_label_name
from monitoringserver.model.samples import SampleBatch
from monitoringserver.util.timestamps import parse_timestamp_ms
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.ingest_common import append_counted, count_error

__all__ = ["create_import_router", "import_router", "require_influx"]


def _influx_credential(request: Request) -> str | None:
    """The token an InfluxDB client sends: ``Authorization: Token <t>`` (2.x), Basic auth
    with the token as password, or the ``p`` query parameter (1.x)."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "token" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return request.query_params.get("p") or None


def require_influx(request: Request) -> Principal:
    """``monitoring:write`` by bearer token, or by the token in an InfluxDB client's form."""
    if not getattr(request.app.state, "auth_enabled", True) or request.headers.get(
        "authorization", ""
    ).lower().startswith("bearer "):
        return require(request, Scope.WRITE)
    credential = _influx_credential(request)
    if credential is None:
        return require(request, Scope.WRITE)  # raises the usual 401
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(credential)
    if principal is None:
        raise AuthError("cannot authenticate request: token is not valid")
    if not principal.has(Scope.WRITE):
        raise ForbiddenError("cannot authorize request: scope 'monitoring:write' is required")
    return principal


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
        require_influx(request)
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
