"""``GET /api/v1/status/storage``: store statistics (``monitoring:read``).

Series count, head samples, per resolution samples/bytes/files/oldest/newest (ms), WAL
bytes, last compaction time (ms) and duration (s): what ``MetricQuerier.stats()`` reports.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.web.deps import components
from monitoringserver.web.security import require_scope

__all__ = ["router"]

router = APIRouter(tags=["status"])


@router.get("/api/v1/status/storage")
async def storage_status(
    request: Request, _principal: Annotated[Principal, Depends(require_scope(Scope.READ))]
) -> JSONResponse:
    stats = await asyncio.to_thread(components(request).querier.stats)
    return JSONResponse({"status": "success", "data": dataclasses.asdict(stats)})
