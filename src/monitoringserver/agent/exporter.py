"""Local ``/metrics`` in the Prometheus text format (seed 004), on TCP or a unix socket.

Serves the samples of the agent's latest cycle, so a Prometheus can scrape the agent
directly. A deliberately tiny HTTP/1.0 responder (one request per connection, 8 KiB
request limit, 10 s read timeout) to keep the agent free of web frameworks.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from monitoringserver.agent.metrics import Emitter, MetricDesc, Sample

__all__ = ["render", "serve_exporter"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _HasSamples(Protocol):
    last_samples: Emitter


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else str(int(v))


def render(samples: Iterable[Sample]) -> str:
    """Prometheus text exposition, grouped by metric name with HELP and TYPE."""
    groups: dict[str, tuple[MetricDesc, list[str]]] = {}
    for desc, labels, value in samples:
        rest = ",".join(f'{k}="{_escape(v)}"' for k, v in labels if k != "__name__")
        line = f"{desc.name}{{{rest}}} {_fmt(value)}" if rest else f"{desc.name} {_fmt(value)}"
        groups.setdefault(desc.name, (desc, []))[1].append(line)
    out: list[str] = []
    for name in sorted(groups):
        desc, lines = groups[name]
        help_text = desc.help + (f" Unit: {desc.unit}." if desc.unit else "")
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {desc.type}")
        out.extend(lines)
    return "\n".join(out) + "\n"


def _response(status: str, body: bytes, content_type: str = "text/plain") -> bytes:
    head = (
        f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def _handle(
    agent: _HasSamples, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
            writer.write(_response("405 Method Not Allowed", b"only GET\n"))
        elif parts[1].split(b"?", 1)[0] != b"/metrics":
            writer.write(_response("404 Not Found", b"try /metrics\n"))
        else:
            body = render(agent.last_samples).encode()
            if parts[0] == b"HEAD":
                body = b""
            writer.write(_response("200 OK", body, CONTENT_TYPE))
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve_exporter(
    agent: _HasSamples, listen: str, ready: asyncio.Event | None = None
) -> None:
    """Serve until cancelled. ``listen``: ``HOST:PORT`` or ``unix:/path``."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _handle(agent, r, w)

    if listen.startswith("unix:"):
        path = Path(listen[5:])
        path.unlink(missing_ok=True)  # noqa: ASYNC240 (once, at start)
        server = await asyncio.start_unix_server(handler, path=str(path), limit=8192)
    else:
        host, _, port = listen.rpartition(":")
        server = await asyncio.start_server(handler, host or "127.0.0.1", int(port), limit=8192)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()
