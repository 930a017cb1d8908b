"""Small helpers the routers share: the components of the app, and auth for plain routes."""

from __future__ import annotations

from typing import cast

from starlette.requests import Request

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.web.app import WebComponents
from monitoringserver.web.security import check_scope

__all__ = ["components", "require"]


def components(request: Request) -> WebComponents:
    return cast(WebComponents, request.app.state.components)


def require(request: Request, scope: Scope) -> Principal:
    """For plain Starlette routes: authenticate and check ``scope`` (raises 401/403 errors)."""
    return check_scope(request, scope)
