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

from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["DirectEntry", "DirectRoute", "DirectRoutesMiddleware", "direct_routes"]

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


def direct_routes(routes: Iterable[object]) -> dict[str, DirectRoute]:
    """The :class:`DirectRoute` objects among ``routes``, by path (the first one wins)."""
    table: dict[str, DirectRoute] = {}
    for route in routes:
        if isinstance(route, DirectRoute):
            table.setdefault(route.path, route)
    return table


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
    response = await route.direct_endpoint(Request(scope, receive, send))
    await response(scope, receive, send)


class DirectEntry:
    """The outermost ASGI application: a request for a :class:`DirectRoute` goes through
    ``wrap`` (the application's own request-metrics, error and body-limit middlewares,
    built around the route) and skips the framework's layers (FastAPI's and Starlette's
    exception, telemetry and body-size middlewares, which add nothing the project's
    middlewares do not); everything else goes to ``app`` unchanged.

    ``scope["app"]`` is set to ``app`` for the direct route, so ``request.app`` (its
    ``state``) is what it is behind the full stack.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: dict[str, DirectRoute],
        wrap: Callable[[ASGIApp], ASGIApp],
    ) -> None:
        self.app = app
        self.routes = routes
        self.direct = wrap(self._direct)

    async def _direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _serve(scope["route"], scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            route = _match(self.routes, scope)
            if route is not None:
                scope["app"] = self.app
                scope["route"] = route
                await self.direct(scope, receive, send)
                return
        await self.app(scope, receive, send)
