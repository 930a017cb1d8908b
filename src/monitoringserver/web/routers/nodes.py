"""Nodes, remote control and the audit log.

* ``GET /api/v1/nodes[?include_stale=true]`` (read): registered nodes; stale ones only
  on request (they leave the live view, their history stays in the store);
* ``GET /api/v1/nodes/{node_id}`` (read);
* ``DELETE /api/v1/nodes/{node_id}`` (admin): forget a node;
* ``POST /api/v1/nodes/{node_id}/control`` (admin) ``{"command": "service", "action":
  "restart", "service_name": "nginx"}`` | ``{"command": "set_interval", "interval":
  "60"|"adaptive"}`` | ``{"command": "report_now"}`` | ``{"command": "get_stats"}``,
  optional ``timeout_s``; answers the agent's outcome (``success``, ``exit_status``,
  ``output`` tail, ``error``);
* ``POST /api/dashboard/control-service`` (admin) seed 003: ``{"worker_id",
  "service_name", "action"}``;
* ``GET /api/v1/audit[?limit=&target=&since_ms=]`` (admin): newest first.

Built by :func:`nodes_router` from the components it serves (``server.py`` passes the
result to ``create_app(..., extra_routers=[...])``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.web.security import require_scope

__all__ = ["ControlRequest", "ControlServiceRequest", "nodes_router"]

_Reader = Annotated[Principal, Depends(require_scope(Scope.READ))]
_Admin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]


class ControlRequest(BaseModel):
    command: str = Field(min_length=1, max_length=32)
    action: str | None = None
    service_name: str | None = Field(default=None, max_length=200)
    interval: str | float | None = None
    timeout_s: float | None = Field(default=None, gt=0, le=600)


class ControlServiceRequest(BaseModel):
    worker_id: str = Field(min_length=1, max_length=200)
    service_name: str = Field(min_length=1, max_length=200)
    action: str = Field(min_length=1, max_length=16)
    timeout_s: float | None = Field(default=None, gt=0, le=600)


def _ok(data: object) -> JSONResponse:
    return JSONResponse({"status": "success", "data": data})


def nodes_router(registry: NodeRegistry, hub: ControlHub, audit: AuditLog) -> APIRouter:
    """The routes above, bound to these components."""
    router = APIRouter(tags=["nodes"])

    @router.get("/api/v1/nodes")
    def list_nodes(_p: _Reader, include_stale: bool = False) -> JSONResponse:
        return _ok([v.to_json() for v in registry.list(include_stale=include_stale)])

    @router.get("/api/v1/nodes/{node_id}")
    def get_node(node_id: str, _p: _Reader) -> JSONResponse:
        return _ok(registry.get(node_id).to_json())

    @router.delete("/api/v1/nodes/{node_id}")
    async def forget_node(node_id: str, principal: _Admin) -> JSONResponse:
        await registry.forget(node_id)
        await audit.record(actor=principal.name, action="node.forget", target=node_id)
        return _ok({"node_id": node_id, "forgotten": True})

    @router.post("/api/v1/nodes/{node_id}/control")
    async def control(node_id: str, body: ControlRequest, principal: _Admin) -> JSONResponse:
        args: dict[str, str] = {}
        if body.action is not None:
            args["action"] = body.action
        if body.service_name is not None:
            args["name"] = body.service_name
        if body.interval is not None:
            args["interval"] = str(body.interval)
        outcome = await hub.dispatch(
            node_id, body.command, args, actor=principal.name, timeout_s=body.timeout_s
        )
        return _ok(outcome.to_json())

    @router.post("/api/dashboard/control-service")
    async def control_service(body: ControlServiceRequest, principal: _Admin) -> JSONResponse:
        outcome = await hub.dispatch(
            body.worker_id,
            "service",
            {"action": body.action, "name": body.service_name},
            actor=principal.name,
            timeout_s=body.timeout_s,
        )
        return JSONResponse(
            {
                "success": outcome.ok,
                "worker_id": body.worker_id,
                "service_name": body.service_name,
                "action": body.action,
                "exit_status": outcome.exit_status,
                "output": outcome.output,
                "error": outcome.error or None,
            }
        )

    @router.get("/api/v1/audit")
    async def audit_log(
        _p: _Admin,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
        target: str | None = None,
        since_ms: int | None = None,
    ) -> JSONResponse:
        entries = await audit.entries(limit=limit, target=target, since_ms=since_ms)
        return _ok([e.to_json() for e in entries])

    return router
