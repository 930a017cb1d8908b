"""Scraping as a component: the scrape service, ``GET /api/v1/targets`` and a ``scrape``
probe in ``/api/v1/health`` (degraded while any target is down).

``GET /api/v1/targets`` (``monitoring:read``) answers like Prometheus:
``{"status": "success", "data": {"activeTargets": [...], "droppedTargets": []}}`` with
``labels``, ``scrapePool``, ``scrapeUrl``, ``health`` (``up``/``down``/``unknown``),
``lastError``, ``lastScrape`` (RFC 3339), ``lastScrapeDuration`` (seconds),
``scrapeInterval`` and ``scrapeTimeout``. ``?scrapePool=<job>`` filters by job.

Wiring (``server.py``)::

    scraping = Scraping()
    server.router_factories.append(scraping.router)
    server.service_factories.append(lambda s: Service(*scraping.service(s)))
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from monitoringserver.auth.api import Scope
from monitoringserver.ingest.scrape.manager import ScrapeManager, build_scrape_manager
from monitoringserver.web.app import ComponentHealth, HealthStatus
from monitoringserver.web.deps import require

__all__ = ["Scraping"]


def _rfc3339(seconds: float) -> str:
    if not seconds:
        return "0001-01-01T00:00:00Z"
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat().replace("+00:00", "Z")


class Scraping:
    """Owns the scrape manager shared by the service and the targets route."""

    def __init__(self, manager: ScrapeManager | None = None) -> None:
        self.manager = manager

    def service(
        self, server: Any
    ) -> tuple[
        str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]
    ]:
        """``(name, run, stop)`` for a ``server.Service`` (see ``build_scrape_manager``)."""
        if self.manager is None:
            self.manager = build_scrape_manager(server)
        checks = getattr(server, "health_checks", None)
        if isinstance(checks, dict):
            checks["scrape"] = self.health
        return "scrape", self.manager.run, self.manager.stop

    async def health(self) -> ComponentHealth:
        """Healthy when every target's last scrape worked; degraded naming the down ones."""
        targets = self.manager.status() if self.manager else []
        down = [t for t in targets if t.health == "down"]
        if not down:
            return ComponentHealth(HealthStatus.HEALTHY, f"{len(targets)} targets")
        names = ", ".join(f"{t.job}/{t.labels.get('instance', t.url)}" for t in down[:5])
        return ComponentHealth(
            HealthStatus.DEGRADED, f"{len(down)} of {len(targets)} targets down: {names}"
        )

    def router(self, server: object) -> APIRouter:
        router = APIRouter()

        async def targets(request: Request) -> Response:
            require(request, Scope.READ)
            pool = request.query_params.get("scrapePool")
            active = []
            for t in self.manager.status() if self.manager else []:
                if pool and t.job != pool:
                    continue
                active.append(
                    {
                        "discoveredLabels": {},
                        "labels": t.labels,
                        "scrapePool": t.job,
                        "scrapeUrl": t.url,
                        "globalUrl": t.url,
                        "lastError": t.last_error,
                        "lastScrape": _rfc3339(t.last_scrape_s),
                        "lastScrapeDuration": round(t.last_duration_s, 6),
                        "health": t.health,
                        "scrapeInterval": f"{t.interval_s:g}s",
                        "scrapeTimeout": f"{t.timeout_s:g}s",
                    }
                )
            body = {"status": "success", "data": {"activeTargets": active, "droppedTargets": []}}
            return Response(msgspec.json.encode(body), media_type="application/json")

        router.add_route("/api/v1/targets", targets, methods=["GET"], include_in_schema=False)
        return router
