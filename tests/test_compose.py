"""The full composition (``server.compose``): every subsystem answers on one server."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import httpx

from monitoringserver.config import Config
from monitoringserver.server import Server, compose
from tests.test_server import config, stop


async def _running_composed(cfg: Config) -> tuple[Server, asyncio.Task[None]]:
    """A started server with the production wiring (``compose``) applied before start."""
    srv = Server(config=cfg, out=io.StringIO())
    compose(srv)
    await srv.start()
    serve = asyncio.create_task(srv.serve())
    deadline = time.monotonic() + 30
    while not srv.ready:
        assert not serve.done(), serve.exception()
        assert time.monotonic() < deadline, "server not ready"
        await asyncio.sleep(0.01)
    return srv, serve


async def _poll(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> httpx.Response:
    """The first 200 answer with a non-empty result (acknowledged data shows within ~1 s)."""
    deadline = time.monotonic() + 20
    while True:
        r = await client.get(path, params=params)
        data = r.json().get("data")
        result = data.get("result", data.get("logs")) if isinstance(data, dict) else data
        if r.status_code == 200 and result:
            return r
        assert time.monotonic() < deadline, (path, r.status_code, r.text)
        await asyncio.sleep(0.1)


async def test_every_subsystem_is_wired(data_dir: Path) -> None:
    srv, serve = await _running_composed(config(data_dir))
    token = (data_dir / "admin.token").read_text().strip()
    now = int(time.time())
    base = f"http://{srv.http_address}"
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        doc = {"server_id": "w1", "timestamp": now, "metrics": {"cpu_usage": 42.0}}
        assert (await c.post("/api/v1/metrics", json=doc)).status_code == 200
        line = {"server_id": "w1", "level": "error", "message": "disk full on /var"}
        assert (await c.post("/api/v1/logs", json=line)).status_code == 200
        assert (await c.put("/metrics/job/nightly", content=b"backup_ok 1\n")).status_code == 200

        q = await _poll(c, "/api/v1/query", {"query": "cpu_usage"})
        assert q.json()["data"]["result"][0]["value"][1] == "42"
        q = await _poll(c, "/api/v1/query", {"query": 'backup_ok{job="nightly"}'})
        assert q.json()["data"]["result"][0]["value"][1] == "1"
        logs = await _poll(c, "/api/v1/logs", {"server_id": "w1"})
        assert logs.json()["data"]["logs"][0]["message"] == "disk full on /var"
        loki = await c.get("/loki/api/v1/label/server_id/values")
        assert loki.json()["data"] == ["w1"]
        board = (await c.get("/api/dashboard/metrics")).json()
        assert board["nodes"]["w1"]["cpu_usage_percent"] == 42.0  # seed-002 name, aliased
        # the built-in local agent registers the server's own host and reports it
        nodes = await _poll(c, "/api/v1/nodes", {})
        (local,) = nodes.json()["data"]
        assert local["status"] == "online"
        q = await _poll(
            c, "/api/v1/query", {"query": f'cpu_usage_percent{{server_id="{local["node_id"]}"}}'}
        )
        assert 0 <= float(q.json()["data"]["result"][0]["value"][1]) <= 100
        health = (await c.get("/api/v1/health")).json()["components"]
        assert {"storage", "scrape", "forward"} <= set(health)
    async with httpx.AsyncClient(base_url=base) as anonymous:
        assert (await anonymous.get("/api/v1/query", params={"query": "1"})).status_code == 401
        assert (await anonymous.get("/loki/api/v1/labels")).status_code == 401
        page = await anonymous.get("/dashboard")
        assert page.status_code == 200
        assert "uPlot" in page.text or "uplot" in page.text
    await stop(srv, serve)
