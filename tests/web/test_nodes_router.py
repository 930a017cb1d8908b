"""web/routers/nodes.py: nodes, control, seed-003 control-service, audit, scopes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import (
    AuthError,
    BadDataError,
    ForbiddenError,
    MonitoringError,
    NotFoundError,
)
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import CommandOutcome, NodeInfo
from monitoringserver.storage.db import Database
from monitoringserver.web.routers.nodes import nodes_router

_STATUS = {AuthError: 401, ForbiddenError: 403, NotFoundError: 404, BadDataError: 400}


class Tokens:
    def authenticate(self, credential: str) -> Principal | None:
        return {
            "admin": Principal("root", frozenset({Scope.ADMIN})),
            "reader": Principal("viewer", frozenset({Scope.READ})),
        }.get(credential)


@dataclass
class H:
    client: httpx.AsyncClient
    registry: NodeRegistry
    hub: ControlHub


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[H]:
    db = Database(tmp_path / "s.duckdb")
    registry, audit = NodeRegistry(db), AuditLog(db)
    hub = ControlHub(audit, default_timeout_s=5)
    app = FastAPI()
    app.state.authenticator = Tokens()
    app.state.auth_enabled = True

    @app.exception_handler(MonitoringError)
    async def handle(_r: Request, exc: MonitoringError) -> JSONResponse:
        code = next((c for t, c in _STATUS.items() if isinstance(exc, t)), 503)
        return JSONResponse({"status": "error", "error": str(exc)}, status_code=code)

    app.include_router(nodes_router(registry, hub, audit))
    await registry.register("n1", NodeInfo(hostname="host-1", cpu_count=8))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield H(client, registry, hub)
    db.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def fake_agent(hub: ControlHub, node: str, ok: bool = True) -> None:
    sub = hub.subscribe(node)
    cmd = await sub.get()
    assert cmd is not None
    hub.resolve(
        CommandOutcome(cmd.command_id, node, ok=ok, exit_status=0 if ok else 5, output=cmd.kind)
    )


@pytest.mark.parametrize(
    ("method", "path", "token", "status"),
    [
        ("GET", "/api/v1/nodes", "", 401),
        ("GET", "/api/v1/nodes", "reader", 200),
        ("GET", "/api/v1/nodes/n1", "reader", 200),
        ("GET", "/api/v1/nodes/zz", "reader", 404),
        ("DELETE", "/api/v1/nodes/n1", "reader", 403),
        ("GET", "/api/v1/audit", "reader", 403),
        ("POST", "/api/v1/nodes/n1/control", "reader", 403),
    ],
)
async def test_scopes(h: H, method: str, path: str, token: str, status: int) -> None:
    headers = auth(token) if token else {}
    resp = await h.client.request(method, path, headers=headers, json={"command": "report_now"})
    assert resp.status_code == status


async def test_list_get_delete(h: H) -> None:
    listed = (await h.client.get("/api/v1/nodes", headers=auth("reader"))).json()["data"]
    assert [(n["node_id"], n["status"], n["cpu_count"]) for n in listed] == [("n1", "online", 8)]
    resp = await h.client.delete("/api/v1/nodes/n1", headers=auth("admin"))
    assert resp.json()["data"] == {"node_id": "n1", "forgotten": True}
    assert (await h.client.get("/api/v1/nodes", headers=auth("reader"))).json()["data"] == []
    audit = (await h.client.get("/api/v1/audit", headers=auth("admin"))).json()["data"]
    assert [(a["action"], a["actor"], a["target"]) for a in audit] == [
        ("node.forget", "root", "n1")
    ]


async def test_control_command(h: H) -> None:
    agent = asyncio.ensure_future(fake_agent(h.hub, "n1"))
    async with asyncio.timeout(10):
        while not h.hub.connected("n1"):
            await asyncio.sleep(0.01)
    resp = await h.client.post(
        "/api/v1/nodes/n1/control",
        headers=auth("admin"),
        json={"command": "set_interval", "interval": 120},
    )
    await agent
    assert resp.status_code == 200
    assert resp.json()["data"]["success"] is True
    assert resp.json()["data"]["output"] == "set_interval"
    audit = (await h.client.get("/api/v1/audit?target=n1", headers=auth("admin"))).json()
    entry = audit["data"][0]
    assert (entry["action"], entry["status"], entry["details"]["interval"]) == (
        "control.set_interval",
        "ok",
        "120",
    )


async def test_seed003_control_service(h: H) -> None:
    agent = asyncio.ensure_future(fake_agent(h.hub, "n1", ok=False))
    async with asyncio.timeout(10):
        while not h.hub.connected("n1"):
            await asyncio.sleep(0.01)
    resp = await h.client.post(
        "/api/dashboard/control-service",
        headers=auth("admin"),
        json={"worker_id": "n1", "service_name": "my_service", "action": "restart"},
    )
    await agent
    body = resp.json()
    assert body["success"] is False
    assert (body["worker_id"], body["service_name"], body["exit_status"]) == ("n1", "my_service", 5)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"worker_id": "n1", "service_name": "x", "action": "explode"}, 400),
        ({"worker_id": "gone", "service_name": "x", "action": "stop"}, 404),
        ({"worker_id": "n1", "service_name": "x"}, 422),
    ],
)
async def test_seed003_control_service_errors(h: H, body: dict[str, str], status: int) -> None:
    resp = await h.client.post("/api/dashboard/control-service", headers=auth("admin"), json=body)
    assert resp.status_code == status
