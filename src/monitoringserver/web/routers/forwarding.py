"""Forwarding as a component: the forward service plus its ``/api/v1/health`` probe.

The probe (``forward``) is *healthy* while requests reach the receiver, *degraded* while
sends keep failing (the receiver is down or refusing; data waits on disk) or the queue is
more than half full, and *unhealthy* once the queue is at its bound (the oldest data is
being dropped). Without ``forward.url`` it reports *healthy* with "off".

Wiring (``server.py``)::

    forwarding = Forwarding()
    server.service_factories.append(lambda s: Service(*forwarding.service(s)))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from monitoringserver.pipeline.forwarder import Forwarder, build_forwarder, forward_service
from monitoringserver.web.app import ComponentHealth, HealthStatus

__all__ = ["Forwarding", "forward_health"]


async def forward_health(forwarder: Forwarder | None) -> ComponentHealth:
    if forwarder is None:
        return ComponentHealth(HealthStatus.HEALTHY, "off (no forward.url)")
    pending = await asyncio.to_thread(forwarder.queue.pending_bytes)
    limit = forwarder.options.max_queue_bytes
    detail = f"{forwarder.client.url}: {pending} B queued of {limit} B"
    if pending >= limit:
        return ComponentHealth(HealthStatus.UNHEALTHY, f"{detail}; dropping the oldest data")
    if forwarder.failing_sends:
        return ComponentHealth(
            HealthStatus.DEGRADED,
            f"{detail}; {forwarder.failing_sends} failed sends: {forwarder.last_error}",
        )
    if pending * 2 > limit:
        return ComponentHealth(HealthStatus.DEGRADED, f"{detail}; more than half full")
    return ComponentHealth(HealthStatus.HEALTHY, detail)


class Forwarding:
    """Builds the forwarder once and registers its health probe on the server."""

    def __init__(self) -> None:
        self.forwarder: Forwarder | None = None

    def service(
        self, server: Any
    ) -> tuple[
        str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]
    ]:
        self.forwarder = build_forwarder(server)
        checks = getattr(server, "health_checks", None)
        if isinstance(checks, dict):
            checks["forward"] = lambda: forward_health(self.forwarder)
        return forward_service(server, self.forwarder)
