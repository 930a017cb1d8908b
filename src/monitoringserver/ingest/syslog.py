"""Optional syslog listener: RFC 5424 and RFC 3164 messages over UDP and TCP.

TCP accepts both RFC 6587 framings: octet counting (``<len> <message>``) and
newline-delimited. Messages are queued (bounded) and handed to the ``LogAppender`` in
batches every ``batch_interval_s`` or ``batch_lines``, one batch per sending address,
as raw lines (``level == ""``): the server's parser recognises the syslog header (host
→ ``server_id``, severity → ``level``, APP-NAME → ``logger``). A full queue, a
source over its rate limit or a failing store drops messages and counts them (syslog
has no way to push back).

Loop affinity: one event loop; ``start`` binds, ``run`` flushes, ``aclose`` stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

import numpy as np

from monitoringserver.errors import BadDataError, MonitoringError
from monitoringserver.logs.api import LogAppender
from monitoringserver.model.logs import LogBatch

__all__ = ["SyslogOptions", "SyslogServer", "split_address"]

log = logging.getLogger(__name__)


def split_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise BadDataError(f"cannot parse listen address {text!r}: expected host:port")
    return host.strip("[]") or "0.0.0.0", int(port)


@dataclass(frozen=True, slots=True)
class SyslogOptions:
    """``udp``/``tcp``: ``host:port`` to listen on (port 0 = any free port; None = off).
    ``max_message_bytes``: longest TCP line or frame accepted (the parser truncates lines
    over its own limit with a marker)."""

    #: The listener is optional: off unless ``[syslog] enabled = true``.
    enabled: bool = False
    udp: str | None = "127.0.0.1:5514"
    tcp: str | None = "127.0.0.1:5514"
    max_message_bytes: int = 65_536
    batch_lines: int = 5_000
    batch_interval_s: float = 0.05
    max_queue_lines: int = 200_000
    max_connections: int = 1_000
    idle_timeout_s: float = 300.0


@dataclass(slots=True)
class SyslogStats:
    received: int = 0
    appended: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: SyslogServer) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.server.offer(str(addr[0]), data)


class SyslogServer:
    def __init__(
        self,
        appender: LogAppender,
        options: SyslogOptions | None = None,
    ) -> None:
        self._appender = appender
        self.options = options or SyslogOptions()
        self.stats = SyslogStats()
        self._queue: dict[str, list[bytes]] = {}
        self._queued = 0
        self._wake = asyncio.Event()
        self._closing = False
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        self.udp_port: int | None = None
        self.tcp_port: int | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        opt = self.options
        if opt.udp:
            host, port = split_address(opt.udp)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(host, port)
            )
            self._udp = transport
            self.udp_port = transport.get_extra_info("sockname")[1]
        if opt.tcp:
            host, port = split_address(opt.tcp)
            self._tcp = await asyncio.start_server(self._accept, host, port)
            self.tcp_port = self._tcp.sockets[0].getsockname()[1]

    def offer(self, source: str, message: bytes) -> None:
        """Queue one message (called on the loop)."""
        message = message.rstrip(b"\r\n\x00")
        if not message:
            return
        self.stats.received += 1
        if self._queued >= self.options.max_queue_lines:
            self.stats.drop("queue_full")
            return
        self._queue.setdefault(source, []).append(message)
        self._queued += 1
        if self._queued >= self.options.batch_lines:
            self._wake.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._conns) >= self.options.max_connections or task is None:
            self.stats.drop("too_many_connections")
            writer.close()
            return
        self._conns.add(task)
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if peer else "tcp"
        try:
            await self._read_stream(reader, source)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError, BadDataError) as exc:
            if not isinstance(exc, asyncio.IncompleteReadError):
                self.stats.drop("bad_framing" if isinstance(exc, BadDataError) else "connection")
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_stream(self, reader: asyncio.StreamReader, source: str) -> None:
        limit = self.options.max_message_bytes
        timeout = self.options.idle_timeout_s
        while True:
            async with asyncio.timeout(timeout):
                first = await reader.read(1)
            if not first:
                return
            if first.isdigit():
                async with asyncio.timeout(timeout):
                    digits = first + await reader.readuntil(b" ")
                size = int(digits[:-1])
                if size > limit * 4:
                    raise BadDataError(f"cannot read syslog frame: {size} bytes is over the limit")
                async with asyncio.timeout(timeout):
                    self.offer(source, await reader.readexactly(size))
            else:
                async with asyncio.timeout(timeout):
                    try:
                        rest = await reader.readuntil(b"\n")
                    except asyncio.LimitOverrunError as exc:
                        raise BadDataError("cannot read syslog line: too long") from exc
                    except asyncio.IncompleteReadError as exc:
                        rest = exc.partial
                self.offer(source, first + rest)
                if not rest.endswith(b"\n"):
                    return

    async def flush(self) -> int:
        """Hand everything queued to the appender now; return lines appended."""
        queue, self._queue = self._queue, {}
        self._queued = 0
        total = 0
        for source, messages in queue.items():
            n = len(messages)
            batch = LogBatch(
                np.zeros(n, dtype=np.int64),
                [""] * n,
                [""] * n,
                [""] * n,
                ["syslog"] * n,
                [m.decode("utf-8", "replace") for m in messages],
                [{} for _ in range(n)],
            )
            try:
                result = await self._appender.append(batch, source=source)
            except MonitoringError as exc:
                self.stats.drop(exc.error_type, n)
                continue
            self.stats.appended += result.accepted
            total += result.accepted
        return total

    async def run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.options.batch_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("cannot hand syslog messages to the log store")

    async def aclose(self) -> None:
        self._closing = True
        self._wake.set()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
        for task in list(self._conns):
            task.cancel()
        for task in list(self._conns):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tcp is not None:
            await self._tcp.wait_closed()
        await self.flush()
