"""``POST /api/v1/admin/tsdb/flush``: auth, readiness, and a real head flush."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from monitoringserver.backends.remote_write_out import encode_write_request
from monitoringserver.config import AgentOptions
from monitoringserver.model.labels import make_labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.web.routers.admin_storage import FLUSH_PATH, create_admin_storage_router
from tests.test_compose import _running_composed
from tests.test_server import config, stop
from tests.web.conftest import Web, bearer, build


class _Flush:
    """The flush the router calls (counts calls) and the app's readiness."""

    def __init__(self) -> None:
        self.calls = 0
        self.ready = True

    async def __call__(self) -> int:
        self.calls += 1
        return 42


@pytest.fixture
async def app() -> AsyncIterator[tuple[_Flush, Web]]:
    flush = _Flush()
    async for web in build(routers=[create_admin_storage_router(flush)], ready=lambda: flush.ready):
        yield flush, web


@pytest.mark.parametrize(
    ("scope", "status", "error_type"),
    [
        (None, 401, "unauthorized"),
        ("monitoring:write", 403, "forbidden"),
        ("monitoring:read", 403, "forbidden"),
        ("admin", 200, None),
    ],
)
async def test_flush_needs_admin(
    app: tuple[_Flush, Web], scope: str | None, status: int, error_type: str | None
) -> None:
    state, web = app
    by_scope = {"admin": web.admin, "monitoring:read": web.read, "monitoring:write": web.write}
    r = await web.client.post(FLUSH_PATH, headers=by_scope[scope] if scope else {})
    assert r.status_code == status
    if error_type is None:
        assert r.json() == {"status": "success", "data": {"flushed_samples": 42}}
        assert state.calls == 1
    else:
        assert r.json()["errorType"] == error_type
        assert state.calls == 0


async def test_flush_is_unavailable_while_not_ready(app: tuple[_Flush, Web]) -> None:
    state, web = app
    state.ready = False
    r = await web.client.post(FLUSH_PATH, headers=web.admin)
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "5"
    body = r.json()
    assert body["status"] == "error"
    assert body["errorType"] == "unavailable"
    assert body["error"].startswith("cannot flush metric head: ")
    assert state.calls == 0
    get = await web.client.get(FLUSH_PATH, headers=web.admin)
    assert get.status_code == 405


async def _storage(c: httpx.AsyncClient) -> dict[str, object]:
    r = await c.get("/api/v1/status/storage")
    assert r.status_code == 200
    data: dict[str, object] = r.json()["data"]
    return data


async def test_flush_moves_remote_write_and_json_samples_into_parts(data_dir: Path) -> None:
    # no local agent: the only samples are the ones this test writes
    cfg = dataclasses.replace(config(data_dir), agent=AgentOptions(local=False))
    srv, serve = await _running_composed(cfg)
    token = (data_dir / "admin.token").read_text().strip()
    now_ms = int(time.time() * 1000) // 1000 * 1000
    rows = [
        (
            make_labels({"__name__": "rw_up", "job": "j", "instance": f"i{i}"}),
            now_ms - k * 10_000,
            k,
        )
        for i in range(3)
        for k in range(5)
    ]
    body = encode_write_request(SampleBatch.from_rows((lab, t, float(v)) for lab, t, v in rows))
    rw_headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    base = f"http://{srv.http_address}"
    async with httpx.AsyncClient(base_url=base, headers=bearer(token)) as c:
        writer = (
            await c.post("/api/v1/admin/tokens", json={"name": "w", "scopes": ["monitoring:write"]})
        ).json()["data"]["token"]
        assert (await c.post(FLUSH_PATH, headers=bearer(writer))).status_code == 403
        assert (await c.post("/api/v1/write", content=body, headers=rw_headers)).status_code == 204
        doc = {"server_id": "w1", "timestamp": now_ms, "metrics": {"cpu_usage": 42.0}}
        assert (await c.post("/api/v1/metrics", json=doc)).status_code == 200

        r = await c.post(FLUSH_PATH)
        assert r.status_code == 200
        # every acknowledged sample is flushed: queued ones are committed first
        assert r.json() == {"status": "success", "data": {"flushed_samples": len(rows) + 1}}
        stats = await _storage(c)
        assert stats["head_samples"] == 0
        raw = stats["resolutions"]["raw"]  # type: ignore[index]
        assert raw["samples"] == len(rows) + 1
        assert raw["files"] > 0
        assert raw["bytes"] > 0
        assert any((data_dir / "metrics").rglob("*.parquet"))

        again = await c.post(FLUSH_PATH)
        assert again.json()["data"]["flushed_samples"] == 0
        q = await c.get(
            "/api/v1/query_range",
            params={
                "query": 'rw_up{instance="i1"}',
                "start": str(now_ms / 1000 - 40),
                "end": str(now_ms / 1000),
                "step": "10",
            },
        )
        (series,) = q.json()["data"]["result"]
        assert [float(v) for _t, v in series["values"]] == [4.0, 3.0, 2.0, 1.0, 0.0]
        q = await c.get("/api/v1/query", params={"query": "cpu_usage", "time": str(now_ms / 1000)})
        assert q.json()["data"]["result"][0]["value"][1] == "42"
    await stop(srv, serve)
