"""The ``monitoringserver.v1.StateManager`` service (seed 000 PICCOLO StateManager).

``HandleStateMetrics`` stores samples through the :class:`MetricAppender`.
``HandleStateAlert`` records the alert as the gauge ``piccolo_state_alert`` (1 firing,
0 resolved; labels ``alertname``, ``severity``, ``source`` plus the alert's labels) so
alert rules and dashboards see it, and forwards it to an optional
:class:`StateAlertSink` (the alert manager) which assigns the alert id.
``GetAlertConfig`` answers with the rules of an optional :class:`AlertConfigSource`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np

from monitoringserver.auth.api import Authenticator, Scope
from monitoringserver.errors import BadDataError
from monitoringserver.ingest.grpc_common import (
    InflightLimiter,
    abort,
    authorize,
    run_to_completion,
)
from monitoringserver.metrics.api import MetricAppender
from monitoringserver.model.labels import (
    Labels,
    make_labels,
    validate_label_name,
    validate_metric_name,
)
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc

__all__ = [
    "STATE_ALERT_METRIC",
    "AlertConfigSource",
    "AlertRuleInfo",
    "StateAlert",
    "StateAlertSink",
    "StateManagerService",
]

STATE_ALERT_METRIC = "piccolo_state_alert"
_MAX_SAMPLES = 100_000


@dataclass(frozen=True, slots=True)
class StateAlert:
    """An alert reported by a PICCOLO component. ``ts_ms``: ms since the Unix epoch."""

    source: str
    name: str
    severity: str
    state: str  # "firing" or "resolved"
    title: str
    message: str
    labels: Mapping[str, str]
    ts_ms: int


@dataclass(frozen=True, slots=True)
class AlertRuleInfo:
    """One alert rule as components see it. ``for_s`` in seconds."""

    name: str
    expr: str
    for_s: float = 0.0
    severity: str = "warning"
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)


class StateAlertSink(Protocol):
    async def handle_state_alert(self, alert: StateAlert) -> str:
        """Take the alert into the alert manager; returns its id."""
        ...


class AlertConfigSource(Protocol):
    def alert_rules(self) -> Sequence[AlertRuleInfo]:
        """The configured alert rules."""
        ...

    @property
    def eval_interval_s(self) -> float: ...


class StateManagerService(pb_grpc.StateManagerServicer):
    """Servicer; ``alert_sink`` and ``config_source`` are optional (see module doc)."""

    def __init__(
        self,
        appender: MetricAppender,
        *,
        authenticator: Authenticator | None = None,
        alert_sink: StateAlertSink | None = None,
        config_source: AlertConfigSource | None = None,
        limiter: InflightLimiter | None = None,
    ) -> None:
        self._appender = appender
        self._auth = authenticator
        self._sink = alert_sink
        self._config = config_source
        self._limiter = limiter or InflightLimiter(64, 1.0)

    async def HandleStateAlert(  # noqa: N802 (gRPC method name)
        self, request: pb.StateAlertRequest, context: grpc.aio.ServicerContext
    ) -> pb.StateAlertResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            if not request.name:
                raise BadDataError("cannot accept state alert: name is empty")
            if request.state not in ("firing", "resolved"):
                raise BadDataError(
                    f"cannot accept state alert: state {request.state!r} is not firing/resolved"
                )
            ts_ms = request.timestamp_ms or int(time.time() * 1000)
            alert = StateAlert(
                source=request.source,
                name=request.name,
                severity=request.severity or "warning",
                state=request.state,
                title=request.title,
                message=request.message,
                labels=dict(request.labels),
                ts_ms=ts_ms,
            )
            extra = dict(alert.labels)
            for key in extra:
                validate_label_name(key)
            extra.update(
                {
                    "__name__": STATE_ALERT_METRIC,
                    "alertname": alert.name,
                    "severity": alert.severity,
                    "source": alert.source,
                }
            )
            value = 1.0 if alert.state == "firing" else 0.0
            with self._limiter:
                await run_to_completion(
                    self._appender.append(
                        SampleBatch.from_rows([(make_labels(extra), ts_ms, value)]),
                        source=alert.source,
                    )
                )
            alert_id = await self._sink.handle_state_alert(alert) if self._sink else ""
            return pb.StateAlertResponse(alert_id=alert_id, accepted=True)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def HandleStateMetrics(  # noqa: N802 (gRPC method name)
        self, request: pb.StateMetricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.StateMetricsResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            samples = request.samples
            if len(samples) > _MAX_SAMPLES:
                raise BadDataError(
                    f"cannot accept state metrics: {len(samples)} samples, at most {_MAX_SAMPLES}"
                )
            now_ms = int(time.time() * 1000)
            index: dict[Labels, int] = {}
            idx = np.empty(len(samples), dtype=np.uint32)
            ts = np.empty(len(samples), dtype=np.int64)
            values = np.empty(len(samples), dtype=np.float64)
            for i, s in enumerate(samples):
                validate_metric_name(s.name)
                pairs = dict(s.labels)
                for key in pairs:
                    validate_label_name(key)
                pairs["__name__"] = s.name
                if request.source:
                    pairs.setdefault("source", request.source)
                idx[i] = index.setdefault(make_labels(pairs), len(index))
                ts[i] = s.timestamp_ms or now_ms
                values[i] = s.value
            if not index:
                return pb.StateMetricsResponse(accepted=0)
            with self._limiter:
                result = await run_to_completion(
                    self._appender.append(
                        SampleBatch(list(index), idx, ts, values), source=request.source
                    )
                )
            return pb.StateMetricsResponse(accepted=result.accepted)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def GetAlertConfig(  # noqa: N802 (gRPC method name)
        self, request: pb.AlertConfigRequest, context: grpc.aio.ServicerContext
    ) -> pb.AlertConfigResponse:
        try:
            authorize(self._auth, context, Scope.READ)
            if self._config is None:
                return pb.AlertConfigResponse(eval_interval_s=30.0)
            return pb.AlertConfigResponse(
                rules=[
                    pb.AlertRuleConfig(
                        name=r.name,
                        expr=r.expr,
                        for_s=r.for_s,
                        severity=r.severity,
                        labels=dict(r.labels),
                        annotations=dict(r.annotations),
                    )
                    for r in self._config.alert_rules()
                ],
                eval_interval_s=self._config.eval_interval_s,
            )
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)
