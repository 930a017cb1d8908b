"""Junk parameters on every Prometheus API route: never a 500, always the error shape."""

from __future__ import annotations

import asyncio

import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from monitoringserver.promql import Engine, EngineOptions
from monitoringserver.web.errors import install_error_handlers
from monitoringserver.web.routers.prometheus import create_router
from tests.promql.memory_querier import MemoryQuerier
from tests.web.test_prometheus_api import NOW_S, _querier

ROUTES = [
    ("GET", "/api/v1/query"),
    ("POST", "/api/v1/query"),
    ("GET", "/api/v1/query_range"),
    ("POST", "/api/v1/query_range"),
    ("GET", "/api/v1/series"),
    ("POST", "/api/v1/labels"),
    ("GET", "/api/v1/label/job/values"),
    ("GET", "/api/v1/query_exemplars"),
    ("GET", "/api/v1/format_query"),
    ("POST", "/api/v1/parse_query"),
]
_FRAGMENTS = [
    "up",
    "rate(",
    "http_requests_total[5m]",
    "sum by (job)",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    "@",
    "offset",
    "-",
    "1e309",
    "NaN",
    '"',
    "'",
    "`",
    ":",
    "bool",
    "on(job)",
    "group_left",
    "topk(",
    ",",
    "smoothed",
    "anchored",
    "step()",
    "info(",
    "\\",
    "\x00",
    "é",
    " ",
]
_VALUES = st.one_of(
    st.text(max_size=30),
    st.lists(st.sampled_from(_FRAGMENTS), max_size=8).map("".join),
    st.sampled_from(["0", "-1", "1e20", "nan", "inf", "2023-11-14T22:23:20Z", "5m", "0.001"]),
)
_PARAMS = st.dictionaries(
    st.sampled_from(
        [
            "query",
            "time",
            "start",
            "end",
            "step",
            "timeout",
            "limit",
            "match[]",
            "lookback_delta",
            "stats",
        ]
    ),
    _VALUES,
    max_size=6,
)


def _app() -> FastAPI:
    q: MemoryQuerier = _querier()
    app = FastAPI()
    install_error_handlers(app)
    app.state.auth_enabled = False
    engine = Engine(q, EngineOptions(timeout_s=5.0, max_steps=2000))
    app.include_router(create_router(engine, q, clock=lambda: NOW_S))
    return app


APP = _app()


async def _call(method: str, path: str, params: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        if method == "GET":
            return await client.get(path, params=params)
        return await client.post(path, data=params)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(route=st.sampled_from(ROUTES), params=_PARAMS)
def test_junk_parameters_never_500(route: tuple[str, str], params: dict[str, str]) -> None:
    response = asyncio.run(_call(*route, params))
    assert response.status_code < 500 or response.status_code == 503, response.text
    body = response.json()
    if response.status_code >= 400:
        assert body["status"] == "error"
        assert body["errorType"] in {"bad_data", "execution", "timeout"}
        assert body["error"]
    else:
        assert body["status"] == "success"
