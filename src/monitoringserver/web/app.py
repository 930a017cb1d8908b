"""The FastAPI application: the routers of the foundation plus any routers others add.

``create_app(components, extra_routers)`` is called by ``server.py`` only. Routers find
what they need on ``request.app.state.components`` (a :class:`WebComponents`), so a
router module never constructs anything itself.

Middleware order (outermost first): request latency metrics → catch-all 500 → body
limit / gzip → direct routes (the fixed-path :class:`DirectRoute` objects of the
included routers, served by one dict lookup) → FastAPI (exception handlers, routing).

:func:`asgi_entry` is what the HTTP server runs: a request for a direct route (remote
write, queries) is served by :class:`DirectEntry` ahead of the framework's own layers,
with the same three project middlewares folded into one coroutine (a gzip body goes
through them as layers); every other request goes to the FastAPI application.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CollectorRegistry
from starlette.types import ASGIApp

from monitoringserver import __version__
from monitoringserver.auth.api import Principal, Scope
from monitoringserver.auth.tokens import TokenStore
from monitoringserver.ingest.json_metrics import JsonMetricsDecoder, SeriesCache
from monitoringserver.metrics.api import MetricAppender, MetricQuerier
from monitoringserver.web.direct_routes import (
    DirectEntry,
    DirectRoutesMiddleware,
    direct_routes,
    proxy_headers,
)
from monitoringserver.web.errors import (
    BodyLimitMiddleware,
    CatchAllMiddleware,
    install_error_handlers,
)
from monitoringserver.web.options import LimitsOptions
from monitoringserver.web.security import require_scope
from monitoringserver.web.selfmetrics import HttpMetrics, HttpMetricsMiddleware, IngestMetrics

__all__ = [
    "ComponentHealth",
    "HealthCheck",
    "HealthStatus",
    "WebComponents",
    "asgi_entry",
    "create_app",
]

STATIC_DIR = Path(__file__).parent / "static"


class HealthStatus(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    status: HealthStatus
    detail: str = ""


#: A named health probe; it must answer within a few seconds and never raise on purpose.
HealthCheck = Callable[[], Awaitable[ComponentHealth]]


@dataclass(slots=True)
class WebComponents:
    """Everything the foundation routers use. Built by ``server.py`` (or a test).

    ``sample_max_age_s`` / ``sample_max_future_s`` bound accepted sample timestamps
    relative to ``clock()`` (seconds since the epoch). ``ready`` answers ``/readyz``.
    """

    appender: MetricAppender
    querier: MetricQuerier
    tokens: TokenStore
    registry: CollectorRegistry
    limits: LimitsOptions = field(default_factory=LimitsOptions)
    auth_enabled: bool = True
    sample_max_age_s: float = 15 * 86_400.0
    sample_max_future_s: float = 600.0
    ready: Callable[[], bool] = lambda: True
    health_checks: Mapping[str, HealthCheck] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    # Built by create_app:
    json_decoder: JsonMetricsDecoder = field(default_factory=JsonMetricsDecoder)
    ingest_metrics: IngestMetrics | None = None


def create_app(components: WebComponents, extra_routers: Sequence[APIRouter] = ()) -> FastAPI:
    """The application with every foundation route and ``extra_routers`` included as is."""
    from monitoringserver.web.routers import (
        health,
        metrics_json,
        monitoring,
        status,
        tokens,
    )

    app = FastAPI(
        title="monitoringserver",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    components.json_decoder = JsonMetricsDecoder(SeriesCache(components.limits.json_series_cache))
    if components.ingest_metrics is None:
        components.ingest_metrics = IngestMetrics(components.registry)
        components.ingest_metrics.samples.labels("json")  # exported as 0 before the first post
    app.state.components = components
    app.state.authenticator = components.tokens
    app.state.auth_enabled = components.auth_enabled
    install_error_handlers(app)

    app.include_router(health.router)
    metrics_json.install(app)
    app.include_router(monitoring.router)
    app.include_router(tokens.router)
    app.include_router(status.router)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi(
        _principal: Annotated[Principal, Depends(require_scope(Scope.READ))],
    ) -> JSONResponse:
        """The OpenAPI schema (behind a token like everything but health and static files)."""
        return JSONResponse(app.openapi())

    for router in extra_routers:
        app.include_router(router)
    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    direct = direct_routes(route for router in extra_routers for route in router.routes)
    if direct:
        app.add_middleware(DirectRoutesMiddleware, routes=direct)
    limits = components.limits
    http_metrics = HttpMetrics(components.registry)
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=limits.max_body_bytes,
        max_decompressed_bytes=limits.max_decompressed_bytes,
    )
    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(HttpMetricsMiddleware, metrics=http_metrics)

    def project_middlewares(inner: ASGIApp) -> ASGIApp:
        """The three middlewares above, in the same order, around ``inner``."""
        limited = BodyLimitMiddleware(
            inner,
            max_body_bytes=limits.max_body_bytes,
            max_decompressed_bytes=limits.max_decompressed_bytes,
        )
        return HttpMetricsMiddleware(CatchAllMiddleware(limited), metrics=http_metrics)

    app.state.asgi_entry = (
        DirectEntry(
            app,
            routes=direct,
            wrap=project_middlewares,
            max_body_bytes=limits.max_body_bytes,
            metrics=http_metrics,
        )
        if direct
        else app
    )
    return app


def asgi_entry(app: FastAPI, *, forwarded_allow_ips: list[str] | str | None = None) -> ASGIApp:
    """The ASGI application to serve for ``app`` (built by :func:`create_app`): ``app``
    behind a :class:`DirectEntry` when it has direct routes.

    ``forwarded_allow_ips`` (uvicorn's syntax): the entry applies uvicorn's proxy-header
    rewriting itself (the server then runs uvicorn with ``proxy_headers=False``), so a
    direct request without ``X-Forwarded-*`` headers skips that layer."""
    entry: ASGIApp = getattr(app.state, "asgi_entry", app)
    if forwarded_allow_ips is None:
        return entry
    if isinstance(entry, DirectEntry):
        return entry.behind_proxies(forwarded_allow_ips)
    return proxy_headers(entry, forwarded_allow_ips)
