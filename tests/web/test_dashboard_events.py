"""web/routers/dashboard_events.py: the seed-001 event stream /api/v1/monitoring/events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.websockets import WebSocketDisconnect

from monitoringserver.model.logs import LogBatch, LogRecord
from tests.web.test_dashboard import NOW_MS, App, _build

PATH = "/api/v1/monitoring/events"


@pytest.fixture
def app() -> Iterator[App]:
    yield from _build(metrics_interval_s=3600.0, ping_interval_s=3600.0, timeout_s=7200.0)


def _connect(ws: Any) -> None:
    first = ws.receive_json()
    assert (first["type"], first["data"]) == ("system", {"message": "connected"})
    metrics = ws.receive_json()
    assert metrics["type"] == "metrics"
    assert set(metrics["data"]["nodes"]) == {"a", "b", "stale-node"}
    assert metrics["timestamp"] == "2025-06-15T15:06:40.000Z"


def test_events_connect_pong_and_published_events(app: App) -> None:
    with app.client.websocket_connect(f"{PATH}?token={app.read}") as ws:
        _connect(ws)
        ws.send_text("ping")
        assert ws.receive_json()["type"] == "pong"
        assert app.client.portal is not None
        n = app.client.portal.call(lambda: app.hub.publish("alert", {"title": "disk"}, now_ms=0))
        assert n == 1
        assert ws.receive_json() == {
            "type": "alert",
            "data": {"title": "disk"},
            "timestamp": "1970-01-01T00:00:00.000Z",
        }
        app.bus.publish_threadsafe(
            LogBatch.from_records([LogRecord(NOW_MS, "boom", "a", "error", "svc")])
        )
        event = ws.receive_json()
        assert event["type"] == "logs"
        assert event["data"]["node_id"] == "a"
        assert event["data"]["logs"][0]["message"] == "boom"


@pytest.mark.parametrize(("token", "code"), [("wrong", 4401), (None, 4403)])
def test_events_need_read_scope(app: App, token: str | None, code: int) -> None:
    with app.client.websocket_connect(f"{PATH}?token={token or app.write}") as ws:
        assert ws.receive_json()["type"] == "error"
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == code


def _until_closed(ws: Any, seen: list[str]) -> None:
    while True:
        seen.append(ws.receive_json()["type"])


def test_silent_client_gets_pings_then_is_closed() -> None:
    for app in _build(metrics_interval_s=3600.0, ping_interval_s=0.02, timeout_s=0.2):
        with app.client.websocket_connect(f"{PATH}?token={app.read}") as ws:
            _connect(ws)
            seen: list[str] = []
            with pytest.raises(WebSocketDisconnect) as exc:
                _until_closed(ws, seen)
            assert exc.value.code == 4408
            assert set(seen) == {"ping"}


def test_metrics_are_sent_periodically() -> None:
    for app in _build(metrics_interval_s=0.01, ping_interval_s=3600.0, timeout_s=7200.0):
        with app.client.websocket_connect(f"{PATH}?token={app.read}") as ws:
            _connect(ws)
            assert ws.receive_json()["type"] == "metrics"
