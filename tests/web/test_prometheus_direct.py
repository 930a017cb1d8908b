"""The Prometheus API served through ``create_app``: direct routes ahead of FastAPI's router.

The query endpoints are :class:`DirectRoute` objects that the application dispatches by
path before FastAPI's routing; these tests check that the fast path keeps what routing
gave them: token checks, the error shapes, method and slash handling, request metrics.
Every test runs twice: against the FastAPI application, and against what the HTTP server
runs (:func:`asgi_entry`: direct routes ahead of the framework's layers).
"""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.errors import OverloadedError
from monitoringserver.promql import Engine
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, asgi_entry, create_app
from monitoringserver.web.direct_routes import DirectRoute, direct_routes
from monitoringserver.web.options import LimitsOptions
from monitoringserver.web.routers.prometheus import create_router
from tests.promql.memory_querier import MemoryQuerier
from tests.web.test_prometheus_api import NOW_S, _querier

RANGE = {"query": "up", "start": str(NOW_S - 600), "end": str(NOW_S), "step": "60"}


class _App:
    def __init__(
        self, client: httpx.AsyncClient, registry: CollectorRegistry, read: str, write: str
    ) -> None:
        self.client = client
        self.registry = registry
        self.read = {"Authorization": f"Bearer {read}"}
        self.write = {"Authorization": f"Bearer {write}"}


@pytest.fixture(params=["fastapi", "entry"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[_App]:
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    q: MemoryQuerier = _querier()
    registry = CollectorRegistry()
    comps = WebComponents(appender=q, querier=q, tokens=tokens, registry=registry)  # type: ignore[arg-type]
    application = create_app(comps, [create_router(Engine(q), q, clock=lambda: NOW_S)])
    read = tokens.create("reader", ["monitoring:read"])[1]
    write = tokens.create("writer", ["monitoring:write"])[1]
    served = asgi_entry(application) if request.param == "entry" else application
    transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield _App(client, registry, read, write)
    db.close()


async def test_range_query_get_and_post_form(app: _App) -> None:
    got = await app.client.get("/api/v1/query_range", params=RANGE, headers=app.read)
    posted = await app.client.post("/api/v1/query_range", data=RANGE, headers=app.read)
    assert got.status_code == posted.status_code == 200
    assert got.json() == posted.json()
    assert got.json()["data"]["resultType"] == "matrix"
    assert len(got.json()["data"]["result"]) == 1


@pytest.mark.parametrize(
    ("headers", "status", "error_type"),
    [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer nope"}, 401, "unauthorized"),
        ("write", 403, "forbidden"),
    ],
)
async def test_scope_is_checked(
    app: _App, headers: dict[str, str] | str, status: int, error_type: str
) -> None:
    hdrs = app.write if isinstance(headers, str) else headers
    for path in ("/api/v1/query_range", "/api/v1/status/buildinfo", "/api/v1/label/job/values"):
        r = await app.client.get(path, params=RANGE, headers=hdrs)
        assert r.status_code == status, path
        assert r.json()["errorType"] == error_type
    if status == 401:
        assert "WWW-Authenticate" in r.headers


@pytest.mark.parametrize(
    ("params", "error_type", "status"),
    [
        ({**RANGE, "step": "0"}, "bad_data", 400),
        ({**RANGE, "query": "sum("}, "bad_data", 400),
        ({"query": "up"}, "bad_data", 400),
    ],
)
async def test_errors_keep_their_shape(
    app: _App, params: dict[str, str], error_type: str, status: int
) -> None:
    r = await app.client.get("/api/v1/query_range", params=params, headers=app.read)
    assert r.status_code == status
    body = r.json()
    assert body["status"] == "error"
    assert body["errorType"] == error_type
    assert body["error"].startswith("cannot ")


async def test_other_methods_and_paths_fall_through_to_routing(app: _App) -> None:
    put = await app.client.put("/api/v1/query_range", params=RANGE, headers=app.read)
    assert put.status_code == 405
    assert put.json()["errorType"] == "method_not_allowed"
    post = await app.client.post("/api/v1/status/buildinfo", headers=app.read)
    assert post.status_code == 405
    head = await app.client.head("/api/v1/status/buildinfo", headers=app.read)
    assert head.status_code == 200
    values = await app.client.get("/api/v1/label/job/values", headers=app.read)
    assert values.json() == {"status": "success", "data": ["api"]}


async def test_request_metrics_use_the_route_path(app: _App) -> None:
    await app.client.get("/api/v1/query_range", params=RANGE, headers=app.read)
    count = app.registry.get_sample_value(
        "monitoring_http_request_duration_seconds_count",
        {"method": "GET", "route": "/api/v1/query_range", "code": "200"},
    )
    assert count == 1.0


async def _ok(_request: Request) -> Response:
    return Response(b"ok")


def test_direct_route_rejects_path_parameters() -> None:
    with pytest.raises(ValueError, match="path parameters"):
        DirectRoute("/x/{name}", _ok, methods=["GET"])


def test_direct_routes_table_keeps_the_first_route_of_a_path() -> None:
    first, second = (DirectRoute("/x", _ok, methods=["GET"]) for _ in range(2))
    assert direct_routes([first, object(), second]) == {"/x": first}


async def test_a_root_path_prefix_is_stripped_before_the_lookup() -> None:
    q: MemoryQuerier = _querier()
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    comps = WebComponents(appender=q, querier=q, tokens=tokens, registry=CollectorRegistry())  # type: ignore[arg-type]
    comps.auth_enabled = False
    application = create_app(comps, [create_router(Engine(q), q, clock=lambda: NOW_S)])
    transport = httpx.ASGITransport(app=asgi_entry(application), root_path="/prom")
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/prom/api/v1/query_range", params=RANGE)
    db.close()
    assert r.status_code == 200
    assert r.json()["data"]["resultType"] == "matrix"


async def _boom(request: Request) -> Response:
    what = request.query_params.get("what", "")
    if what == "busy":
        raise OverloadedError("cannot append samples: busy", retry_after_s=2.0)
    if what == "bug":
        raise RuntimeError("internal detail")
    return Response(await request.body())


@pytest.mark.parametrize(
    ("what", "body", "headers", "status", "expect"),
    [
        ("", b"x" * 10, {}, 200, b"x" * 10),
        ("", gzip.compress(b"y" * 50, mtime=0), {"Content-Encoding": "gzip"}, 200, b"y" * 50),
        ("", b"x" * 101, {}, 413, b"cannot read request body"),
        (
            "",
            gzip.compress(b"z" * 500, mtime=0),
            {"Content-Encoding": "gzip"},
            413,
            b"cannot decompress",
        ),
        ("busy", b"", {}, 429, b"cannot append samples: busy"),
        ("bug", b"", {}, 500, b"cannot handle request: internal error"),
    ],
    ids=["plain", "gzip", "too-large", "gzip-bomb", "overloaded", "unhandled"],
)
async def test_the_entry_keeps_limits_errors_and_metrics(
    what: str, body: bytes, headers: dict[str, str], status: int, expect: bytes
) -> None:
    q: MemoryQuerier = _querier()
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    registry = CollectorRegistry()
    comps = WebComponents(
        appender=q,  # type: ignore[arg-type]
        querier=q,
        tokens=tokens,
        registry=registry,
        limits=LimitsOptions(max_body_bytes=100, max_decompressed_bytes=200),
    )
    router = APIRouter()
    router.routes.append(DirectRoute("/boom", _boom, methods=["POST"]))
    entry = asgi_entry(create_app(comps, [router]))
    transport = httpx.ASGITransport(app=entry, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post("/boom", params={"what": what}, content=body, headers=headers)
    db.close()
    assert r.status_code == status
    assert expect in r.content
    if status == 429:
        assert r.headers["Retry-After"] == "2"
    count = registry.get_sample_value(
        "monitoring_http_request_duration_seconds_count",
        {"method": "POST", "route": "/boom", "code": str(status)},
    )
    assert count == 1.0


def test_an_app_without_direct_routes_is_its_own_entry() -> None:
    q: MemoryQuerier = _querier()
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    comps = WebComponents(appender=q, querier=q, tokens=tokens, registry=CollectorRegistry())  # type: ignore[arg-type]
    application = create_app(comps)
    db.close()
    assert asgi_entry(application) is application
