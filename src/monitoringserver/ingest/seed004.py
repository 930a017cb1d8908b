"""Seed 004 (Citybox metrics server) push endpoints: path parsing, the pushed-values table
and the historical User-Agent rules.

``/simple/insert/<metric>/<value>`` and ``/complex/insert/<metric>/<instance>/<value>``
push one sample each: ``<metric>{job=<job>[,instance=<instance>]} <value>`` at the server's
time. :class:`PushedValues` keeps the latest value per series (bounded) for
``/prom/deamon/metrics``; the samples themselves go to the metric store.

User-Agent rules (only when enabled): ``/prom/metrics`` and ``/prom/deamon/metrics`` want
``Prometheus/<version>``; the inserts want ``metrics_pusher``; ``/prom/status`` and
``/last/get/prometheus`` want ``checker``.
"""

from __future__ import annotations

import enum
import math

from monitoringserver.errors import BadDataError, ForbiddenError, OverloadedError
from monitoringserver.ingest.prom_text import parse_float
from monitoringserver.model.labels import METRIC_NAME, Labels, validate_metric_name

__all__ = ["Client", "PushedValues", "check_user_agent", "insert_labels", "parse_value"]


class Client(enum.Enum):
    """Who the seed expects on an endpoint, by User-Agent."""

    PROMETHEUS = "Prometheus/"
    PUSHER = "metrics_pusher"
    CHECKER = "checker"


def check_user_agent(user_agent: str, client: Client) -> None:
    """Raise ``ForbiddenError`` unless ``user_agent`` is what the seed allows for ``client``."""
    ok = (
        user_agent.startswith(client.value)
        if client is Client.PROMETHEUS
        else user_agent.split("/", 1)[0] == client.value
    )
    if not ok:
        raise ForbiddenError(
            f"cannot authorize request: User-Agent {user_agent!r} is not allowed here "
            f"(expected {client.value!r}; seed004_user_agents is on)"
        )


def parse_value(text: str) -> float:
    try:
        value = parse_float(text)
    except ValueError as exc:
        raise BadDataError(f"cannot parse value {text!r}: expected a number") from exc
    if math.isnan(value):
        raise BadDataError(f"cannot parse value {text!r}: NaN is not accepted")
    return value


def insert_labels(metric: str, job: str, instance: str | None = None) -> Labels:
    """The series of an insert; raises ``BadDataError`` for an invalid metric name."""
    validate_metric_name(metric)
    pairs = [(METRIC_NAME, metric), ("job", job)]
    if instance is not None:
        if not instance:
            raise BadDataError("cannot accept insert: instance must not be empty")
        pairs.append(("instance", instance))
    return tuple(sorted(pairs))


class PushedValues:
    """Latest ``(value, ts_ms)`` per pushed series, at most ``max_series`` of them."""

    def __init__(self, max_series: int = 100_000) -> None:
        self.max_series = max_series
        self._values: dict[Labels, tuple[float, int]] = {}

    def __len__(self) -> int:
        return len(self._values)

    def set(self, labels: Labels, value: float, ts_ms: int) -> None:
        if labels not in self._values and len(self._values) >= self.max_series:
            raise OverloadedError(
                f"cannot accept insert: {self.max_series} pushed series is the limit",
                retry_after_s=60.0,
            )
        self._values[labels] = (value, ts_ms)

    def rows(self) -> list[tuple[Labels, float, int | None]]:
        return [(lbl, v, ts) for lbl, (v, ts) in sorted(self._values.items())]
