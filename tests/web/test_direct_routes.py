"""Direct routes: :class:`DirectRequest` and the folded path of :class:`DirectEntry`.

The entry serves a direct route with the project's metrics, error and body-limit
middlewares folded into one coroutine; every case here runs against it and against the
FastAPI application (the same route behind those middlewares as separate layers), which
must answer alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.errors import BadDataError
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, asgi_entry, create_app
from monitoringserver.web.direct_routes import (
    DirectRequest,
    DirectRoute,
)
from monitoringserver.web.options import LimitsOptions

Messages = list[Message]


def _receiver(messages: Messages) -> Receive:
    queue = list(messages)

    async def receive() -> Message:
        return queue.pop(0)

    return receive


def _request(messages: Messages) -> DirectRequest:
    scope: Scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    return DirectRequest(scope, _receiver(messages))


def _chunk(body: bytes, more: bool = False) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


@pytest.mark.parametrize(
    ("messages", "expect"),
    [
        ([_chunk(b"abc")], b"abc"),
        ([_chunk(b"ab", True), _chunk(b"", True), _chunk(b"c")], b"abc"),
        ([{"type": "http.request"}], b""),
        ([_chunk(b"", True), _chunk(b"x", True), _chunk(b"yz")], b"xyz"),
    ],
    ids=["one", "chunks", "no-body-key", "empty-first"],
)
async def test_body_reads_every_chunk_once(messages: Messages, expect: bytes) -> None:
    request = _request(messages)
    assert await request.body() == expect
    assert await request.body() == expect  # kept: receive is not called again
    assert [chunk async for chunk in request.stream()] == [expect, b""]


async def test_a_disconnect_raises_and_a_consumed_stream_cannot_be_read() -> None:
    request = _request([_chunk(b"a", True), {"type": "http.disconnect"}])
    with pytest.raises(ClientDisconnect):
        await request.body()
    assert await request.is_disconnected()
    streamed = _request([_chunk(b"a")])
    assert [chunk async for chunk in streamed.stream()] == [b"a", b""]
    with pytest.raises(RuntimeError, match="Stream consumed"):
        await streamed.body()


async def test_form_and_json_read_through_the_same_body() -> None:
    form = _request([_chunk(b"a=1&b=2")])
    form.scope["headers"] = [(b"content-type", b"application/x-www-form-urlencoded")]
    assert dict(await form.form()) == {"a": "1", "b": "2"}
    doc = _request([_chunk(b'{"k": ', True), _chunk(b"[1]}")])
    assert await doc.json() == {"k": [1]}


Endpoint = Callable[[Request], Awaitable[Response]]
_ran: list[str] = []


async def _echo(request: Request) -> Response:
    assert isinstance(request, DirectRequest)
    return Response(await request.body(), media_type="text/plain")


async def _stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(parts(), status_code=201)


async def _broken_stream(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        raise BadDataError("cannot stream: broken")

    return StreamingResponse(parts())


class _FailsBeforeStart(Response):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("internal detail")


async def _fails_before_start(request: Request) -> Response:
    return _FailsBeforeStart()


async def _background(request: Request) -> Response:
    return JSONResponse({"ok": True}, background=BackgroundTask(_ran.append, "task"))


async def _bad(request: Request) -> Response:
    raise BadDataError("cannot parse thing: bad")


async def _client(request: Request) -> Response:
    client = request.client
    return JSONResponse({"client": client.host if client else None, "scheme": request.url.scheme})


ROUTES: dict[str, Endpoint] = {
    "/echo": _echo,
    "/stream": _stream,
    "/broken": _broken_stream,
    "/before": _fails_before_start,
    "/background": _background,
    "/bad": _bad,
    "/client": _client,
}


class _App:
    def __init__(self, client: httpx.AsyncClient, registry: CollectorRegistry, kind: str) -> None:
        self.client = client
        self.registry = registry
        self.kind = kind

    def count(self, route: str, code: int) -> float | None:
        return self.registry.get_sample_value(
            "monitoring_http_request_duration_seconds_count",
            {"method": "POST", "route": route, "code": str(code)},
        )


def _application(registry: CollectorRegistry) -> tuple[FastAPI, Database]:
    db = Database(":memory:")
    tokens = TokenStore(db)
    tokens.open()
    comps = WebComponents(
        appender=None,  # type: ignore[arg-type]
        querier=None,  # type: ignore[arg-type]
        tokens=tokens,
        registry=registry,
        limits=LimitsOptions(max_body_bytes=100, max_decompressed_bytes=200),
        auth_enabled=False,
    )
    router = APIRouter()
    for path, endpoint in ROUTES.items():
        router.routes.append(DirectRoute(path, endpoint, methods=["POST"]))
    router.add_api_route("/plain-client", _client, methods=["POST"])  # not a direct route
    return create_app(comps, [router]), db


@pytest.fixture(params=["fastapi", "entry"])
async def app(request: pytest.FixtureRequest) -> AsyncIterator[_App]:
    registry = CollectorRegistry()
    application, db = _application(registry)
    served = asgi_entry(application) if request.param == "entry" else application
    transport = httpx.ASGITransport(app=served, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield _App(client, registry, request.param)
    db.close()


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("path", "content", "status", "expect"),
    [
        ("/echo", b"x" * 100, 200, b"x" * 100),
        ("/echo", b"x" * 101, 413, b"cannot read request body: 101 bytes is over"),
        ("/echo", (b"x" * 60, b"y" * 41), 413, b"cannot read request body: over the limit"),
        ("/echo", (b"x" * 60, b"y" * 40), 200, b"x" * 60 + b"y" * 40),
        ("/stream", b"", 201, b"ab"),
        ("/before", b"", 500, b"cannot handle request: internal error"),
        ("/background", b"", 200, b'{"ok":true}'),
        ("/bad", b"", 400, b"cannot parse thing: bad"),
    ],
    ids=["at-limit", "length-over", "chunked-over", "chunked", "stream", "before", "bg", "bad"],
)
async def test_answers_and_metrics(
    app: _App, path: str, content: bytes | tuple[bytes, ...], status: int, expect: bytes
) -> None:
    body: Any = _chunks(*content) if isinstance(content, tuple) else content
    _ran.clear()
    r = await app.client.post(path, content=body)
    assert r.status_code == status
    assert expect in r.content
    # Behind FastAPI a declared length over the limit is refused before the route is
    # known; the entry knows it first.
    refused_early = app.kind == "fastapi" and isinstance(content, bytes) and status == 413
    assert app.count("other" if refused_early else path, status) == 1.0
    assert _ran == (["task"] if path == "/background" else [])


def _scope(path: str) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": [(b"content-length", b"0")],
        "query_string": b"",
    }


@pytest.mark.parametrize("kind", ["fastapi", "entry"])
@pytest.mark.parametrize(
    ("path", "fail_on", "code", "log"),
    [
        ("/bad", "http.response.start", 400, "unhandled error on /bad"),
        ("/bad", "http.response.body", 400, "unhandled error on /bad"),
        ("/stream", "http.response.body", 201, "unhandled error on /stream"),
        ("/broken", "", 200, "unhandled error on /broken"),
    ],
    ids=["plain-start", "plain-body", "stream-body", "stream-raises"],
)
async def test_an_error_after_the_response_started_is_logged_only(
    kind: str, path: str, fail_on: str, code: int, log: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A send fails, or the streamed body raises, once the response started: nothing more
    is sent, the error is logged and the request counted under the status it started with."""
    registry = CollectorRegistry()
    application, db = _application(registry)
    served = asgi_entry(application) if kind == "entry" else application
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)
        if message["type"] == fail_on:
            raise OSError("connection lost")

    with caplog.at_level(logging.WARNING, logger="monitoringserver.web"):
        if kind == "fastapi" and path == "/bad":
            # Behind FastAPI the catch-all lets a failing send of an error it renders
            # propagate (to the server, which logs it); the entry logs it itself.
            with pytest.raises(OSError, match="connection lost"):
                await served(_scope(path), _receiver([_chunk(b"")]), send)
            log = ""
        else:
            await served(_scope(path), _receiver([_chunk(b"")]), send)
    db.close()
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == code
    assert fail_on in ("", sent[-1]["type"])
    assert log in caplog.text
    count = registry.get_sample_value(
        "monitoring_http_request_duration_seconds_count",
        {"method": "POST", "route": path, "code": str(code)},
    )
    assert count == 1.0


@pytest.mark.parametrize("path", ["/client", "/plain-client"], ids=["direct", "fastapi"])
@pytest.mark.parametrize(
    ("peer", "headers", "expect"),
    [
        ("127.0.0.1", {}, {"client": "127.0.0.1", "scheme": "http"}),
        ("127.0.0.1", {"X-Forwarded-For": "10.1.2.3"}, {"client": "10.1.2.3", "scheme": "http"}),
        ("127.0.0.1", {"X-Forwarded-Proto": "https"}, {"client": "127.0.0.1", "scheme": "https"}),
        (
            "127.0.0.1",
            {"X-Forwarded-For": "10.9.9.9, 10.1.2.3", "X-Forwarded-Proto": "https"},
            {"client": "10.1.2.3", "scheme": "https"},
        ),
        ("10.0.0.7", {"X-Forwarded-For": "10.1.2.3"}, {"client": "10.0.0.7", "scheme": "http"}),
    ],
    ids=["none", "for", "proto", "both", "untrusted-peer"],
)
async def test_proxy_headers_as_uvicorn_applies_them(
    path: str, peer: str, headers: dict[str, str], expect: dict[str, str]
) -> None:
    """The entry built with ``forwarded_allow_ips`` answers as the entry behind uvicorn's
    own ``ProxyHeadersMiddleware`` (what the server ran before)."""
    application, db = _application(CollectorRegistry())
    folded = asgi_entry(application, forwarded_allow_ips="127.0.0.1")
    reference = ProxyHeadersMiddleware(asgi_entry(application), trusted_hosts="127.0.0.1")  # type: ignore[arg-type]
    got = []
    for served in (folded, reference):
        transport = httpx.ASGITransport(app=served, client=(peer, 40000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            got.append((await client.post(path, headers=headers)).json())
    db.close()
    assert got == [expect, expect]


def test_an_app_without_direct_routes_gets_uvicorns_proxy_middleware() -> None:
    db = Database(":memory:")
    tokens = TokenStore(db)
    tokens.open()
    comps = WebComponents(appender=None, querier=None, tokens=tokens, registry=CollectorRegistry())  # type: ignore[arg-type]
    application = create_app(comps)
    db.close()
    entry = asgi_entry(application, forwarded_allow_ips="*")
    assert isinstance(entry, ProxyHeadersMiddleware)
    assert entry.app is application
