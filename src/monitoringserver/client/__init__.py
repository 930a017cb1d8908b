"""Helpers for Python applications: a logging handler and a metrics push helper."""

from monitoringserver.client.logging_handler import MonitoringLogHandler
from monitoringserver.client.push import MetricsPusher, PushError

__all__ = ["MetricsPusher", "MonitoringLogHandler", "PushError"]
