"""The agent's ``LogBatch`` (``NodeAgent.SendLogs`` / ``StreamLogs``): decoding and the
log half of the servicer.

Both RPCs receive the message bytes undecoded (see ``GrpcServer``), so a batch refused
because too many appends are in flight costs no decoding. The bytes become a columnar
:class:`~monitoringserver.model.logs.LogBatch` (:func:`log_batch_from_pb`). Every record
belongs to the sending agent: ``server_id`` is the agent id. A record without
``timestamp_ms`` (0) gets the receive time; its ``level`` is normalised
(``normalize_level``: an empty one becomes ``unknown``); ``attrs`` become plain dicts.

The records of a batch without attrs share one empty dict, as the lines of a Loki push
share their stream's labels: a dict per line is an allocation the garbage collector
counts, and 500 of them per batch made it run a full collection — which walks every
line waiting in the log store's write queue — every ~140 batches (a fifth of the
server's CPU at 10 M lines). Each field of a record is read once with a C-level
``map`` (reading a field costs a wrapper and a string copy).

Backpressure: when the log store refuses a decoded batch as overloaded (its write queue
is full), the batch is held and offered again, for up to ``GrpcOptions.overload_wait_s``
in all, instead of being refused after its bytes were received and decoded. A
``StreamLogs`` call is not read further meanwhile, so HTTP/2 flow control slows the
agent down. Only an overload that outlasts the wait (or whose retry hint is longer, or
that would outlast the client's deadline) becomes ``RESOURCE_EXHAUSTED`` with the
store's ``retry-after-ms`` hint.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import operator
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from monitoringserver.auth.api import Authenticator, Scope
from monitoringserver.errors import BadDataError, OverloadedError, UnavailableError
from monitoringserver.ingest.grpc_common import InflightLimiter, abort, authorize, run_to_completion
from monitoringserver.logs.api import LogAppender, LogAppendResult
from monitoringserver.metrics.api import DedupKey
from monitoringserver.model.logs import LogBatch, normalize_level
from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["DecodedLogBatch", "LogIngest", "decode_log_batch", "log_batch_from_pb"]

#: First and longest pause between two offers of a batch the store refused as overloaded.
_FIRST_PAUSE_S = 0.01
_MAX_PAUSE_S = 0.2
#: A held batch is refused this long before the client's deadline at the latest.
_DEADLINE_MARGIN_S = 0.5
#: Lines of one StreamLogs group (see LogIngest); the log writer appends batches up to
#: 5,000 lines on its event loop, larger ones through a thread.
_GROUP_LINES = 5_000
#: How long a group waits for a stream's next batch before it is appended as it is.
_GROUP_WAIT_S = 0.02
#: Decoded lines all streams may hold in groups; beyond it batches go one by one.
_MAX_BUFFERED_LINES = 200_000
#: Agents whose latest offer is remembered (an agent forgotten merges nothing until its
#: next accepted append).
_MAX_MARKS = 100_000

_timestamp = operator.attrgetter("timestamp_ms")
_level = operator.attrgetter("level")
_logger = operator.attrgetter("logger")
_source = operator.attrgetter("source")
_message = operator.attrgetter("message")
_attrs = operator.attrgetter("attrs")


def log_batch_from_pb(request: pb.LogBatch, server_id: str, now_ms: int) -> LogBatch:
    """The records of a decoded ``request`` as one batch from host ``server_id``;
    ``now_ms`` (ms since the epoch) stands in for missing timestamps."""
    records = list(request.records)
    n = len(records)
    if not n:
        return LogBatch.empty()
    ts = np.fromiter(map(_timestamp, records), dtype=np.int64, count=n)
    ts[ts == 0] = now_ms
    given = list(map(_level, records))
    # Few distinct spellings per batch: normalise each once, then map in C.
    names = {raw: normalize_level(raw) for raw in set(given)}
    maps = list(map(_attrs, records))
    empty: dict[str, str] = {}  # shared by the records without attrs
    attrs = [dict(m.items()) if m else empty for m in maps] if any(map(len, maps)) else [empty] * n
    return LogBatch(
        ts_ms=ts,
        server_id=[server_id] * n,
        level=list(map(names.__getitem__, given)),
        logger=list(map(_logger, records)),
        source=list(map(_source, records)),
        message=list(map(_message, records)),
        attrs=attrs,
    )


@dataclass(frozen=True, slots=True)
class DecodedLogBatch:
    """An agent's batch: its (checked) agent id, ``batch_seq`` (0 = none) and lines."""

    agent_id: str
    batch_seq: int
    batch: LogBatch


def decode_log_batch(
    raw: bytes, now_ms: int, check_agent_id: Callable[[str], str] = str
) -> DecodedLogBatch:
    """Decode an encoded ``LogBatch``; ``check_agent_id`` validates its agent id (and
    raises). Raises ``BadDataError`` for bytes that are not a ``LogBatch``."""
    try:
        msg = pb.LogBatch.FromString(raw)
    except DecodeError as exc:
        raise BadDataError(f"cannot decode log batch: {exc}") from exc
    agent_id = check_agent_id(msg.agent_id)
    return DecodedLogBatch(agent_id, msg.batch_seq, log_batch_from_pb(msg, agent_id, now_ms))


@dataclass(slots=True)
class _Totals:
    accepted: int = 0
    batches: int = 0
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class _Known:
    """After this stream's append of ``agent_id``'s batch ``seq`` was accepted, the
    store's last sequence number of the agent is ``seq`` — while ``mark`` is still the
    agent's latest append (no other call appended for it since)."""

    agent_id: str
    mark: int
    seq: int


class LogIngest:
    """``SendLogs`` and ``StreamLogs`` over a :class:`LogAppender` (``None``: both answer
    UNAVAILABLE). ``limiter`` is shared with the other append RPCs: decoding a batch and
    offering lines to the store each hold one slot. ``on_batch(agent_id)`` is called for
    every decoded batch (the node registry's last-seen time). A ``StreamLogs`` call that
    fails is read to its end (for up to ``drain_s``) before its status is sent (see
    :func:`_drain`). Loop-affine.

    Consecutive batches of one agent in a ``StreamLogs`` call are offered to the store
    as one append of up to ``_GROUP_LINES`` lines under the dedup key of the last one
    (one WAL record and one dedup entry instead of ten). That is what appending them one
    by one does only when the store's last sequence number of the agent is below the
    first: so a group is merged only after this call's previous append for the agent was
    accepted (its sequence number is then the store's) and no other call has appended
    for the agent since (``_marks``); otherwise its batches go one by one.
    """

    def __init__(
        self,
        appender: LogAppender | None,
        *,
        limiter: InflightLimiter,
        check_agent_id: Callable[[str], str],
        authenticator: Authenticator | None = None,
        overload_wait_s: float = 5.0,
        drain_s: float = 5.0,
        on_batch: Callable[[str], None] | None = None,
    ) -> None:
        self._logs = appender
        self._limiter = limiter
        self._check = check_agent_id
        self._auth = authenticator
        self._wait_s = overload_wait_s
        self._drain_s = drain_s
        self._on_batch = on_batch
        self._numbers = itertools.count(1)
        #: agent id -> number of the latest offer of its sequenced lines (bounded, LRU).
        self._marks: dict[str, int] = {}
        #: Offers the store refused as overloaded and that were made again.
        self.held = 0
        #: Appends made to the store (one per batch, or per group of a stream's batches).
        self.appends = 0
        #: Decoded lines that streams hold in groups not yet offered to the store.
        self._buffered = 0
        #: How long a group waits for its stream's next batch (seconds).
        self.group_wait_s = _GROUP_WAIT_S

    def _decode(self, raw: bytes) -> DecodedLogBatch:
        if self._logs is None:
            raise UnavailableError("cannot accept logs: no log store is configured")
        with self._limiter:
            got = decode_log_batch(raw, int(time.time() * 1000), self._check)
        if self._on_batch is not None:
            self._on_batch(got.agent_id)
        return got

    def _mark(self, agent_id: str) -> int:
        mark = next(self._numbers)
        self._marks.pop(agent_id, None)
        self._marks[agent_id] = mark
        if len(self._marks) > _MAX_MARKS:
            del self._marks[next(iter(self._marks))]
        return mark

    async def _offer(
        self,
        agent_id: str,
        batch: LogBatch,
        seq: int,
        context: grpc.aio.ServicerContext,
        expect: int | None = None,
    ) -> tuple[LogAppendResult, int] | None:
        """Append, holding the batch while the store is overloaded (module docstring);
        returns the result and the mark this append took. With ``expect``, gives up
        (``None``) as soon as the agent's latest mark is another one."""
        assert self._logs is not None
        dedup = DedupKey(agent_id, seq) if seq else None
        loop = asyncio.get_running_loop()
        # Not past the client's deadline: a refusal with a retry hint tells the agent
        # more than DEADLINE_EXCEEDED would.
        client_left = context.time_remaining()
        wait_s = self._wait_s
        if client_left is not None:
            wait_s = min(wait_s, client_left - _DEADLINE_MARGIN_S)
        deadline = loop.time() + wait_s
        pause = _FIRST_PAUSE_S
        with self._limiter:
            while True:
                if expect is not None and self._marks.get(agent_id) != expect:
                    return None
                mark = self._mark(agent_id) if seq else 0
                try:
                    result = await run_to_completion(
                        self._logs.append(batch, source=agent_id, dedup=dedup)
                    )
                    self.appends += 1
                    return result, mark
                except OverloadedError as exc:
                    left = deadline - loop.time()
                    if left < pause or exc.retry_after_s > self._wait_s:
                        raise
                if expect is not None:
                    expect = mark  # a refused offer changes nothing in the store
                self.held += 1
                await asyncio.sleep(pause)
                pause = min(2 * pause, _MAX_PAUSE_S)

    async def send(self, raw: bytes, context: grpc.aio.ServicerContext) -> pb.SendLogsResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
            got = self._decode(raw)
            if len(got.batch) == 0:
                return pb.SendLogsResponse(accepted=0, duplicate=False)
            offered = await self._offer(got.agent_id, got.batch, got.batch_seq, context)
            assert offered is not None
            result = offered[0]
            return pb.SendLogsResponse(accepted=result.accepted, duplicate=result.duplicate)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)

    async def stream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> pb.StreamLogsResponse:
        try:
            authorize(self._auth, context, Scope.WRITE)
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await abort(context, exc)
        totals = _Totals()
        known: _Known | None = None
        group: list[DecodedLogBatch] = []
        lines = 0  # in ``group``, counted in ``self._buffered``

        async def flush() -> None:
            nonlocal known, group, lines
            taken, group = group, []
            self._buffered -= lines
            lines = 0
            known = await self._flush(taken, known, totals, context)

        upcoming: asyncio.Future[bytes | None] | None = None
        try:
            messages = request_iterator.__aiter__()
            while True:
                if group:
                    # A group waits for the next batch only briefly: the lines of a
                    # slow stream reach the store (and live tail) without waiting for
                    # batches that are not on their way yet.
                    upcoming = asyncio.ensure_future(anext(messages, None))
                    done, _ = await asyncio.wait((upcoming,), timeout=self.group_wait_s)
                    if not done:
                        await flush()
                    raw = await upcoming
                else:
                    raw = await anext(messages, None)
                if raw is None:
                    break
                got = self._decode(raw)
                if group and not _joins(group[-1], got, lines):
                    await flush()
                group.append(got)
                lines += len(got.batch)
                self._buffered += len(got.batch)
                if lines >= _GROUP_LINES or self._buffered > _MAX_BUFFERED_LINES:
                    await flush()
            if group:
                await flush()
            return pb.StreamLogsResponse(
                accepted=totals.accepted, batches=totals.batches, duplicates=totals.duplicates
            )
        except Exception as exc:  # noqa: BLE001 (every error becomes a status)
            await _drain(request_iterator, self._drain_s, upcoming)
            await abort(context, exc)
        finally:
            self._buffered -= lines
            if upcoming is not None and not upcoming.done():
                upcoming.cancel()

    async def _flush(
        self,
        group: list[DecodedLogBatch],
        known: _Known | None,
        totals: _Totals,
        context: grpc.aio.ServicerContext,
    ) -> _Known | None:
        """Append ``group`` (one agent; sequence numbers all 0 or increasing); returns
        what this stream then knows of the store's state (see :class:`_Known`)."""
        totals.batches += len(group)
        work = [g for g in group if len(g.batch)]
        if not work:
            return known
        agent_id = work[0].agent_id
        if work[0].batch_seq == 0:  # no dedup keys: one append is exact
            offered = await self._offer(
                agent_id, LogBatch.concat([w.batch for w in work]), 0, context
            )
            assert offered is not None
            totals.accepted += offered[0].accepted
            return known
        i = 0
        while i < len(work):
            seq = work[i].batch_seq
            if (
                i + 1 < len(work)
                and known is not None
                and known.agent_id == agent_id
                and known.seq < seq
            ):
                rest = work[i:]
                last = rest[-1].batch_seq
                offered = await self._offer(
                    agent_id, LogBatch.concat([w.batch for w in rest]), last, context, known.mark
                )
                if offered is not None:
                    result, mark = offered
                    totals.accepted += result.accepted
                    if result.duplicate:  # not expected: the store was ahead after all
                        totals.duplicates += len(rest)
                        return None
                    return _Known(agent_id, mark, last)
            offered = await self._offer(agent_id, work[i].batch, seq, context)
            assert offered is not None
            result, mark = offered
            totals.accepted += result.accepted
            totals.duplicates += int(result.duplicate)
            known = None if result.duplicate else _Known(agent_id, mark, seq)
            i += 1
        return known


def _joins(last: DecodedLogBatch, got: DecodedLogBatch, lines: int) -> bool:
    """Whether ``got`` may join the group that ends with ``last`` and holds ``lines``."""
    if got.agent_id != last.agent_id or lines + len(got.batch) > _GROUP_LINES:
        return False
    return got.batch_seq > last.batch_seq if last.batch_seq else got.batch_seq == 0


async def _drain(
    request_iterator: AsyncIterator[bytes],
    limit_s: float,
    pending: asyncio.Future[bytes | None] | None = None,
) -> None:
    """Read and drop what the client still sends (undecoded), for up to ``limit_s``;
    ``pending``: a read already under way (``None`` at the end of the stream).

    When a client-streaming call ends before the client half-closed, the client's next
    write fails, and the grpc.aio client then reports ``INTERNAL: Internal error from
    Core`` instead of the status the server sent (grpc/grpc#36066; grpcio 1.85): an
    agent would not see ``RESOURCE_EXHAUSTED`` and its ``retry-after-ms`` hint.
    """
    with contextlib.suppress(Exception):
        async with asyncio.timeout(limit_s):
            if pending is not None and await pending is None:
                return
            async for _ in request_iterator:
                pass
