"""Push metrics from an application (seed 002 JSON, ``POST /api/v1/metrics``).

    push = MetricsPusher("http://monitor:9940", token="...", server_id="billing")
    push.push({"queue_depth": 12, "disk_io": {"read_iops": 3.5}}, labels={"env": "prod"})

Nested objects flatten on the server (``disk_io_read_iops``). :meth:`push` raises
:class:`PushError` on failure; :meth:`try_push` returns False instead (for code that
must never fail because monitoring is away).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import httpx

__all__ = ["MetricsPusher", "PushError"]


class PushError(Exception):
    """The server did not accept the metrics (message: ``cannot push metrics: ...``)."""


class MetricsPusher:
    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        server_id: str,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.server_id = server_id
        self._client = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )

    def push(
        self,
        metrics: Mapping[str, Any],
        *,
        labels: Mapping[str, str] | None = None,
        timestamp: float | None = None,
    ) -> None:
        """Send one observation; ``timestamp`` in seconds since the epoch (default now)."""
        body: dict[str, Any] = {
            "server_id": self.server_id,
            "timestamp": time.time() if timestamp is None else timestamp,
            "metrics": dict(metrics),
        }
        if labels:
            body["labels"] = dict(labels)
        try:
            resp = self._client.post("/api/v1/metrics", json=body)
        except httpx.HTTPError as exc:
            raise PushError(f"cannot push metrics: {exc}") from exc
        if resp.status_code >= 300:
            raise PushError(f"cannot push metrics: HTTP {resp.status_code}: {resp.text[:200]}")

    def try_push(self, metrics: Mapping[str, Any], **kw: Any) -> bool:
        try:
            self.push(metrics, **kw)
        except PushError:
            return False
        return True

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> MetricsPusher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
