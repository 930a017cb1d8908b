"""Seed 001 event stream: WebSocket ``/api/v1/monitoring/events`` (scope ``monitoring:read``).

Authentication as for ``/ws/dashboard`` (``?token=``, bearer header, ``ms_session`` cookie
or a first ``{"type": "auth", "token"}`` message; close 4401/4403 on failure).

Every message is ``{"type", "data", "timestamp"}`` (RFC 3339 UTC):

* ``system`` ``{"message": "connected"}`` first;
* ``metrics`` ``{"nodes": {...}}`` (the shape of ``GET /api/dashboard/metrics``) right
  after connecting and then every ``metrics_interval_s`` (30 s);
* ``logs`` ``{"node_id", "logs": [...]}`` as lines reach the log bus;
* any type published on the :class:`EventHub` (``alert``, ``storage``, ...) as published;
* ``ping`` ``{}`` every ``ping_interval_s`` (30 s). The client answers with anything
  (``pong``, ``{"type": "pong"}``); a client silent for ``timeout_s`` (60 s) is closed with
  code 4408. A client ``ping`` gets ``{"type": "pong"}``.

A client that falls behind a bus is dropped with close code 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from monitoringserver.model.logs import LogBatch
from monitoringserver.pipeline.bus import Bus, Subscription, SubscriptionClosed
from monitoringserver.web.routers.dashboard_data import DashboardData, iso
from monitoringserver.web.routers.dashboard_ws import authenticate_socket, is_ping, send_json
from monitoringserver.web.routers.logs_ws import dashboard_messages

__all__ = ["CLOSE_TIMEOUT", "EventHub", "EventsSocket"]

CLOSE_TIMEOUT = 4408
Send = Callable[[dict[str, Any]], Awaitable[None]]


class EventHub:
    """Fan-out of typed events to every ``/api/v1/monitoring/events`` client.

    Loop-affine (the server's loop); :meth:`publish` never blocks: a client whose queue
    of ``queue_size`` events is full is dropped."""

    def __init__(self, *, max_clients: int = 1000, queue_size: int = 256) -> None:
        self.bus: Bus[dict[str, Any]] = Bus(max_subscribers=max_clients, queue_size=queue_size)

    def publish(self, event_type: str, data: Any, *, now_ms: int | None = None) -> int:
        """Send ``{"type": event_type, "data": data, "timestamp"}``; returns the receivers."""
        ts = now_ms if now_ms is not None else int(time.time() * 1000)
        return self.bus.publish({"type": event_type, "data": data, "timestamp": iso(ts)})


class EventsSocket:
    """Serves ``/api/v1/monitoring/events``. Intervals in seconds."""

    def __init__(
        self,
        data: DashboardData,
        hub: EventHub,
        log_bus: Bus[LogBatch] | None = None,
        *,
        ping_interval_s: float = 30.0,
        timeout_s: float = 60.0,
        metrics_interval_s: float = 30.0,
        auth_timeout_s: float = 10.0,
    ) -> None:
        self.data = data
        self.hub = hub
        self.log_bus = log_bus
        self.ping_interval_s = ping_interval_s
        self.timeout_s = timeout_s
        self.metrics_interval_s = metrics_interval_s
        self.auth_timeout_s = auth_timeout_s
        self.clients = 0

    def _event(self, event_type: str, data: Any) -> dict[str, Any]:
        return {"type": event_type, "data": data, "timestamp": iso(self.data.now_ms())}

    async def __call__(self, ws: WebSocket) -> None:
        await ws.accept()
        try:
            if await authenticate_socket(ws, self.auth_timeout_s) is None:
                return
            events = self.hub.bus.subscribe(name="events")
            logs = self.log_bus.subscribe(name="events-logs") if self.log_bus else None
            self.clients += 1
            try:
                await self._serve(ws, events, logs)
            finally:
                self.clients -= 1
                events.close()
                if logs is not None:
                    logs.close()
        except (WebSocketDisconnect, RuntimeError):
            return

    async def _serve(
        self,
        ws: WebSocket,
        events: Subscription[dict[str, Any]],
        logs: Subscription[LogBatch] | None,
    ) -> None:
        lock = asyncio.Lock()
        loop = asyncio.get_running_loop()
        last_heard = [loop.time()]

        async def send(message: dict[str, Any]) -> None:
            async with lock:
                await send_json(ws, message)

        await send(self._event("system", {"message": "connected"}))
        jobs = [
            self._receive(ws, send, last_heard),
            self._keepalive(ws, send, last_heard),
            self._metrics(send),
            self._forward(ws, send, events, lambda e: [e]),
        ]
        if logs is not None:
            jobs.append(self._forward(ws, send, logs, self._log_events))
        tasks = [asyncio.create_task(job) for job in jobs]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                    await task

    def _log_events(self, batch: LogBatch) -> list[dict[str, Any]]:
        return [
            self._event("logs", {"node_id": m["node_id"], "logs": m["logs"]})
            for m in dashboard_messages(batch)
        ]

    async def _receive(self, ws: WebSocket, send: Send, last_heard: list[float]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            text = await ws.receive_text()
            last_heard[0] = loop.time()
            if is_ping(text):
                await send({"type": "pong", "data": {}, "timestamp": iso(self.data.now_ms())})

    async def _keepalive(self, ws: WebSocket, send: Send, last_heard: list[float]) -> None:
        loop = asyncio.get_running_loop()
        next_ping = loop.time() + self.ping_interval_s
        while True:
            await asyncio.sleep(
                max(0.0, min(next_ping, last_heard[0] + self.timeout_s) - loop.time())
            )
            now = loop.time()
            if now >= last_heard[0] + self.timeout_s:
                await ws.close(code=CLOSE_TIMEOUT, reason="no answer to ping")
                return
            if now >= next_ping:
                await send(self._event("ping", {}))
                next_ping = now + self.ping_interval_s

    async def _metrics(self, send: Send) -> None:
        while True:
            views = self.data.node_views()
            nodes = await asyncio.to_thread(self.data.metrics, views)
            await send(self._event("metrics", {"nodes": nodes}))
            await asyncio.sleep(self.metrics_interval_s)

    async def _forward(
        self,
        ws: WebSocket,
        send: Send,
        sub: Subscription[Any],
        render: Callable[[Any], list[dict[str, Any]]],
    ) -> None:
        while True:
            try:
                item = await sub.get()
            except SubscriptionClosed as exc:
                if sub.closed_reason != "subscription closed":
                    await send(self._event("error", {"error": str(exc)}))
                    await ws.close(code=1013, reason="slow consumer")
                return
            for message in render(item):
                await send(message)
