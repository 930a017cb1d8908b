"""The seed-003 cluster dashboard: the page, its session, its API and its WebSocket.

* ``GET /dashboard`` (public): the single-page dashboard (``static/dashboard.html``;
  its scripts and styles are public static files under ``/static/``).
* ``POST /api/v1/session`` ``{"token": "<api token>"}``: checks the token and sets it in
  the HttpOnly, SameSite=Strict ``ms_session`` cookie (``Secure`` over HTTPS), which
  ``web/security.py`` accepts like a bearer token; answers ``{"name", "scopes"}``.
  ``GET /api/v1/session`` (read): who the cookie or header belongs to;
  ``DELETE /api/v1/session``: clears the cookie.
* ``GET /api/dashboard/metrics`` (read): ``{"nodes": {node_id: {cpu_usage_percent,
  memory_usage_percent, disk_usage_percent, status, last_seen_ms, last_seen, hostname,
  registered, ...}}, "timestamp"}``.
* ``GET /api/dashboard/history/{node_id}?limit=100`` (read): the last ``limit`` points
  (at most 100) of each node metric; 404 when the node has none.
* ``GET /api/dashboard/stats`` (read): nodes by status, series, samples, uptime.
* WebSocket ``/ws/dashboard``: see :mod:`.dashboard_ws`.
* WebSocket ``/api/v1/monitoring/events`` (seed 001): see :mod:`.dashboard_events`.

``POST /api/dashboard/control-service`` belongs to the nodes router.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from monitoringserver.auth.api import Authenticator, Scope
from monitoringserver.errors import AuthError, BadDataError, NotFoundError
from monitoringserver.logs.api import LogQuerier
from monitoringserver.metrics.api import MetricQuerier
from monitoringserver.model.logs import LogBatch
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.pipeline.bus import Bus
from monitoringserver.web.app import STATIC_DIR
from monitoringserver.web.deps import require
from monitoringserver.web.routers.dashboard_data import DashboardData, DashboardOptions, iso
from monitoringserver.web.routers.dashboard_events import EventHub, EventsSocket
from monitoringserver.web.routers.dashboard_ws import DashboardSocket

__all__ = ["SESSION_COOKIE", "dashboard_router", "dashboard_routes"]

SESSION_COOKIE = "ms_session"
_SESSION_MAX_AGE_S = 12 * 3600


class _StoreLike(Protocol):
    @property
    def querier(self) -> MetricQuerier: ...


class ServerLike(Protocol):
    """What :func:`dashboard_router` reads from the started server."""

    @property
    def store(self) -> _StoreLike | None: ...


def dashboard_router(
    server: ServerLike,
    *,
    nodes: NodeRegistry | None = None,
    log_bus: Bus[LogBatch] | None = None,
    log_querier: LogQuerier | None = None,
    options: DashboardOptions | None = None,
    hub: EventHub | None = None,
) -> APIRouter:
    """The dashboard routes over the started server's metric store; the node registry,
    the log pipeline (bus and querier) and the seed-001 event hub (others publish alert
    events on it) are optional."""
    assert server.store is not None, "dashboard_router needs a started server"
    data = DashboardData(
        server.store.querier, nodes=nodes, logs=log_querier, options=options or DashboardOptions()
    )
    return dashboard_routes(data, log_bus, hub)


def _json(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def dashboard_routes(
    data: DashboardData,
    log_bus: Bus[LogBatch] | None = None,
    hub: EventHub | None = None,
    events: EventsSocket | None = None,
) -> APIRouter:
    """The routes above over ``data`` (tests build it with fakes and short intervals)."""
    router = APIRouter(tags=["dashboard"])
    socket = DashboardSocket(data, log_bus)
    events = events or EventsSocket(data, hub or EventHub(), log_bus)

    def page(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "dashboard.html", headers={"Cache-Control": "no-cache"})

    async def session_post(request: Request) -> Response:
        # JSON only: an HTML form on another site cannot send it (no login CSRF).
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise BadDataError("cannot create session: Content-Type must be application/json")
        try:
            body = msgspec.json.decode(await request.body())
        except msgspec.DecodeError as exc:
            raise BadDataError(f"cannot parse session request: {exc}") from exc
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token.strip():
            raise BadDataError('cannot create session: body must be {"token": "<api token>"}')
        token = token.strip()
        if getattr(request.app.state, "auth_enabled", True):
            authenticator: Authenticator = request.app.state.authenticator
            principal = authenticator.authenticate(token)
            if principal is None:
                raise AuthError("cannot create session: token is not valid")
            who: dict[str, Any] = {"name": principal.name, "scopes": _scopes(principal.scopes)}
        else:
            who = {"name": "anonymous", "scopes": ["admin"]}
        resp = _json({"status": "success", "data": who})
        resp.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=_SESSION_MAX_AGE_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return resp

    def session_get(request: Request) -> Response:
        principal = require(request, Scope.READ)
        return _json(
            {
                "status": "success",
                "data": {"name": principal.name, "scopes": _scopes(principal.scopes)},
            }
        )

    def session_delete(_request: Request) -> Response:
        resp = _json({"status": "success", "data": None})
        resp.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    async def metrics(request: Request) -> Response:
        require(request, Scope.READ)
        nodes = await asyncio.to_thread(data.metrics, data.node_views())
        return _json({"nodes": nodes, "timestamp": iso(data.now_ms())})

    async def history(request: Request) -> Response:
        require(request, Scope.READ)
        node_id = request.path_params["node_id"]
        limit = _limit(request.query_params.get("limit"), data.options.history_limit)
        out = await asyncio.to_thread(data.history, node_id, limit)
        if not out["history"]:
            raise NotFoundError(f"cannot find history of node {node_id!r}: it has no samples")
        return _json(out)

    async def stats(request: Request) -> Response:
        require(request, Scope.READ)
        clients = socket.clients + events.clients
        out = await asyncio.to_thread(data.stats, clients, data.node_views())
        return _json(out)

    router.add_route("/dashboard", page, methods=["GET"], include_in_schema=False)
    router.add_route("/dashboard/", page, methods=["GET"], include_in_schema=False)
    router.add_route("/api/v1/session", session_post, methods=["POST"])
    router.add_route("/api/v1/session", session_get, methods=["GET"])
    router.add_route("/api/v1/session", session_delete, methods=["DELETE"])
    router.add_route("/api/dashboard/metrics", metrics, methods=["GET"])
    router.add_route("/api/dashboard/history/{node_id}", history, methods=["GET"])
    router.add_route("/api/dashboard/stats", stats, methods=["GET"])
    router.add_api_websocket_route("/ws/dashboard", socket)
    router.add_api_websocket_route("/api/v1/monitoring/events", events)
    return router


def _scopes(scopes: frozenset[Scope]) -> list[str]:
    return sorted(s.value for s in scopes)


def _limit(raw: str | None, maximum: int) -> int:
    if raw is None:
        return maximum
    try:
        n = int(raw)
    except ValueError as exc:
        raise BadDataError(f"cannot parse limit {raw!r}: not an integer") from exc
    if n < 1:
        raise BadDataError(f"cannot use limit {n}: it must be at least 1")
    return min(n, maximum)
