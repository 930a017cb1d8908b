"""The one place where project errors become gRPC status codes.

Retry hints travel as trailing metadata ``retry-after-ms`` (integer milliseconds) on
``RESOURCE_EXHAUSTED`` and ``UNAVAILABLE``; clients back off at least that long.
"""

from __future__ import annotations

import grpc

from monitoringserver import errors

__all__ = ["RETRY_AFTER_KEY", "GrpcError", "status_for"]

RETRY_AFTER_KEY = "retry-after-ms"

# Most specific classes first: the first isinstance match wins.
_CODES: tuple[tuple[type[errors.MonitoringError], grpc.StatusCode], ...] = (
    (errors.PayloadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.BadDataError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.CardinalityLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.OverloadedError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.AuthError, grpc.StatusCode.UNAUTHENTICATED),
    (errors.ForbiddenError, grpc.StatusCode.PERMISSION_DENIED),
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.UnavailableError, grpc.StatusCode.UNAVAILABLE),
    (errors.QueryTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.CanceledError, grpc.StatusCode.CANCELLED),
    (errors.QueryLimitError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.ExecutionError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StorageError, grpc.StatusCode.INTERNAL),
)


class GrpcError(Exception):
    """A status to abort an RPC with: code, details and trailing metadata."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        trailing: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


def status_for(exc: BaseException) -> GrpcError:
    """Translate any exception into a :class:`GrpcError` (unknown ones are INTERNAL)."""
    if isinstance(exc, GrpcError):
        return exc
    if not isinstance(exc, errors.MonitoringError):
        return GrpcError(grpc.StatusCode.INTERNAL, f"cannot handle request: {type(exc).__name__}")
    code = grpc.StatusCode.INTERNAL
    for cls, mapped in _CODES:
        if isinstance(exc, cls):
            code = mapped
            break
    retry_after_s: float | None = getattr(exc, "retry_after_s", None)
    trailing: tuple[tuple[str, str], ...] = ()
    if retry_after_s is not None:
        trailing = ((RETRY_AFTER_KEY, str(max(1, int(retry_after_s * 1000)))),)
    return GrpcError(code, str(exc), trailing)
