"""Syslog listener over real UDP and TCP sockets on 127.0.0.1 (port 0)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from monitoringserver.errors import BadDataError, OverloadedError
from monitoringserver.ingest.syslog import SyslogOptions, SyslogServer, split_address
from monitoringserver.logs.api import DedupKey, LogAppendResult
from monitoringserver.logs.parser import LogParser
from monitoringserver.model.logs import LogBatch


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[LogBatch, str]] = []
        self.fail = fail

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        if self.fail:
            raise OverloadedError("cannot accept: over the rate limit")
        self.batches.append((LogParser().enrich(batch), source))
        return LogAppendResult(accepted=len(batch))

    def lines(self) -> int:
        return sum(len(b) for b, _ in self.batches)


async def _wait(pred: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred() and loop.time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_udp_and_tcp_both_framings() -> None:
    sink = Sink()
    server = SyslogServer(sink, SyslogOptions(udp="127.0.0.1:0", tcp="127.0.0.1:0"))
    await server.start()
    task = asyncio.create_task(server.run())
    assert server.udp_port
    assert server.tcp_port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(
            b"<11>1 2026-01-10T11:00:00Z web1 nginx 42 - - upstream failed",
            ("127.0.0.1", server.udp_port),
        )
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    m1 = b"<13>Jan 10 11:00:00 db1 postgres[7]: checkpoint"
    m2 = b"<12>1 2026-01-10T11:00:01Z db1 app - - - multi\nline"
    writer.write(m1 + b"\n" + str(len(m2)).encode() + b" " + m2 + b"tail line without newline")
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    await _wait(lambda: sink.lines() >= 4)
    await server.aclose()
    await task
    by = {
        m: (b.server_id[i], b.level[i], b.logger[i])
        for b, _ in sink.batches
        for i, m in enumerate(b.message)
    }
    assert by["upstream failed"] == ("web1", "error", "nginx")
    assert by["checkpoint"] == ("db1", "info", "postgres")
    assert by["multi\nline"] == ("db1", "warning", "app")
    assert "tail line without newline" in by
    assert {src for _, src in sink.batches} == {"127.0.0.1"}
    assert server.stats.received == 4
    assert server.stats.appended == 4


async def test_drops_are_counted() -> None:
    sink = Sink(fail=True)
    server = SyslogServer(
        sink, SyslogOptions(udp=None, tcp="127.0.0.1:0", max_queue_lines=2, max_message_bytes=10)
    )
    await server.start()
    for _ in range(3):
        server.offer("x", b"<13>hello\n")
    server.offer("x", b"\r\n")
    await server.flush()
    assert server.stats.dropped == {"queue_full": 1, "overloaded": 2}
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.tcp_port)
    writer.write(b"999999 x")
    await writer.drain()
    await _wait(lambda: "bad_framing" in server.stats.dropped)
    writer.close()
    await writer.wait_closed()
    await server.aclose()
    assert server.stats.dropped["bad_framing"] == 1


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [("127.0.0.1:514", "127.0.0.1", 514), (":0", "0.0.0.0", 0), ("[::1]:5", "::1", 5)],
)
def test_split_address(text: str, host: str, port: int) -> None:
    assert split_address(text) == (host, port)


def test_bad_address() -> None:
    with pytest.raises(BadDataError):
        split_address("nohost")
