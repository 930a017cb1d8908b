"""Health (seed 001): ``/healthz``, ``/readyz``, ``/api/v1/health``. No token needed.

``/api/v1/health`` runs every registered check concurrently (each bounded by
``CHECK_TIMEOUT_S``) and answers 200 when every component is healthy or degraded,
503 when any is unhealthy. A check that times out or fails reports ``unknown``.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from monitoringserver.web.app import ComponentHealth, HealthCheck, HealthStatus
from monitoringserver.web.deps import components

__all__ = ["CHECK_TIMEOUT_S", "router"]

CHECK_TIMEOUT_S = 5.0
_log = logging.getLogger("monitoringserver.web.health")

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> JSONResponse:
    """The process is up and serving HTTP."""
    return JSONResponse({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """200 once the store is open and its WAL replayed; 503 before that and while stopping."""
    if components(request).ready():
        return JSONResponse({"status": "ready"})
    return JSONResponse(
        {"status": "error", "errorType": "unavailable", "error": "cannot serve: not ready"},
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def _run_check(name: str, check: HealthCheck) -> ComponentHealth:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return ComponentHealth(
            HealthStatus.UNKNOWN, f"check did not answer within {CHECK_TIMEOUT_S} s"
        )
    except Exception as exc:  # noqa: BLE001 (a broken probe must not break the endpoint)
        _log.warning("health check %s failed: %s", name, exc)
        return ComponentHealth(HealthStatus.UNKNOWN, f"cannot check {name}: {exc}")


def overall(statuses: list[HealthStatus]) -> HealthStatus:
    """Worst of the component statuses; ``unknown`` only degrades the whole."""
    if HealthStatus.UNHEALTHY in statuses:
        return HealthStatus.UNHEALTHY
    if HealthStatus.DEGRADED in statuses or HealthStatus.UNKNOWN in statuses:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


@router.get("/api/v1/health")
async def health(request: Request) -> JSONResponse:
    comps = components(request)
    checks = dict(comps.health_checks)
    names = sorted(checks)
    results = await asyncio.gather(*(_run_check(n, checks[n]) for n in names))
    if not comps.ready():
        names.append("server")
        results.append(ComponentHealth(HealthStatus.UNHEALTHY, "not ready (starting or stopping)"))
    status = overall([r.status for r in results]) if results else HealthStatus.HEALTHY
    body = {
        "status": status.value,
        "timestamp": comps.clock(),
        "components": {
            n: {"status": r.status.value, "detail": r.detail}
            for n, r in zip(names, results, strict=True)
        },
    }
    return JSONResponse(body, status_code=503 if status is HealthStatus.UNHEALTHY else 200)
