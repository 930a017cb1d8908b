"""The one exception hierarchy.

Every error the project raises on purpose derives from :class:`MonitoringError`.
Messages read ``cannot <verb> <object>: <cause>``. Foreign exceptions are translated
where they enter (``raise ... from exc``); they are mapped to HTTP status codes in
``web/errors.py`` and to gRPC status codes in one module of ``ingest`` only.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BadDataError",
    "CanceledError",
    "CardinalityLimitError",
    "ConfigError",
    "ExecutionError",
    "ForbiddenError",
    "MonitoringError",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "QueryLimitError",
    "QueryTimeoutError",
    "StorageError",
    "UnavailableError",
]


class MonitoringError(Exception):
    """Root of every error raised on purpose by monitoringserver."""

    #: Prometheus-style error class, used in JSON error bodies.
    error_type: str = "internal"


class ConfigError(MonitoringError):
    """A configuration file, variable or flag is invalid."""

    error_type = "bad_data"


class BadDataError(MonitoringError):
    """The client sent something that cannot be parsed or is not allowed (HTTP 400)."""

    error_type = "bad_data"


class PayloadTooLargeError(BadDataError):
    """A request body is over the configured limit (HTTP 413)."""


class CardinalityLimitError(MonitoringError):
    """Accepting the data would create more series than a limit allows (HTTP 429)."""

    error_type = "too_many_series"

    def __init__(self, message: str, *, retry_after_s: float = 60.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverloadedError(MonitoringError):
    """A bounded queue is full; the client should retry later (HTTP 429, RESOURCE_EXHAUSTED)."""

    error_type = "overloaded"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class AuthError(MonitoringError):
    """No credentials, or credentials that are not valid (HTTP 401)."""

    error_type = "unauthorized"


class ForbiddenError(MonitoringError):
    """Valid credentials that lack the needed scope (HTTP 403)."""

    error_type = "forbidden"


class NotFoundError(MonitoringError):
    """The named object does not exist (HTTP 404)."""

    error_type = "not_found"


class UnavailableError(MonitoringError):
    """A component is not ready or is shutting down (HTTP 503)."""

    error_type = "unavailable"

    def __init__(self, message: str, *, retry_after_s: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class StorageError(MonitoringError):
    """The storage engine failed (HTTP 500)."""

    error_type = "internal"


class ExecutionError(MonitoringError):
    """A query was valid but failed while running (HTTP 422, Prometheus ``execution``)."""

    error_type = "execution"


class QueryLimitError(ExecutionError):
    """A query would touch more samples or series than allowed (HTTP 422)."""


class QueryTimeoutError(MonitoringError):
    """A query ran longer than its timeout (HTTP 503, Prometheus ``timeout``)."""

    error_type = "timeout"


class CanceledError(MonitoringError):
    """A query was canceled by its client (HTTP 499/503, Prometheus ``canceled``)."""

    error_type = "canceled"
