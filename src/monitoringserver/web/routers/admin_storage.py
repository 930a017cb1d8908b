"""``POST /api/v1/admin/tsdb/flush`` (``admin``): flush the metric head now.

The store moves its head table into Parquet parts on a timer (``storage.flush_interval_s``,
default 120 s). This endpoint does it on demand, as VictoriaMetrics' ``/internal/force_flush``
does: it commits the samples still queued for the head (acknowledged, in the WAL), then
writes every head row into level-0 parts, and answers once they are published::

    200 {"status": "success", "data": {"flushed_samples": 12000}}

``flushed_samples`` counts the head rows moved into parts (0 when the head was empty).
A flush that overlaps the timer's waits for it (the compactor runs one job at a time).
Before the server is ready and once it is stopping the answer is 503 ``unavailable``
with ``Retry-After``. The caller needs a token or session with the ``admin`` scope.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import UnavailableError
from monitoringserver.web.deps import components
from monitoringserver.web.security import require_scope

__all__ = ["FLUSH_PATH", "create_admin_storage_router"]

#: The route's path (also used by the benchmark).
FLUSH_PATH = "/api/v1/admin/tsdb/flush"
_audit = logging.getLogger("monitoringserver.audit")
_Admin = Annotated[Principal, Depends(require_scope(Scope.ADMIN))]


def create_admin_storage_router(flush_head: Callable[[], Awaitable[int]]) -> APIRouter:
    """The router of :data:`FLUSH_PATH`; ``flush_head`` commits queued samples, flushes the
    head into parts and returns the rows flushed (``MetricStoreHandle.flush_now``)."""
    router = APIRouter(tags=["admin"])

    @router.post(FLUSH_PATH)
    async def flush(request: Request, principal: _Admin) -> JSONResponse:
        if not components(request).ready():
            raise UnavailableError("cannot flush metric head: the server is starting or stopping")
        rows = await flush_head()
        _audit.info("metric head flushed", extra={"by": principal.name, "samples": rows})
        return JSONResponse({"status": "success", "data": {"flushed_samples": rows}})

    return router
