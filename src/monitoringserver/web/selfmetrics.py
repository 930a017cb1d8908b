"""The server's own metrics for the HTTP layer, on an injected ``CollectorRegistry``.

Served in Prometheus exposition at ``GET /metrics`` (without query parameters) together
with everything else registered on the same registry (store, WAL, compaction, ...).
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["HttpMetrics", "HttpMetricsMiddleware", "IngestMetrics"]

_MAX_CHILDREN = 4096
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """HTTP request counters and latencies, labelled by route template (bounded cardinality)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "monitoring_http_request_duration_seconds",
            "Time from the request's arrival until its response finished, in seconds.",
            ["method", "route", "code"],
            registry=registry,
            buckets=_LATENCY_BUCKETS,
        )
        # (method, route, code) -> its histogram child: skips the client library's
        # label lookup per request (bounded: methods x route templates x codes).
        self._children: dict[tuple[str, str, int], Histogram] = {}

    def observe(self, method: str, route: str, code: int, seconds: float) -> None:
        """Count one request of ``method`` on ``route`` (a path template) answered with
        ``code`` after ``seconds``."""
        key = (method, route, code)
        child = self._children.get(key)
        if child is None:
            child = self.duration.labels(method, route, str(code))
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = child
        child.observe(seconds)


class IngestMetrics:
    """Samples accepted and rejected by the HTTP ingest paths, by format and reason."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.samples = Counter(
            "monitoring_ingest_samples",
            "Samples accepted by ingest, by wire format.",
            ["format"],
            registry=registry,
        )
        self.rejected = Counter(
            "monitoring_ingest_rejected_samples",
            "Samples refused by ingest, by wire format and reason.",
            ["format", "reason"],
            registry=registry,
        )
        self.requests = Counter(
            "monitoring_ingest_requests",
            "Ingest requests by wire format and outcome: ok, rejected (every sample refused) "
            "or the error type (bad_data, too_many_series, overloaded, unavailable, ...).",
            ["format", "outcome"],
            registry=registry,
        )
        # format -> (samples child, requests{outcome="ok"} child): skips two label lookups
        # per request on the hot ingest paths (bounded: one entry per wire format).
        self._ok: dict[str, tuple[Counter, Counter]] = {}

    def count_ok(self, fmt: str, accepted: int) -> None:
        """Count a request of ``fmt`` that refused nothing: ``accepted`` samples, one
        ``ok`` request (the same series as ``samples.labels(fmt).inc(...)`` and
        ``requests.labels(fmt, "ok").inc()``)."""
        children = self._ok.get(fmt)
        if children is None:
            children = self._ok[fmt] = (self.samples.labels(fmt), self.requests.labels(fmt, "ok"))
        children[0].inc(accepted)
        children[1].inc()


class HttpMetricsMiddleware:
    """Observes every HTTP request's latency under its route template (``other`` if none)."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        code = 500

        async def observing_send(message: Message) -> None:
            nonlocal code
            if message["type"] == "http.response.start":
                code = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, observing_send)
        finally:
            self.metrics.observe(
                scope.get("method", ""), self._template(scope), code, time.perf_counter() - started
            )

    def _template(self, scope: Scope) -> str:
        """The matched route's path template; plain Starlette routes leave only ``endpoint``."""
        route = scope.get("route")
        if isinstance(route, BaseRoute):
            return str(getattr(route, "path", "other"))
        endpoint = scope.get("endpoint")
        app = scope.get("app")
        if endpoint is None or app is None:
            return "other"
        path = scope.get("path", "")
        for candidate in getattr(app, "routes", ()):
            if (
                isinstance(candidate, Route)
                and candidate.endpoint is endpoint
                and candidate.path_regex.fullmatch(path)
            ):
                return candidate.path
        return "other"
