"""Token administration under ``/api/v1/admin/tokens`` (``admin`` scope).

* ``POST /api/v1/admin/tokens`` ``{"name": "ci", "scopes": ["monitoring:write"]}`` → 201 with
  the record and ``token`` (the secret, shown this once);
* ``GET /api/v1/admin/tokens[?include_revoked=true]`` → records (never secrets);
* ``DELETE /api/v1/admin/tokens/{name_or_id}`` → the revoked record, 404 when unknown.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.web.deps import components
from monitoringserver.web.security import require_scope

__all__ = ["TokenRequest", "router"]

_log = logging.getLogger("monitoringserver.audit")
router = APIRouter(prefix="/api/v1/admin/tokens", tags=["admin"])
_Admin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    scopes: list[str] = Field(min_length=1)


@router.post("", status_code=201)
def create_token(body: TokenRequest, request: Request, principal: _Admin) -> JSONResponse:
    info, secret = components(request).tokens.create(body.name, body.scopes)
    _log.info(
        "token created",
        extra={
            "token": info.name,
            "token_id": info.id,
            "scopes": " ".join(info.scopes),
            "by": principal.name,
        },
    )
    return JSONResponse(
        {"status": "success", "data": {**info.to_json(), "token": secret}}, status_code=201
    )


@router.get("")
def list_tokens(
    request: Request, _principal: _Admin, include_revoked: bool = False
) -> JSONResponse:
    infos = components(request).tokens.list(include_revoked=include_revoked)
    return JSONResponse({"status": "success", "data": [i.to_json() for i in infos]})


@router.delete("/{name_or_id}")
def revoke_token(name_or_id: str, request: Request, principal: _Admin) -> JSONResponse:
    info = components(request).tokens.revoke(name_or_id)
    _log.info(
        "token revoked", extra={"token": info.name, "token_id": info.id, "by": principal.name}
    )
    return JSONResponse({"status": "success", "data": info.to_json()})
