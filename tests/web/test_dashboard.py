"""web/routers/dashboard*.py: the page, the session cookie, the seed-003 API and /ws/dashboard
over the foundation app (create_app) with the in-memory FakeStore and real tokens."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from starlette.websockets import WebSocketDisconnect

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.logs.api import (
    ArchiveFilter,
    ArchiveInfo,
    LogPage,
    LogQuery,
    LogStoreStats,
    SeriesCounts,
)
from monitoringserver.model.labels import make_labels
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.samples import SampleBatch
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import NodeInfo
from monitoringserver.pipeline.bus import Bus
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, create_app
from monitoringserver.web.routers.dashboard import dashboard_router, dashboard_routes
from monitoringserver.web.routers.dashboard_data import DashboardData, DashboardOptions
from monitoringserver.web.routers.dashboard_events import EventHub, EventsSocket
from tests.fakes import FakeStore
from tests.logs.webapp import TestClient  # imported there without the httpx2 warning

NOW_S = 1_750_000_000.0
NOW_MS = int(NOW_S * 1000)


class FakeLogs:
    """A LogQuerier over a fixed batch (query honours ``limit`` only)."""

    def __init__(self, batch: LogBatch) -> None:
        self.batch = batch

    def query(self, query: LogQuery) -> LogPage:
        return LogPage(self.batch.take(list(range(min(query.limit, len(self.batch))))), None)

    def count_series(
        self, query: LogQuery, step_ms: int, by: Sequence[str] | None = None
    ) -> list[SeriesCounts]:
        return []

    def label_names(self, start_ms: int | None, end_ms: int | None) -> list[str]:
        return ["level", "logger", "server_id"]

    def label_values(self, name: str, start_ms: int | None, end_ms: int | None) -> list[str]:
        col = {"server_id": self.batch.server_id, "level": self.batch.level}.get(name)
        return sorted(set(col if col is not None else self.batch.logger))

    def series(self, query: LogQuery) -> list[dict[str, str]]:
        return []

    def archives(self, flt: ArchiveFilter | None = None) -> list[ArchiveInfo]:
        return []

    def stats(self) -> LogStoreStats:
        return LogStoreStats(len(self.batch), 0, 0, 0, 0, 0, None, None, {}, {})


def _batch(*rows: tuple[str, str, int, float]) -> SampleBatch:
    """Rows of (server_id, metric, seconds before NOW, value)."""
    return SampleBatch.from_rows(
        (make_labels({"__name__": m, "server_id": node, "job": "node"}), NOW_MS - ago * 1000, v)
        for node, m, ago, v in rows
    )


def _logs() -> LogBatch:
    return LogBatch.from_records(
        [
            LogRecord(NOW_MS - 2000, "disk almost full", "a", "warning", "Service.disk"),
            LogRecord(NOW_MS - 1000, "started", "b", "info", "Service.web"),
        ]
    )


@dataclass
class App:
    client: TestClient
    store: FakeStore
    tokens: TokenStore
    bus: Bus[LogBatch]
    hub: EventHub
    read: str
    write: str


def _batches() -> list[SampleBatch]:
    rows = [
        ("a", "cpu_usage_percent", 30, 10.0),
        ("a", "cpu_usage_percent", 0, 12.5),
        ("a", "memory_usage_percent", 0, 40.0),
        ("a", "disk_usage_percent", 0, 70.0),
        ("b", "cpu_usage_percent", 5, 99.0),
        ("b", "memory_usage_percent", 20, math.nan),
        ("stale-node", "cpu_usage_percent", 300, 1.0),
        ("gone", "cpu_usage_percent", 900, 1.0),
    ]
    # A second disk series of node a (another mount point): the highest of the newest wins.
    other = make_labels({"__name__": "disk_usage_percent", "server_id": "a", "mountpoint": "/v"})
    unlabelled = make_labels({"__name__": "cpu_usage_percent", "instance": "x:9100"})

    def unit(node: str, name: str, state: str) -> Any:
        return make_labels(
            {"__name__": "node_systemd_unit_state", "server_id": node, "name": name, "state": state}
        )

    services = [
        (unit("a", "nginx.service", "active"), NOW_MS - 60_000, 1.0),  # older: failed now
        (unit("a", "nginx.service", "active"), NOW_MS, 0.0),
        (unit("a", "nginx.service", "failed"), NOW_MS, 1.0),
        (unit("a", "cron.service", "active"), NOW_MS, 1.0),
        (unit("gone", "cron.service", "active"), NOW_MS, 1.0),  # no node metrics: not listed
    ]
    return [
        _batch(*rows),
        SampleBatch.from_rows([(other, NOW_MS, 90.0), (unlabelled, NOW_MS, 5.0), *services]),
    ]


def _fill(store: FakeStore) -> None:
    for batch in _batches():
        asyncio.run(store.append(batch))


def _build(
    auth: bool = True, registry: NodeRegistry | None = None, **intervals: float
) -> Iterator[App]:
    """The app; ``intervals`` go to the seed-001 EventsSocket (seconds)."""
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    store = FakeStore()
    _fill(store)
    bus: Bus[LogBatch] = Bus(queue_size=4)
    data = DashboardData(
        store,
        nodes=registry,
        logs=FakeLogs(_logs()),
        clock=lambda: NOW_S,
        started_s=NOW_S - 90,
        options=DashboardOptions(cache_s=0.0),
    )
    comps = WebComponents(
        appender=store,
        querier=store,
        tokens=tokens,
        registry=CollectorRegistry(),
        clock=lambda: NOW_S,
        auth_enabled=auth,
    )
    hub = EventHub()
    events = EventsSocket(data, hub, bus, **intervals)
    app = create_app(comps, [dashboard_routes(data, bus, hub, events)])
    read = tokens.create("viewer", ["monitoring:read"])[1]
    write = tokens.create("writer", ["monitoring:write"])[1]
    with TestClient(app) as client:
        yield App(client, store, tokens, bus, hub, read, write)
    db.close()


@pytest.fixture
def app() -> Iterator[App]:
    yield from _build()


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/dashboard", "text/html"),
        ("/static/dashboard.js", "javascript"),
        ("/static/dashboard.css", "text/css"),
        ("/static/vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("/static/vendor/uplot/LICENSE", ""),
    ],
)
def test_page_and_static_files_are_public(app: App, path: str, kind: str) -> None:
    r = app.client.get(path)
    assert r.status_code == 200
    assert kind in r.headers["content-type"]


@pytest.mark.parametrize(
    "path",
    ["/api/dashboard/metrics", "/api/dashboard/stats", "/api/dashboard/history/a"],
)
def test_api_needs_a_token(app: App, path: str) -> None:
    assert app.client.get(path).status_code == 401
    assert app.client.get(path, headers=_auth(app.read)).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [(b'{"token": "nope"}', 401), (b'{"token": ""}', 400), (b"[1]", 400), (b"{", 400)],
)
def test_session_rejects_bad_tokens(app: App, body: bytes, status: int) -> None:
    r = app.client.post(
        "/api/v1/session", content=body, headers={"Content-Type": "application/json"}
    )
    assert r.status_code == status
    assert "set-cookie" not in r.headers


def test_session_needs_json(app: App) -> None:
    r = app.client.post("/api/v1/session", data={"token": app.read})  # an HTML form
    assert r.status_code == 400
    assert "set-cookie" not in r.headers


def test_ws_cookie_only_from_the_same_origin(app: App) -> None:
    app.client.cookies.set("ms_session", app.read)
    evil = {"Origin": "http://evil.example"}
    with app.client.websocket_connect("/ws/dashboard", headers=evil) as ws:
        ws.send_text("ping")  # taken as the (invalid) first-message token
        assert ws.receive_json()["type"] == "error"
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 4401
    same = {"Origin": "http://testserver"}
    with app.client.websocket_connect("/ws/dashboard", headers=same) as ws:
        _initial(ws)


def test_session_cookie_round_trip(app: App) -> None:
    assert app.client.get("/api/v1/session").status_code == 401
    r = app.client.post("/api/v1/session", json={"token": app.read})
    assert r.status_code == 200
    assert r.json()["data"] == {"name": "viewer", "scopes": ["monitoring:read"]}
    cookie = r.headers["set-cookie"].lower()
    assert "ms_session=" in cookie
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert app.client.get("/api/v1/session").json()["data"]["name"] == "viewer"
    assert app.client.get("/api/dashboard/metrics").status_code == 200
    assert app.client.delete("/api/v1/session").status_code == 200
    assert app.client.get("/api/dashboard/metrics").status_code == 401


def test_metrics_latest_per_node(app: App) -> None:
    nodes = app.client.get("/api/dashboard/metrics", headers=_auth(app.read)).json()["nodes"]
    assert list(nodes) == ["a", "b", "stale-node"]  # "gone" is older than 10 min
    a, b = nodes["a"], nodes["b"]
    assert (a["cpu_usage_percent"], a["memory_usage_percent"], a["disk_usage_percent"]) == (
        12.5,
        40.0,
        90.0,
    )
    assert a["status"] == "online"
    assert a["last_seen_ms"] == NOW_MS
    assert a["last_seen"] == "2025-06-15T15:06:40.000Z"
    assert b["memory_usage_percent"] is None
    assert b["disk_usage_percent"] is None
    assert b["last_seen_ms"] == NOW_MS - 5000
    assert nodes["stale-node"]["status"] == "stale"
    assert a["services"] == {"cron.service": "active", "nginx.service": "failed"}
    assert b["services"] == {}
    assert not a["registered"]


@pytest.mark.parametrize(
    ("limit", "points"),
    [(None, 2), ("1", 1), ("1000", 2)],
)
def test_history(app: App, limit: str | None, points: int) -> None:
    params = {"limit": limit} if limit else {}
    r = app.client.get("/api/dashboard/history/a", params=params, headers=_auth(app.read))
    body = r.json()
    assert body["node_id"] == "a"
    assert len(body["metrics"]["cpu_usage_percent"]["values"]) == points
    assert body["metrics"]["cpu_usage_percent"]["values"][-1] == 12.5
    last = body["history"][-1]
    assert last["ts_ms"] == NOW_MS
    assert last["cpu_usage_percent"] == 12.5
    assert last["disk_usage_percent"] == 90.0  # the series with the newest sample
    if points == 2:
        first = body["history"][0]
        assert first["cpu_usage_percent"] == 10.0
        assert first["memory_usage_percent"] is None


def test_history_stale_marker_is_null(app: App) -> None:
    body = app.client.get("/api/dashboard/history/b", headers=_auth(app.read)).json()
    assert body["metrics"]["memory_usage_percent"]["values"] == [None]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/dashboard/history/nobody", 404),
        ("/api/dashboard/history/a?limit=0", 400),
        ("/api/dashboard/history/a?limit=x", 400),
    ],
)
def test_history_errors(app: App, path: str, status: int) -> None:
    r = app.client.get(path, headers=_auth(app.read))
    assert r.status_code == status
    assert r.json()["status"] == "error"


def test_stats(app: App) -> None:
    s = app.client.get("/api/dashboard/stats", headers=_auth(app.read)).json()
    assert s["active_nodes"] == 2
    assert s["total_nodes"] == 3
    assert s["nodes_by_status"] == {"online": 2, "offline": 0, "stale": 1}
    assert s["series"] == app.store.stats().series
    assert s["total_services"] == 2
    assert s["uptime_s"] == 90.0
    assert s["log_lines"] == 2
    assert s["websocket_clients"] == 0


def _initial(ws: Any) -> dict[str, Any]:
    msg: dict[str, Any] = ws.receive_json()
    assert msg["type"] == "initial", msg
    return msg


@pytest.mark.parametrize("how", ["query", "header", "cookie", "message", "bare"])
def test_ws_authenticates(app: App, how: str) -> None:
    path, headers = "/ws/dashboard", {}
    if how == "query":
        path += f"?token={app.read}"
    elif how == "header":
        headers = _auth(app.read)
    elif how == "cookie":
        app.client.cookies.set("ms_session", app.read)
    with app.client.websocket_connect(path, headers=headers) as ws:
        if how == "message":
            ws.send_json({"type": "auth", "token": app.read})
        elif how == "bare":
            ws.send_text(app.read)
        data = _initial(ws)["data"]
        assert set(data["metrics"]["nodes"]) == {"a", "b", "stale-node"}
        assert data["history"]["a"]["history"][-1]["cpu_usage_percent"] == 12.5
        assert data["log_sources"] == {
            "nodes": ["a", "b"],
            "loggers": ["Service.disk", "Service.web"],
            "log_levels": ["info", "warning"],
        }
        first = data["logs"][0]
        assert (first["node_id"], first["level"], first["logger_name"]) == (
            "a",
            "WARNING",
            "Service.disk",
        )


@pytest.mark.parametrize(
    ("how", "code"),
    [("bad-query", 4401), ("bad-message", 4401), ("junk-json", 4401), ("no-scope", 4403)],
)
def test_ws_rejects(app: App, how: str, code: int) -> None:
    path = "/ws/dashboard"
    if how == "bad-query":
        path += "?token=wrong"
    elif how == "no-scope":
        path += f"?token={app.write}"
    with app.client.websocket_connect(path) as ws:
        if how == "bad-message":
            ws.send_json({"type": "auth", "token": "wrong"})
        elif how == "junk-json":
            ws.send_text("{not json")
        assert ws.receive_json()["type"] == "error"
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == code


@pytest.mark.parametrize("ping", ["ping", '{"type": "ping"}'])
def test_ws_ping_pong_update(app: App, ping: str) -> None:
    with app.client.websocket_connect(f"/ws/dashboard?token={app.read}") as ws:
        _initial(ws)
        ws.send_text("hello")  # not a ping: ignored
        ws.send_text(ping)
        assert ws.receive_json() == {"type": "pong"}
        update = ws.receive_json()
        assert update["type"] == "update"
        assert update["data"]["metrics"]["nodes"]["a"]["cpu_usage_percent"] == 12.5
        assert set(update["data"]["history"]) == {"a", "b", "stale-node"}
        assert update["timestamp"] == "2025-06-15T15:06:40.000Z"
        stats = app.client.get("/api/dashboard/stats", headers=_auth(app.read)).json()
        assert stats["websocket_clients"] == 1


def test_ws_pushes_new_logs_from_the_bus(app: App) -> None:
    with app.client.websocket_connect(f"/ws/dashboard?token={app.read}") as ws:
        _initial(ws)
        app.bus.publish_threadsafe(
            LogBatch.from_records(
                [
                    LogRecord(NOW_MS, "boom", "a", "error", "Service.x"),
                    LogRecord(NOW_MS, "ok", "b", "info", "Service.y"),
                ]
            )
        )
        got = [ws.receive_json(), ws.receive_json()]
    assert [(m["type"], m["node_id"]) for m in got] == [("new_logs", "a"), ("new_logs", "b")]
    line = got[0]["logs"][0]
    assert (line["level"], line["logger_name"], line["message"]) == ("ERROR", "Service.x", "boom")


def _drain(ws: Any, seen: list[str]) -> None:
    while True:
        seen.append(ws.receive_json()["type"])


def test_ws_slow_client_is_dropped(app: App) -> None:
    with app.client.websocket_connect(f"/ws/dashboard?token={app.read}") as ws:
        _initial(ws)
        one = LogBatch.from_records([LogRecord(NOW_MS, "x", "a", "info", "l")])

        def flood() -> None:
            for _ in range(50):  # far beyond the queue of 4, in one loop turn
                app.bus.publish(one)

        app.client.portal.call(lambda: asyncio.get_running_loop().call_soon(flood))  # type: ignore[union-attr]
        seen: list[str] = []
        with pytest.raises(WebSocketDisconnect) as exc:
            _drain(ws, seen)
        assert exc.value.code == 1013
        assert seen[-1] == "error"


def test_ws_without_auth_admits_everyone() -> None:
    for app in _build(auth=False):
        with app.client.websocket_connect("/ws/dashboard") as ws:
            assert _initial(ws)["data"]["metrics"]["nodes"]
        r = app.client.post("/api/v1/session", json={"token": "anything"})
        assert r.json()["data"] == {"name": "anonymous", "scopes": ["admin"]}


async def test_registry_enriches_and_router_factory() -> None:
    db = Database(":memory:")
    registry = NodeRegistry(db, clock=lambda: NOW_S)
    await registry.register("a", NodeInfo(hostname="host-a", cpu_count=8))
    store = FakeStore()
    for batch in _batches():
        await store.append(batch)

    class Server:
        def __init__(self) -> None:
            self.store = self
            self.querier = store

    data = DashboardData(store, nodes=registry, clock=lambda: NOW_S)
    nodes = data.metrics(data.node_views())
    assert nodes["a"]["registered"]
    assert nodes["a"]["hostname"] == "host-a"
    assert nodes["a"]["cpu_count"] == 8
    assert nodes["a"]["status"] == "online"
    assert data.stats(0, data.node_views())["registered_nodes"] == 1
    router = dashboard_router(Server(), nodes=registry)
    paths = {getattr(r, "path", "") for r in router.routes}
    assert {"/dashboard", "/ws/dashboard", "/api/dashboard/history/{node_id}"} <= paths
    await registry.aclose()
    db.close()


def test_update_is_cached_for_cache_s() -> None:
    store = FakeStore()
    _fill(store)
    now = [NOW_S]
    data = DashboardData(store, clock=lambda: now[0], options=DashboardOptions(cache_s=5))
    first = data.update()
    asyncio.run(store.append(_batch(("a", "cpu_usage_percent", 0, 50.0))))
    assert data.update() is first
    now[0] += 10
    assert data.update()["metrics"]["nodes"]["a"]["cpu_usage_percent"] == 50.0
    assert np.isfinite(first["metrics"]["nodes"]["a"]["cpu_usage_percent"])
