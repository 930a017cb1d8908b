"""The seed-003 dashboard WebSocket ``/ws/dashboard``.

Authentication (scope ``monitoring:read``), first that applies: ``?token=<token>``, the
``Authorization: Bearer`` header, the ``ms_session`` cookie, or — when none is given —
a first message ``{"type": "auth", "token": "<token>"}`` (or the bare token) within
``auth_timeout_s``. A missing or invalid credential gets ``{"type": "error", "error":
...}`` and close code 4401; a token without the scope gets close code 4403.

Then the server sends ``{"type": "initial", "data": {"metrics", "history", "logs",
"log_sources"}}``. Each client ``ping`` (the text ``ping`` or ``{"type": "ping"}``) is
answered with ``{"type": "pong"}`` followed by ``{"type": "update", "data": {"metrics",
"history"}, "timestamp"}``. Log lines published on the log bus are pushed as they
arrive as ``{"type": "new_logs", "node_id", "logs", "timestamp"}`` (one per node).
A client that falls behind the bus is dropped with close code 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from monitoringserver.auth.api import Authenticator, Principal, Scope
from monitoringserver.model.logs import LogBatch
from monitoringserver.pipeline.bus import Bus, Subscription, SubscriptionClosed
from monitoringserver.web.routers.dashboard_data import DashboardData, iso
from monitoringserver.web.routers.logs_ws import dashboard_messages
from monitoringserver.web.security import ANONYMOUS

__all__ = [
    "CLOSE_FORBIDDEN",
    "CLOSE_UNAUTHORIZED",
    "DashboardSocket",
    "authenticate_socket",
    "is_ping",
    "send_json",
]

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
_encoder = msgspec.json.Encoder()


def _header_credential(ws: WebSocket) -> str | None:
    token = ws.query_params.get("token")
    if token:
        return token
    scheme, _, value = ws.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    cookie = ws.cookies.get("ms_session")
    if cookie and _same_origin(ws):
        return cookie
    return None


def _same_origin(ws: WebSocket) -> bool:
    """Whether a browser's ``Origin`` names this server (no cross-site socket hijacking
    with the session cookie); clients without ``Origin`` are not browsers."""
    origin = ws.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc.lower() == ws.headers.get("host", "").lower()


async def send_json(ws: WebSocket, message: dict[str, Any]) -> None:
    await ws.send_text(_encoder.encode(message).decode())


async def authenticate_socket(ws: WebSocket, timeout_s: float) -> Principal | None:
    """Authenticate an accepted socket (see the module docstring) for ``monitoring:read``;
    on failure send the error, close (4401/4403) and return ``None``."""
    if not getattr(ws.app.state, "auth_enabled", True):
        return ANONYMOUS
    credential = _header_credential(ws)
    if credential is None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                credential = _parse_auth(await ws.receive_text())
    authenticator: Authenticator = ws.app.state.authenticator
    principal = authenticator.authenticate(credential) if credential else None
    if principal is None:
        await send_json(ws, {"type": "error", "error": "cannot authenticate: invalid token"})
        await ws.close(code=CLOSE_UNAUTHORIZED, reason="unauthorized")
        return None
    if not principal.has(Scope.READ):
        await send_json(
            ws, {"type": "error", "error": "cannot authorize: monitoring:read is required"}
        )
        await ws.close(code=CLOSE_FORBIDDEN, reason="forbidden")
        return None
    return principal


class DashboardSocket:
    """Serves ``/ws/dashboard`` clients; ``clients`` counts the connected ones."""

    def __init__(
        self,
        data: DashboardData,
        log_bus: Bus[LogBatch] | None = None,
        *,
        auth_timeout_s: float = 10.0,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.data = data
        self.log_bus = log_bus
        self.auth_timeout_s = auth_timeout_s
        self._now_ms = now_ms or data.now_ms
        self.clients = 0

    async def _send(self, ws: WebSocket, message: dict[str, Any]) -> None:
        await send_json(ws, message)

    async def __call__(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            if await authenticate_socket(ws, self.auth_timeout_s) is None:
                return
            sub = self.log_bus.subscribe(name="dashboard") if self.log_bus is not None else None
            self.clients += 1
            try:
                await self._serve(ws, sub)
            finally:
                self.clients -= 1
                if sub is not None:
                    sub.close()
        except (WebSocketDisconnect, RuntimeError):
            return

    async def _serve(self, ws: WebSocket, sub: Subscription[LogBatch] | None) -> None:
        send_lock = asyncio.Lock()

        async def send(message: dict[str, Any]) -> None:
            async with send_lock:
                await self._send(ws, message)

        initial = await asyncio.to_thread(self.data.initial, self.data.node_views())
        await send({"type": "initial", "data": initial, "timestamp": iso(self._now_ms())})
        pusher = asyncio.create_task(self._push_logs(ws, sub, send)) if sub else None
        try:
            while True:
                text = await ws.receive_text()
                if is_ping(text):
                    await send({"type": "pong"})
                    update = await asyncio.to_thread(self.data.update, self.data.node_views())
                    await send({"type": "update", "data": update, "timestamp": iso(self._now_ms())})
        finally:
            if pusher is not None:
                pusher.cancel()
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await pusher

    async def _push_logs(
        self,
        ws: WebSocket,
        sub: Subscription[LogBatch],
        send: Callable[[dict[str, Any]], Any],
    ) -> None:
        while True:
            try:
                batch = await sub.get()
            except SubscriptionClosed as exc:
                if sub.closed_reason != "subscription closed":
                    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                        await send({"type": "error", "error": str(exc)})
                        if ws.application_state is WebSocketState.CONNECTED:
                            await ws.close(code=1013, reason="slow consumer")
                return
            for message in dashboard_messages(batch):
                await send(message)


def is_ping(text: str) -> bool:
    if text.strip() == "ping":
        return True
    try:
        msg = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return False
    return isinstance(msg, dict) and msg.get("type") == "ping"


def _parse_auth(text: str) -> str | None:
    """The token of a first message: ``{"type":"auth","token":...}`` or the bare token."""
    text = text.strip()
    if text.startswith("{"):
        try:
            msg = msgspec.json.decode(text)
        except msgspec.DecodeError:
            return None
        token = msg.get("token") if isinstance(msg, dict) else None
        return token if isinstance(token, str) and token else None
    return text or None
