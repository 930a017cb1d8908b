"""Seed 004 (Citybox) endpoints.

* ``POST /simple/insert/<metric>/<value>``, ``POST /complex/insert/<metric>/<instance>/<value>``
  (``monitoring:write``): one sample at the server's time, ``job`` from
  ``prometheus_ingest.seed004_job``; answers ``{"status": "success", ...}``.
* ``GET /prom/metrics`` (``monitoring:read``): the server's own collectors in the text
  format; each request records the scrape time.
* ``GET /prom/deamon/metrics`` (``monitoring:read``): the latest pushed values, text format
  with their push timestamps.
* ``GET /prom/status`` (``monitoring:read``): ``{"status": "ok", "uptime_seconds", ...}``.
* ``GET /last/get/prometheus`` (``monitoring:read``): seconds (text, 3 decimals) since the
  last ``GET /prom/metrics``; since the server started when there was none yet.

With ``prometheus_ingest.seed004_user_agents = true`` each endpoint also checks the
seed's User-Agent (403 otherwise), on top of the token.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import msgspec
from fastapi import APIRouter
from prometheus_client import CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.prom_text import format_exposition
from monitoringserver.ingest.seed004 import (
    Client,
    PushedValues,
    check_user_agent,
    insert_labels,
    parse_value,
)
from monitoringserver.model.samples import SampleBatch
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.ingest_common import append_counted, prom_ingest_options

__all__ = ["create_seed004_router", "seed004_router"]

_TEXT = "text/plain; version=0.0.4; charset=utf-8"
_FORMAT = "seed004"


def create_seed004_router(
    options: PromIngestOptions,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    """``registry`` is what ``/prom/metrics`` exposes (default: the app's registry)."""
    router = APIRouter()
    pushed = PushedValues()
    started = clock()
    last_scrape: list[float | None] = [None]

    def guard(request: Request, scope: Scope, client: Client) -> None:
        require(request, scope)
        if options.seed004_user_agents:
            check_user_agent(request.headers.get("user-agent", ""), client)

    async def insert(request: Request) -> Response:
        guard(request, Scope.WRITE, Client.PUSHER)
        params = request.path_params
        labels = insert_labels(params["metric"], options.seed004_job, params.get("instance"))
        value = parse_value(params["value"])
        ts_ms = int(clock() * 1000)
        pushed.set(labels, value, ts_ms)
        batch = SampleBatch.from_rows([(labels, ts_ms, value)])
        result = await append_counted(components(request), batch, fmt=_FORMAT, source=_FORMAT)
        body = {
            "status": "success",
            "data": {
                "series": dict(labels),
                "value": value,
                "timestamp_ms": ts_ms,
                "accepted": result.accepted,
            },
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def prom_metrics(request: Request) -> Response:
        guard(request, Scope.READ, Client.PROMETHEUS)
        last_scrape[0] = clock()
        return Response(generate_latest(registry or components(request).registry), media_type=_TEXT)

    async def daemon_metrics(request: Request) -> Response:
        guard(request, Scope.READ, Client.PROMETHEUS)
        return Response(format_exposition(pushed.rows()), media_type=_TEXT)

    def since_scrape() -> float:
        return clock() - (last_scrape[0] if last_scrape[0] is not None else started)

    async def status(request: Request) -> Response:
        guard(request, Scope.READ, Client.CHECKER)
        body = {
            "status": "ok",
            "uptime_seconds": round(clock() - started, 3),
            "pushed_series": len(pushed),
            "scraped": last_scrape[0] is not None,
            "seconds_since_last_scrape": round(since_scrape(), 3),
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def last_get(request: Request) -> Response:
        guard(request, Scope.READ, Client.CHECKER)
        return Response(f"{since_scrape():.3f}\n", media_type="text/plain")

    router.add_route(
        "/simple/insert/{metric}/{value}", insert, methods=["POST"], include_in_schema=False
    )
    router.add_route(
        "/complex/insert/{metric}/{instance}/{value}",
        insert,
        methods=["POST"],
        include_in_schema=False,
    )
    router.add_route("/prom/metrics", prom_metrics, methods=["GET"], include_in_schema=False)
    router.add_route(
        "/prom/deamon/metrics", daemon_metrics, methods=["GET"], include_in_schema=False
    )
    router.add_route("/prom/status", status, methods=["GET"], include_in_schema=False)
    router.add_route("/last/get/prometheus", last_get, methods=["GET"], include_in_schema=False)
    return router


def seed004_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories`` (exposes ``server.registry`` on /prom/metrics)."""
    registry = getattr(server, "registry", None)
    return create_seed004_router(
        prom_ingest_options(server),
        registry=registry if isinstance(registry, CollectorRegistry) else None,
    )
