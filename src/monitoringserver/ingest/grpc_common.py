"""Pieces shared by the gRPC servicers: options, bearer-token auth, aborting with a status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc

from monitoringserver.auth.api import Authenticator, Principal, Scope
from monitoringserver.errors import AuthError, ConfigError, ForbiddenError, OverloadedError
from monitoringserver.ingest.grpc_status import status_for

__all__ = [
    "ANONYMOUS_WRITER",
    "GrpcOptions",
    "InflightLimiter",
    "abort",
    "authorize",
    "run_to_completion",
]

_log = logging.getLogger("monitoringserver.ingest.grpc")

T = TypeVar("T")

ANONYMOUS_WRITER = Principal(name="anonymous", scopes=frozenset(Scope), kind="anonymous")


@dataclass(frozen=True, slots=True)
class GrpcOptions:
    """gRPC listener settings. Sizes in bytes, durations in seconds.

    ``max_inflight``: concurrent append RPCs (SendMetrics, SendLogs, StreamLogs batches,
    HandleStateMetrics); one more is refused with ``RESOURCE_EXHAUSTED`` and a
    ``retry-after-ms`` hint of ``retry_after_s``. Control streams do not count.
    ``tls_cert``/``tls_key``: PEM files; both or neither.
    ``suggested_interval_s``: sent to agents on register/heartbeat (0 = no suggestion).
    ``max_pending_calls``: calls the gRPC core may hold before the handler picks them up
    (its default hard limit, 3,000, cancels calls when thousands of agents connect at
    once); beyond twice this number new calls are refused.
    ``overload_wait_s``: how long a decoded log batch the log store refuses as
    overloaded (full write queue) is held and offered again before the call gets
    ``RESOURCE_EXHAUSTED``; a ``StreamLogs`` call is not read meanwhile (flow control).
    0 = refuse at once.
    """

    max_message_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 256
    retry_after_s: float = 1.0
    max_sessions: int = 50_000
    max_series_per_session: int = 100_000
    tls_cert: Path | None = None
    tls_key: Path | None = None
    suggested_interval_s: float = 0.0
    max_pending_calls: int = 20_000
    overload_wait_s: float = 5.0

    def __post_init__(self) -> None:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("cannot configure gRPC TLS: set both tls_cert and tls_key")
        if self.max_inflight < 1 or self.max_message_bytes < 1024:
            raise ConfigError("cannot configure gRPC: max_inflight >= 1, max_message_bytes >= 1KiB")
        if self.overload_wait_s < 0:
            raise ConfigError("cannot configure gRPC: overload_wait_s must not be negative")


def authorize(
    authenticator: Authenticator | None, context: grpc.aio.ServicerContext, scope: Scope
) -> Principal:
    """The caller, from ``authorization: Bearer <token>`` metadata.

    ``authenticator=None`` means authentication is off (every caller is admin).
    Raises ``AuthError`` / ``ForbiddenError``.
    """
    if authenticator is None:
        return ANONYMOUS_WRITER
    token = ""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            scheme, _, rest = str(value).partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
            break
    if not token:
        raise AuthError("cannot authenticate call: missing 'authorization: Bearer <token>'")
    principal = authenticator.authenticate(token)
    if principal is None:
        raise AuthError("cannot authenticate call: token is not valid")
    if not principal.has(scope):
        raise ForbiddenError(f"cannot authorize call: scope {scope.value!r} is required")
    return principal


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> NoReturn:
    """End the RPC with the status that :func:`status_for` maps ``exc`` to."""
    err = status_for(exc)
    if err.code == grpc.StatusCode.INTERNAL:
        _log.error("gRPC call failed", exc_info=exc)
    if err.trailing:
        context.set_trailing_metadata(err.trailing)
    await context.abort(err.code, err.details)
    raise AssertionError("unreachable: context.abort returned")  # pragma: no cover


class InflightLimiter:
    """Counts concurrent appends; refuses one over ``limit`` with ``OverloadedError``."""

    def __init__(self, limit: int, retry_after_s: float) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.inflight = 0
        self.refused = 0

    def __enter__(self) -> InflightLimiter:
        if self.inflight >= self.limit:
            self.refused += 1
            raise OverloadedError(
                f"cannot accept batch: {self.limit} batches are already being written",
                retry_after_s=self.retry_after_s,
            )
        self.inflight += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.inflight -= 1


_background: set[asyncio.Future[Any]] = set()


async def run_to_completion(aw: Awaitable[T]) -> T:
    """Await ``aw`` so that cancelling the caller does not cancel it.

    A client whose deadline passes cancels its RPC handler; an append cut off halfway
    could leave the store's state inconsistent and would be lost anyway. Shielded, it
    finishes (its outcome is logged if it fails) and the client's retry is answered as
    a duplicate by the dedup key.
    """
    fut: asyncio.Future[T] = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        if not fut.done():
            _background.add(fut)
            fut.add_done_callback(_finished)
        raise


def _finished(fut: asyncio.Future[Any]) -> None:
    _background.discard(fut)
    if not fut.cancelled() and fut.exception() is not None:
        _log.warning("append of a cancelled call failed: %s", fut.exception())
