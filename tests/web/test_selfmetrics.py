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
from monitoringserver.web.selfmetrics import HttpMetrics, HttpMetricsMiddleware, IngestMetrics


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


def test_count_ok_adds_to_the_same_series_as_the_labelled_counters() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    metrics.samples.labels("remote_write").inc(3)
    metrics.requests.labels("remote_write", "ok").inc()
    for accepted in (5, 0, 7):
        metrics.count_ok("remote_write", accepted)
    metrics.count_ok("influx", 2)
    assert (
        registry.get_sample_value("monitoring_ingest_samples_total", {"format": "remote_write"})
        == 15
    )
    assert registry.get_sample_value("monitoring_ingest_samples_total", {"format": "influx"}) == 2
    ok = {"format": "remote_write", "outcome": "ok"}
    assert registry.get_sample_value("monitoring_ingest_requests_total", ok) == 4
