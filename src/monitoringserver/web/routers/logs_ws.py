"""WebSocket helpers of the log routers: live delivery from the bus, and line JSON.

``run_tail`` forwards bus batches to one client until it leaves; the bus drops a client
that falls behind (``{"error": ...}``, close code 1013), so ingest never waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable
from typing import cast

import msgspec
from starlette.requests import Request
from starlette.websockets import WebSocket, WebSocketDisconnect

from monitoringserver.auth.api import Scope
from monitoringserver.errors import MonitoringError
from monitoringserver.model.logs import LogBatch
from monitoringserver.pipeline.bus import Subscription, SubscriptionClosed
from monitoringserver.web.deps import require

__all__ = ["Render", "authorize_websocket", "batch_to_json", "dashboard_messages", "run_tail"]

_encoder = msgspec.json.Encoder()


def _iso(ms: int) -> str:
    return (
        dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def batch_to_json(batch: LogBatch) -> list[dict[str, object]]:
    """Lines as seed-002/003 JSON objects (``type`` repeats ``level``)."""
    return [
        {
            "timestamp": _iso(t),
            "ts_ms": t,
            "server_id": batch.server_id[i],
            "level": batch.level[i],
            "type": batch.level[i],
            "logger": batch.logger[i],
            "source": batch.source[i],
            "message": batch.message[i],
            "attrs": batch.attrs[i],
        }
        for i, t in enumerate(batch.ts_ms.tolist())
    ]


Render = Callable[[LogBatch], list[dict[str, object]]]


async def run_tail(
    websocket: WebSocket,
    sub: Subscription[LogBatch],
    keep: Callable[[LogBatch], LogBatch],
    render: Render,
) -> None:
    """Forward batches of ``sub`` (subscribed before the socket was accepted, so nothing
    published after the accept is missed) that ``keep`` retains, as the messages
    ``render`` builds, until the client leaves. A slow client is dropped by the bus: it
    receives ``{"error": "<why>"}`` and the socket closes with 1013 (try again later)."""
    leave = asyncio.Event()

    async def watch_client() -> None:
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        leave.set()
        sub.close()

    watcher = asyncio.create_task(watch_client())
    try:
        while True:
            try:
                batch = await sub.get()
            except SubscriptionClosed as exc:
                if not leave.is_set() and sub.closed_reason != "subscription closed":
                    with contextlib.suppress(WebSocketDisconnect, RuntimeError):
                        await websocket.send_text(_encoder.encode({"error": str(exc)}).decode())
                        await websocket.close(code=1013, reason="slow consumer")
                return
            kept = keep(batch)
            if len(kept):
                for message in render(kept):
                    await websocket.send_text(_encoder.encode(message).decode())
    except (WebSocketDisconnect, RuntimeError):
        return
    finally:
        sub.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def authorize_websocket(websocket: WebSocket, scope: Scope) -> bool:
    """Authenticate before accepting; on failure close with 1008 and return False."""
    try:
        require(cast(Request, websocket), scope)
    except MonitoringError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return False
    return True


def dashboard_messages(batch: LogBatch) -> list[dict[str, object]]:
    """Seed 003 ``new_logs`` events, one per node."""
    by_node: dict[str, list[int]] = {}
    for i, node in enumerate(batch.server_id):
        by_node.setdefault(node, []).append(i)
    now = _iso(int(time.time() * 1000))
    out: list[dict[str, object]] = []
    for node, idx in by_node.items():
        logs = batch_to_json(batch.take(idx))
        for line in logs:
            line["logger_name"] = line["logger"]
            line["level"] = str(line["level"]).upper()
        out.append({"type": "new_logs", "node_id": node, "logs": logs, "timestamp": now})
    return out
