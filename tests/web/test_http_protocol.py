"""HttpProtocol: uvicorn's httptools protocol that passes a one-piece body uncopied.

A real uvicorn server on 127.0.0.1 (port 0) runs an application that echoes what it
received; the bodies must arrive whole and in order however they are framed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send

from monitoringserver.web.http_protocol import HttpProtocol


async def _echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers ``{"sha256", "size", "types"}`` of the request body it received."""
    assert scope["type"] == "http"
    if scope["path"] == "/early":  # answers before reading the body
        await _answer(send, {"sha256": "", "size": -1, "types": []})
        return
    parts: list[bytes] = []
    types: list[str] = []
    while True:
        message: Message = await receive()
        body = message.get("body", b"")
        types.append(type(body).__name__)
        parts.append(body)
        if not message.get("more_body", False):
            break
    body = b"".join(parts)
    digest = hashlib.sha256(body).hexdigest()
    await _answer(send, {"sha256": digest, "size": len(body), "types": sorted(set(types))})


async def _answer(send: Send, doc: dict[str, object]) -> None:
    answer = json.dumps(doc).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(answer))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        _echo, http=HttpProtocol, lifespan="off", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(10):
            while not server.started:
                await asyncio.sleep(0.01)
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _exchange(port: int, raw: bytes, answers: int) -> list[dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        out = []
        for _ in range(answers):
            status = await reader.readline()
            assert b" 200 " in status, status
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            out.append(json.loads(await reader.readexactly(length)))
        return out
    finally:
        writer.close()
        await writer.wait_closed()


def _post(body: bytes, path: bytes = b"/x") -> bytes:
    head = b"POST %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (path, len(body))
    return head + body


def _chunked(*parts: bytes) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return b"POST /x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + framed


def _expect(body: bytes) -> tuple[str, int]:
    return hashlib.sha256(body).hexdigest(), len(body)


@pytest.mark.parametrize(
    "parts",
    [(b"",), (os.urandom(13_000),), (os.urandom(300_000),)],
    ids=["empty", "13k", "300k-over-high-water"],
)
async def test_a_content_length_body_arrives_whole(port: int, parts: tuple[bytes, ...]) -> None:
    body = b"".join(parts)
    [answer] = await _exchange(port, _post(body), 1)
    assert (answer["sha256"], answer["size"]) == _expect(body)
    assert answer["types"] == ["bytes"]


@pytest.mark.parametrize(
    "parts",
    [(b"ab", b"cd", b"ef"), (os.urandom(5000), b"x", os.urandom(70_000), b"")],
    ids=["small", "mixed"],
)
async def test_a_chunked_body_is_gathered_in_order(port: int, parts: tuple[bytes, ...]) -> None:
    body = b"".join(parts)
    [answer] = await _exchange(port, _chunked(*[p for p in parts if p]), 1)
    assert (answer["sha256"], answer["size"]) == _expect(body)


async def test_pipelined_requests_get_their_own_bodies(port: int) -> None:
    bodies = [os.urandom(100), b"", os.urandom(20_000), b"second-to-last", os.urandom(9)]
    raw = b"".join(_post(b) for b in bodies[:2]) + _chunked(bodies[2]) + _post(bodies[3])
    raw += _post(bodies[4])
    answers = await _exchange(port, raw, len(bodies))
    assert [(a["sha256"], a["size"]) for a in answers] == [_expect(b) for b in bodies]


async def test_a_body_after_the_response_is_dropped_and_the_next_request_served(
    port: int,
) -> None:
    late = os.urandom(200_000)
    follow = os.urandom(1000)
    answers = await _exchange(port, _post(late, b"/early") + _post(follow), 2)
    assert answers[0]["size"] == -1
    assert (answers[1]["sha256"], answers[1]["size"]) == _expect(follow)
