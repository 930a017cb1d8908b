"""Request authentication for every router: ``Depends(require_scope(Scope.READ))``.

The application stores an ``Authenticator`` on ``app.state.authenticator``; when
``app.state.auth_enabled`` is false every request is an anonymous admin.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request

from monitoringserver.auth.api import Authenticator, Principal, Scope
from monitoringserver.errors import AuthError, ForbiddenError

__all__ = ["ANONYMOUS", "authenticate_request", "check_scope", "require_scope"]

ANONYMOUS = Principal(name="anonymous", scopes=frozenset(Scope), kind="anonymous")


def _credential(request: Request) -> str | None:
    # The first Authorization header, as ``request.headers.get`` finds it, without
    # building the headers mapping (ASGI header names are lowercase).
    header: str | None = None
    raw: bytes
    for key, raw in request.scope["headers"]:
        if key == b"authorization":
            header = raw.decode("latin-1")
            break
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    cookie = request.cookies.get("ms_session")
    if cookie:
        return cookie
    return None


def authenticate_request(request: Request) -> Principal:
    """The caller of ``request``; raises ``AuthError`` (401) when there is none."""
    if not getattr(request.app.state, "auth_enabled", True):
        return ANONYMOUS
    credential = _credential(request)
    if credential is None:
        raise AuthError(
            "cannot authenticate request: missing 'Authorization: Bearer <token>' header"
        )
    authenticator: Authenticator = request.app.state.authenticator
    principal = authenticator.authenticate(credential)
    if principal is None:
        raise AuthError("cannot authenticate request: token is not valid")
    return principal


def require_scope(scope: Scope) -> Callable[[Request], Coroutine[Any, Any, Principal]]:
    """A FastAPI dependency that admits callers holding ``scope`` (or ``admin``).

    It is a coroutine so FastAPI runs it on the event loop: authentication is one SHA-256
    and a dict lookup (``Authenticator.authenticate`` must never block), and a synchronous
    dependency would cost every request a hop through the worker thread pool.
    """

    async def dependency(request: Request) -> Principal:
        return check_scope(request, scope)

    return dependency


def check_scope(request: Request, scope: Scope) -> Principal:
    """Authenticate ``request`` and check it holds ``scope`` (raises 401/403 errors)."""
    principal = authenticate_request(request)
    if not principal.has(scope):
        raise ForbiddenError(f"cannot authorize request: scope {scope.value!r} is required")
    return principal
