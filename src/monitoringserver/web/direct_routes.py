"""Fixed-path routes dispatched by one dict lookup, ahead of FastAPI's router.

FastAPI resolves a request by scanning every included router's routes and then solving
the route's dependencies; for a hot, latency-bound endpoint (``/api/v1/query_range``
answers in about a millisecond) that costs a noticeable share. A :class:`DirectRoute` is a
plain Starlette route whose endpoint authenticates the caller itself and reports failures
only by raising :mod:`monitoringserver.errors` exceptions. ``create_app`` collects the
direct routes of the routers it includes and installs :class:`DirectRoutesMiddleware`
inside the request-body limit, metrics and error middlewares, so such a request skips
only the routing scan and dependency solving.

The routes stay in their router as well: an application built without the middleware
(tests that include the router on a bare FastAPI app) serves them through normal routing,
and a request the middleware does not take (another method, a trailing slash) falls
through to FastAPI, which answers exactly as before (405, redirect, 404).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from monitoringserver.web.errors import (
    body_headers,
    limited_receive,
    log_after_start,
    response_for,
    too_large,
    unhandled_response,
)
from monitoringserver.web.selfmetrics import HttpMetrics

__all__ = [
    "DirectEntry",
    "DirectRequest",
    "DirectRoute",
    "DirectRoutesMiddleware",
    "direct_routes",
    "proxy_headers",
]

#: A direct endpoint: takes the request, returns the whole response.
Endpoint = Callable[[Request], Awaitable[Response]]


class DirectRoute(Route):
    """A fixed-path route (no path parameters) served by :class:`DirectRoutesMiddleware`.

    ``endpoint`` must check the caller's scope itself (no router dependencies apply) and
    raise only project exceptions; ``methods`` gains ``HEAD`` with ``GET``, as Starlette does.
    """

    def __init__(self, path: str, endpoint: Endpoint, *, methods: Iterable[str]) -> None:
        super().__init__(path, endpoint, methods=list(methods), include_in_schema=False)
        if self.param_convertors:
            raise ValueError(f"cannot add direct route {path!r}: path parameters are not allowed")
        self.direct_endpoint = endpoint


class DirectRequest(Request):
    """The request a direct endpoint gets: a Starlette :class:`Request` whose
    :meth:`body` reads ``receive`` in a plain loop (Starlette's goes through an async
    generator, about 3 µs of a remote-write request's event-loop time). Same contract:
    the body is read once and kept, a disconnect raises ``ClientDisconnect``, and
    ``stream()`` after ``body()`` yields the kept body."""

    async def body(self) -> bytes:
        if hasattr(self, "_body"):
            return self._body
        if self._stream_consumed:
            raise RuntimeError("Stream consumed")
        chunks: list[bytes] = []
        while True:
            message = await self._receive()
            kind = message["type"]
            if kind == "http.request":
                chunk: bytes = message.get("body", b"")
                if chunk:
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            elif kind == "http.disconnect":
                self._is_disconnected = True
                raise ClientDisconnect()
        self._stream_consumed = True
        self._body = b"".join(chunks)  # one chunk: that object itself, no copy
        return self._body


def direct_routes(routes: Iterable[object]) -> dict[str, DirectRoute]:
    """The :class:`DirectRoute` objects among ``routes``, by path (the first one wins)."""
    table: dict[str, DirectRoute] = {}
    for route in routes:
        if isinstance(route, DirectRoute):
            table.setdefault(route.path, route)
    return table


def proxy_headers(app: ASGIApp, forwarded_allow_ips: list[str] | str) -> ASGIApp:
    """``app`` behind uvicorn's ``ProxyHeadersMiddleware`` trusting ``forwarded_allow_ips``."""
    # uvicorn types ASGI callables with its own TypedDicts, Starlette with mappings.
    return cast(ASGIApp, ProxyHeadersMiddleware(cast(Any, app), trusted_hosts=forwarded_allow_ips))


async def _scope_only(scope: Scope, receive: Receive, send: Send) -> None:
    """The application behind the proxy-header middleware that only rewrites the scope."""


def _match(routes: dict[str, DirectRoute], scope: Scope) -> DirectRoute | None:
    """The direct route serving ``scope`` (an HTTP request), if any."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    route = routes.get(path)
    if route is not None and route.methods and scope["method"] in route.methods:
        return route
    return None


class DirectRoutesMiddleware:
    """Serves requests whose path and method match a :class:`DirectRoute`; passes the rest.

    The matched route is recorded in ``scope["route"]`` / ``scope["endpoint"]`` as
    Starlette's router does, so the request-metrics middleware labels it by its path.
    Exceptions propagate to the outer error middleware, which renders project errors
    exactly as the application's exception handlers do.
    """

    def __init__(self, app: ASGIApp, *, routes: dict[str, DirectRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = _match(self.routes, scope)
            if route is not None:
                await _serve(route, scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _serve(route: DirectRoute, scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = route
    scope["endpoint"] = route.endpoint
    response = await route.direct_endpoint(DirectRequest(scope, receive, send))
    await response(scope, receive, send)


class DirectEntry:
    """The outermost ASGI application: a request for a :class:`DirectRoute` is served here,
    with the application's own request-metrics, error and body-limit middlewares folded
    into one coroutine, skipping the framework's layers (FastAPI's and Starlette's
    exception, telemetry and body-size middlewares, which add nothing the project's
    middlewares do not); everything else goes to ``app`` unchanged.

    The folded path behaves as ``wrap`` (those three middlewares, in their order, around
    the route) does: a declared ``Content-Length`` over ``max_body_bytes`` is a 413 before
    anything is read, a body without one is counted while it streams in, exceptions are
    rendered by :func:`~monitoringserver.web.errors.unhandled_response` (nothing once the
    response started), and the latency is observed under the route's path and the status
    sent. A gzip body takes ``wrap`` itself (it inflates the body on the way in).

    ``scope["app"]`` is set to ``app`` for the direct route, so ``request.app`` (its
    ``state``) is what it is behind the full stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[str, DirectRoute],
        wrap: Callable[[ASGIApp], ASGIApp],
        max_body_bytes: int,
        metrics: HttpMetrics,
        forwarded_allow_ips: list[str] | str | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.wrap = wrap
        self.direct = wrap(self._direct)
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics
        self.forwarded_allow_ips = forwarded_allow_ips
        # Behind proxies: uvicorn's own middleware rewrites ``client``/``scheme`` (of a
        # direct request only when it carries an X-Forwarded header: without one the
        # middleware changes nothing).
        self._fallback: ASGIApp = app
        self._proxy: ASGIApp | None = None
        if forwarded_allow_ips is not None:
            self._fallback = proxy_headers(app, forwarded_allow_ips)
            self._proxy = proxy_headers(_scope_only, forwarded_allow_ips)

    def behind_proxies(self, forwarded_allow_ips: list[str] | str) -> DirectEntry:
        """This entry doing what uvicorn's ``ProxyHeadersMiddleware`` (``proxy_headers``)
        does, for a server that runs without it: ``X-Forwarded-For`` / ``-Proto`` from
        ``forwarded_allow_ips`` (uvicorn's syntax) set the request's client and scheme."""
        return DirectEntry(
            self.app,
            routes=self.routes,
            wrap=self.wrap,
            max_body_bytes=self.max_body_bytes,
            metrics=self.metrics,
            forwarded_allow_ips=forwarded_allow_ips,
        )

    async def _direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _serve(scope["route"], scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = _match(self.routes, scope)
            if route is not None:
                length, encoding, forwarded = body_headers(scope["headers"])
                if forwarded and self._proxy is not None:
                    await self._proxy(scope, receive, send)
                scope["app"] = self.app
                scope["route"] = route
                if encoding == b"gzip":
                    await self.direct(scope, receive, send)
                else:
                    await self._folded(route, scope, receive, send, length)
                return
        await self._fallback(scope, receive, send)

    async def _folded(
        self, route: DirectRoute, scope: Scope, receive: Receive, send: Send, length: int | None
    ) -> None:
        started = time.perf_counter()
        code = 500
        try:
            if length is not None and length > self.max_body_bytes:
                response: Response = response_for(too_large(length, self.max_body_bytes))
            else:
                scope["endpoint"] = route.endpoint
                request = DirectRequest(scope, limited_receive(receive, self.max_body_bytes), send)
                try:
                    response = await route.direct_endpoint(request)
                except Exception as exc:  # noqa: BLE001 (answered as the catch-all answers)
                    response = unhandled_response(exc, scope)
            if type(response).__call__ is Response.__call__ and response.background is None:
                # What ``Response.__call__`` sends, without a call and a send wrapper.
                code = response.status_code
                try:
                    await send(
                        {
                            "type": "http.response.start",
                            "status": code,
                            "headers": response.raw_headers,
                        }
                    )
                    await send({"type": "http.response.body", "body": response.body})
                except Exception as exc:  # noqa: BLE001 (logged as the catch-all logs)
                    log_after_start(exc, scope)
                return
            response_started = False

            async def tracking_send(message: Message) -> None:
                nonlocal code, response_started
                if message["type"] == "http.response.start":
                    response_started = True
                    code = int(message["status"])
                await send(message)

            try:
                await response(scope, receive, tracking_send)
            except Exception as exc:  # noqa: BLE001 (as the catch-all)
                if response_started:
                    log_after_start(exc, scope)
                else:
                    await unhandled_response(exc, scope)(scope, receive, tracking_send)
        finally:
            self.metrics.observe(scope["method"], route.path, code, time.perf_counter() - started)
