"""``GET /federate?match[]=<selector>...`` (``monitoring:read``): Prometheus federation.

The latest sample of every series matching any ``match[]`` selector, looked up within
``lookback_s`` (5 minutes, PromQL's lookback) before ``time`` (default now), in the text
exposition format with its timestamp in milliseconds and all its labels as stored
(``job``, ``instance`` and the rest: a federating Prometheus keeps them with
``honor_labels: true``). Series whose latest sample is a staleness marker are left out.
At least one ``match[]`` is required (400 otherwise, as in Prometheus).
"""

from __future__ import annotations

import asyncio

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.errors import BadDataError
from monitoringserver.ingest.prom_text import format_exposition
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.model.samples import STALE_NAN_BITS
from monitoringserver.web.deps import components, require
from monitoringserver.web.routers.prometheus_params import parse_match, parse_time_ms

__all__ = ["create_federate_router", "federate_router", "latest_samples"]

_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def latest_samples(
    querier: MetricQuerier, groups: list[list[Matcher]], start_ms: int, end_ms: int
) -> list[tuple[Labels, float, int | None]]:
    """Latest non-stale sample per series matching any matcher group (sorted by labels)."""
    found: dict[Labels, tuple[float, int]] = {}
    for matchers in groups:
        for s in querier.select(matchers, start_ms, end_ms):
            if not len(s.ts_ms) or s.labels in found:
                continue
            value = np.float64(s.values[-1])
            if int(value.view(np.uint64)) == STALE_NAN_BITS:
                continue
            found[s.labels] = (float(value), int(s.ts_ms[-1]))
    return [(labels, v, ts) for labels, (v, ts) in sorted(found.items())]


def create_federate_router(*, lookback_s: float = 300.0) -> APIRouter:
    router = APIRouter()

    async def federate(request: Request) -> Response:
        require(request, Scope.READ)
        comps = components(request)
        selectors = request.query_params.getlist("match[]")
        if request.method == "POST":
            form = await request.form()
            selectors += [str(v) for v in form.getlist("match[]")]
        if not selectors:
            raise BadDataError('cannot parse parameter "match[]": no match[] parameter provided')
        groups = parse_match(selectors)
        now_ms = int(comps.clock() * 1000)
        end_ms = parse_time_ms(request.query_params.get("time"), "time", now_ms)
        rows = await asyncio.to_thread(
            latest_samples, comps.querier, groups, end_ms - int(lookback_s * 1000), end_ms
        )
        return Response(format_exposition(rows), media_type=_TEXT)

    router.add_route("/federate", federate, methods=["GET", "POST"], include_in_schema=False)
    return router


def federate_router(server: object) -> APIRouter:
    """Factory for ``Server.router_factories``."""
    return create_federate_router()
