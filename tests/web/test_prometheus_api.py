"""The Prometheus-compatible query API, including the calls Grafana's data source makes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.metrics.api import SeriesData
from monitoringserver.model.labels import make_labels
from monitoringserver.model.matchers import Matcher
from monitoringserver.promql import Engine, EngineOptions
from monitoringserver.web.errors import install_error_handlers
from monitoringserver.web.routers.prometheus import _query_items, create_router
from tests.promql.memory_querier import MemoryQuerier

NOW_S = 1_700_000_600.0
BASE_MS = 1_700_000_000_000


def _querier() -> MemoryQuerier:
    q = MemoryQuerier()
    for i in range(11):
        t = BASE_MS + i * 60_000
        for inst, rate in (("a", 1.0), ("b", 2.0)):
            q.add(
                make_labels({"__name__": "http_requests_total", "job": "api", "instance": inst}),
                t,
                i * 60 * rate,
            )
        q.add(make_labels({"__name__": "up", "job": "api", "instance": "a"}), t, 1.0)
        q.add(make_labels({"__name__": "dup", "x": "1"}), t, 1.0)
        q.add(make_labels({"__name__": "dup", "x": "2"}), t, 2.0)
    return q


class FakeAuth:
    def authenticate(self, credential: str) -> Principal | None:
        if credential == "reader":
            return Principal("reader", frozenset({Scope.READ}))
        if credential == "writer":
            return Principal("writer", frozenset({Scope.WRITE}))
        return None


def _app(options: EngineOptions | None = None, auth: bool = False) -> FastAPI:
    q = _querier()
    app = FastAPI()
    install_error_handlers(app)
    app.state.auth_enabled = auth
    app.state.authenticator = FakeAuth()
    app.include_router(create_router(Engine(q, options), q, clock=lambda: NOW_S))
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with _client(_app()) as c:
        yield c


async def test_instant_vector_shape(client: httpx.AsyncClient) -> None:
    r = await client.get(
        "/api/v1/query", params={"query": "http_requests_total", "time": "1700000600"}
    )
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "vector"
    result = sorted(body["data"]["result"], key=lambda s: s["metric"]["instance"])
    assert result[0] == {
        "metric": {"__name__": "http_requests_total", "job": "api", "instance": "a"},
        "value": [1700000600, "600"],
    }
    assert result[1]["value"] == [1700000600, "1200"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("1+1", ["scalar", [1700000600, "2"]]),
        ('"hello"', ["string", [1700000600, "hello"]]),
        ("scalar(up) / 0", ["scalar", [1700000600, "+Inf"]]),
        ("-1/0", ["scalar", [1700000600, "-Inf"]]),
        ("0/0", ["scalar", [1700000600, "NaN"]]),
    ],
)
async def test_instant_scalar_and_string(
    client: httpx.AsyncClient, query: str, expected: list[object]
) -> None:
    body = (await client.get("/api/v1/query", params={"query": query})).json()
    assert [body["data"]["resultType"], body["data"]["result"]] == expected


async def test_instant_defaults_to_now_and_rfc3339(client: httpx.AsyncClient) -> None:
    a = (await client.get("/api/v1/query", params={"query": "up"})).json()
    b = (
        await client.get("/api/v1/query", params={"query": "up", "time": "2023-11-14T22:23:20Z"})
    ).json()
    assert a["data"]["result"][0]["value"][0] == 1700000600
    assert b["data"]["result"][0]["value"][0] == 1700000600


async def test_instant_matrix_selector(client: httpx.AsyncClient) -> None:
    body = (
        await client.get("/api/v1/query", params={"query": "up[2m]", "time": "1700000600.5"})
    ).json()
    assert body["data"]["resultType"] == "matrix"
    assert body["data"]["result"][0]["values"] == [[1700000540, "1"], [1700000600, "1"]]


async def test_range_query_post_form_with_stats(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/query_range",
        data={
            "query": "sum by (job) (rate(http_requests_total[5m]))",
            "start": "1700000300",
            "end": "1700000600",
            "step": "60s",
            "stats": "all",
        },
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["resultType"] == "matrix"
    assert data["result"][0]["metric"] == {"job": "api"}
    assert [p[0] for p in data["result"][0]["values"]] == list(range(1700000300, 1700000601, 60))
    assert {v for _, v in data["result"][0]["values"]} == {"3"}
    assert data["stats"]["samples"]["totalQueryableSamples"] > 0
    assert "execTotalTime" in data["stats"]["timings"]


async def test_range_query_float_step_and_limit(client: httpx.AsyncClient) -> None:
    body = (
        await client.get(
            "/api/v1/query_range",
            params={
                "query": "http_requests_total",
                "start": "1700000000",
                "end": "1700000600",
                "step": "120.5",
                "limit": "1",
            },
        )
    ).json()
    assert len(body["data"]["result"]) == 1
    assert body["warnings"] == ["results truncated due to limit"]


@pytest.mark.parametrize(
    ("path", "params", "status", "error_type"),
    [
        ("/api/v1/query", {}, 400, "bad_data"),
        ("/api/v1/query", {"query": "sum(("}, 400, "bad_data"),
        ("/api/v1/query", {"query": "up", "time": "yesterday"}, 400, "bad_data"),
        ("/api/v1/query", {"query": "dup + on() dup"}, 422, "execution"),
        (
            "/api/v1/query",
            {"query": 'ceil({__name__=~"up|http_.*", instance="a"})'},
            422,
            "execution",
        ),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "10", "end": "5", "step": "1"},
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "5", "step": "0"},
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "100000", "step": "1"},
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            {"query": "up", "start": "0", "end": "5", "step": "soon"},
            400,
            "bad_data",
        ),
        (
            "/api/v1/query_range",
            {"query": "up[5m]", "start": "0", "end": "5", "step": "1"},
            400,
            "bad_data",
        ),
        ("/api/v1/series", {}, 400, "bad_data"),
        ("/api/v1/series", {"match[]": "sum(up)"}, 400, "bad_data"),
        ("/api/v1/labels", {"limit": "-1"}, 400, "bad_data"),
    ],
)
async def test_errors(
    client: httpx.AsyncClient, path: str, params: dict[str, str], status: int, error_type: str
) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error"
    assert body["errorType"] == error_type
    assert body["error"]


class BlockingQuerier(MemoryQuerier):
    """``select`` blocks until the test releases it (a query stuck in storage)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        self.entered.set()
        self.release.wait(30)
        return super().select(matchers, start_ms, end_ms)


async def test_timeout_is_503_and_slot_is_held_until_the_thread_ends() -> None:
    q = BlockingQuerier()
    app = FastAPI()
    install_error_handlers(app)
    app.state.auth_enabled = False
    app.include_router(create_router(Engine(q), q, clock=lambda: NOW_S, max_concurrent=1))
    async with _client(app) as c:
        r = await c.get("/api/v1/query", params={"query": "up", "timeout": "0.05"})
        assert r.status_code == 503
        assert r.json()["errorType"] == "timeout"
        assert r.headers["Retry-After"] == "1"
        # The stuck query still owns the only slot: the next one cannot start.
        r2 = await c.get("/api/v1/query", params={"query": "1", "timeout": "0.05"})
        assert r2.status_code == 503
        assert "no query slot" in r2.json()["error"]
        q.release.set()
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            r3 = await c.get("/api/v1/query", params={"query": "1", "timeout": "1"})
            if r3.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.01)
        assert r3.status_code == 200


async def test_sample_limit_is_422() -> None:
    async with _client(_app(EngineOptions(max_samples=3))) as c:
        r = await c.get("/api/v1/query", params={"query": "http_requests_total[10m]"})
    assert r.status_code == 422
    assert "too many samples" in r.json()["error"]


async def test_series_labels_and_values(client: httpx.AsyncClient) -> None:
    series = (
        await client.get(
            "/api/v1/series", params={"match[]": "http_requests_total", "start": "1700000000"}
        )
    ).json()
    assert series["data"] == [
        {"__name__": "http_requests_total", "instance": "a", "job": "api"},
        {"__name__": "http_requests_total", "instance": "b", "job": "api"},
    ]
    posted = (await client.post("/api/v1/series", data={"match[]": ["up", 'dup{x="1"}']})).json()
    assert len(posted["data"]) == 2
    limited = (await client.get("/api/v1/series", params={"match[]": "dup", "limit": "1"})).json()
    assert len(limited["data"]) == 1
    assert limited["warnings"]
    labels = (await client.get("/api/v1/labels")).json()
    assert labels["data"] == ["__name__", "instance", "job", "x"]
    matched = (await client.post("/api/v1/labels", data={"match[]": "dup"})).json()
    assert matched["data"] == ["__name__", "x"]
    names = (await client.get("/api/v1/label/__name__/values")).json()
    assert names["data"] == ["dup", "http_requests_total", "up"]
    inst = (await client.get("/api/v1/label/instance/values", params={"match[]": "up"})).json()
    assert inst["data"] == ["a"]
    one = (await client.get("/api/v1/label/__name__/values", params={"limit": "1"})).json()
    assert one["data"] == ["dup"]
    assert one["warnings"] == ["results truncated due to limit"]


async def test_static_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/metadata")).json() == {"status": "success", "data": {}}
    ex = (await client.get("/api/v1/query_exemplars", params={"query": "up"})).json()
    assert ex == {"status": "success", "data": []}
    build = (await client.get("/api/v1/status/buildinfo")).json()["data"]
    assert set(build) >= {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    runtime = (await client.get("/api/v1/status/runtimeinfo")).json()["data"]
    assert runtime["reloadConfigSuccess"] is True
    fmt = (await client.get("/api/v1/format_query", params={"query": "sum(up)by(job)"})).json()
    assert fmt["data"] == "sum by (job) (up)"
    ast = (await client.post("/api/v1/parse_query", data={"query": "rate(up[5m]) + 1"})).json()
    assert ast["data"]["type"] == "BinaryExpr"
    assert [c["type"] for c in ast["data"]["children"]] == ["Call", "NumberLiteral"]


async def test_annotations_are_returned(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/v1/query", params={"query": "rate(up[5m])"})).json()
    assert any("might not be a counter" in i for i in body["infos"])
    warn = (await client.get("/api/v1/query", params={"query": "quantile(2, up)"})).json()
    assert any("quantile value should be between 0 and 1" in w for w in warn["warnings"])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer nope"}, 401),
        ({"Authorization": "Bearer writer"}, 403),
        ({"Authorization": "Bearer reader"}, 200),
    ],
)
async def test_every_route_requires_read_scope(headers: dict[str, str], status: int) -> None:
    async with _client(_app(auth=True)) as c:
        for path in (
            "/api/v1/query?query=up",
            "/api/v1/labels",
            "/api/v1/status/buildinfo",
            "/api/v1/label/__name__/values",
            "/api/v1/metadata",
        ):
            assert (await c.get(path, headers=headers)).status_code == status, path


async def test_grafana_data_source_flow(client: httpx.AsyncClient) -> None:
    """The requests Grafana's Prometheus data source sends, in the shapes it sends them."""
    health = await client.get("/api/v1/query", params={"query": "1+1", "time": "1700000600.123"})
    assert health.json()["data"] == {"resultType": "scalar", "result": [1700000600.123, "2"]}
    assert (await client.get("/api/v1/status/buildinfo")).status_code == 200
    labels = await client.get("/api/v1/labels", params={"start": "1700000000", "end": "1700000600"})
    assert "job" in labels.json()["data"]
    names = await client.get(
        "/api/v1/label/__name__/values", params={"start": "1700000000", "end": "1700000600"}
    )
    assert "up" in names.json()["data"]
    series = await client.get(
        "/api/v1/series",
        params={"match[]": '{__name__="up"}', "start": "1700000000", "end": "1700000600"},
    )
    assert series.json()["data"] == [{"__name__": "up", "instance": "a", "job": "api"}]
    assert (await client.get("/api/v1/metadata", params={"limit": "100"})).status_code == 200
    rng = await client.post(
        "/api/v1/query_range",
        data={"query": "up", "start": "1700000000", "end": "1700000600", "step": "60"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    values = rng.json()["data"]["result"][0]["values"]
    assert len(values) == 11
    assert values[0] == [1700000000, "1"]
    instant = (
        await client.post("/api/v1/query", data={"query": "up", "time": "1700000600"})
    ).json()
    assert instant["data"]["result"][0]["value"] == [1700000600, "1"]


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"query=up",
        b"query=up+%2B+1&time=1700000600",
        b"match%5B%5D=up&match%5B%5D=dup&&",
        b"flag&empty=&=nameless",
        b"a=b=c&bad=%ZZ&utf8=%E2%82%AC&latin=\xe2\x82\xac",
        b"a;b=1&x=%3D%26",
    ],
)
def test_query_string_is_decoded_as_starlette_decodes_it(raw: bytes) -> None:
    assert _query_items(raw) == parse_qsl(raw.decode("latin-1"), keep_blank_values=True)


async def test_encoded_query_string(client: httpx.AsyncClient) -> None:
    r = await client.get(f"/api/v1/query?query=up+%2B+1&time={NOW_S}")
    assert r.json()["data"]["result"][0]["value"][1] == "2"
    r = await client.get(
        "/api/v1/series?match%5B%5D=up&match%5B%5D=dup&start=1700000000&end=1700000600"
    )
    assert len(r.json()["data"]) == 3
