"""HttpMetricsMiddleware: latency observed per (method, route template, code)."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from monitoringserver.web import selfmetrics
from monitoringserver.web.selfmetrics import HttpMetrics, HttpMetricsMiddleware


async def _item(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["name"])


@pytest.mark.parametrize("max_children", [4096, 1])
async def test_requests_are_counted_per_method_route_and_code(
    monkeypatch: pytest.MonkeyPatch, max_children: int
) -> None:
    monkeypatch.setattr(selfmetrics, "_MAX_CHILDREN", max_children)
    registry = CollectorRegistry()
    app = Starlette(routes=[Route("/items/{name}", _item)])
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(registry))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name in ("a", "b", "c"):
            assert (await client.get(f"/items/{name}")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
        assert (await client.post("/items/a")).status_code == 405

    def count(method: str, route: str, code: str) -> float | None:
        return registry.get_sample_value(
            "monitoring_http_request_duration_seconds_count",
            {"method": method, "route": route, "code": code},
        )

    assert count("GET", "/items/{name}", "200") == 3
    assert count("GET", "other", "404") == 1
    assert count("POST", "/items/{name}", "405") == 1
