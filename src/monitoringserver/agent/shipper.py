"""Delivery to the server: session, live sends, spool and replay, heartbeat, control.

Ordering and exactly-once: a batch is sent live only when the spool is empty;
otherwise (and whenever a live send fails for a retryable reason) it is appended to
the spool as a *self-contained* message and the replay loop sends the spool oldest
first. Every batch keeps its ``batch_seq`` through retries, so the server's
``(agent_id, batch_seq)`` dedup drops repeats.

Failures: ``NOT_FOUND`` (session unknown after a server restart) re-registers and
retries once; ``INVALID_ARGUMENT`` drops the batch (it can never succeed);
``RESOURCE_EXHAUSTED`` waits the server's ``retry-after-ms``; anything else backs off
exponentially (1 s doubling to 60 s, ±50 % jitter). Loop-affine (one event loop).

Spool file I/O (each record is fsynced twice) runs in a worker thread, one operation
at a time per spool (``_spool_lock``), so a slow disk never stalls the event loop:
the control stream, the exposition and, in one process with many agents (the
outage bench), every other agent keep running while a record is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc

from monitoringserver.agent.control import CommandExecutor
from monitoringserver.agent.encode import EncodedBatch, SeriesIds
from monitoringserver.agent.spool import Spool
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc

__all__ = ["DeliveryError", "Shipper", "ShipperOptions"]

_log = logging.getLogger(__name__)
_RETRY_KEY = "retry-after-ms"
_T = TypeVar("_T")


class DeliveryError(Exception):
    """A send failed; ``retryable`` tells whether the batch should be kept."""

    def __init__(self, message: str, *, retryable: bool, retry_after_s: float | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class ShipperOptions:
    target: str
    token: str = ""
    tls: bool = False
    ca_file: Path | None = None
    call_timeout_s: float = 15.0
    backoff_min_s: float = 1.0
    backoff_max_s: float = 60.0
    max_message_bytes: int = 64 * 1024 * 1024


def _classify(exc: grpc.aio.AioRpcError) -> DeliveryError:
    code = exc.code()
    detail = f"{code.name}: {exc.details()}"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return DeliveryError(detail, retryable=False)
    retry_after = None
    for key, value in exc.trailing_metadata() or ():
        if key == _RETRY_KEY:
            try:
                retry_after = int(value) / 1000.0
            except ValueError:
                retry_after = None
    return DeliveryError(detail, retryable=True, retry_after_s=retry_after)


class Shipper:
    def __init__(
        self,
        options: ShipperOptions,
        *,
        agent_id: str,
        node_info: Callable[[], pb.NodeInfo],
        series: SeriesIds,
        spool: Spool,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.options = options
        self.agent_id = agent_id
        self._node_info = node_info
        self._series = series
        self.spool = spool
        self._clock = clock
        self._rng = rng or random.Random()
        self._channel: grpc.aio.Channel | None = None
        self._stub: pb_grpc.NodeAgentStub | None = None
        self._session = ""
        self._known: set[int] = set()
        self._session_lock = asyncio.Lock()
        self._spool_lock = asyncio.Lock()
        self._failures = 0
        self._retry_at = 0.0
        self.wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: The server's latest interval suggestion in seconds (0 = none).
        self.suggested_interval_s = 0.0

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.options.token}"),) if self.options.token else ()

    def stub(self) -> pb_grpc.NodeAgentStub:
        if self._stub is None:
            opts = [
                ("grpc.max_send_message_length", self.options.max_message_bytes),
                ("grpc.max_receive_message_length", self.options.max_message_bytes),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.enable_retries", 0),
                # Our own backoff decides when to retry; keep the channel's short so a
                # returning server is seen within seconds.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 5_000),
                ("grpc.use_local_subchannel_pool", 1),
            ]
            if self.options.tls:
                ca = self.options.ca_file.read_bytes() if self.options.ca_file else None
                creds = grpc.ssl_channel_credentials(root_certificates=ca)
                self._channel = grpc.aio.secure_channel(self.options.target, creds, options=opts)
            else:
                self._channel = grpc.aio.insecure_channel(self.options.target, options=opts)
            self._stub = pb_grpc.NodeAgentStub(self._channel)  # type: ignore[no-untyped-call]
        return self._stub

    async def aclose(self) -> None:
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close()

    # ------------------------------------------------------------ session

    async def session(self) -> str:
        """The current session id, registering first when there is none."""
        async with self._session_lock:
            if not self._session:
                try:
                    resp = await self.stub().Register(
                        pb.RegisterRequest(agent_id=self.agent_id, node=self._node_info()),
                        metadata=self.metadata,
                        timeout=self.options.call_timeout_s,
                    )
                except grpc.aio.AioRpcError as exc:
                    raise _classify(exc) from exc
                self._session = resp.session_id
                self._known = set()
                self.suggested_interval_s = resp.suggested_interval_s
                _log.info("registered with %s as %s", self.options.target, self.agent_id)
            return self._session

    def _drop_session(self, session: str) -> None:
        if self._session == session:
            self._session = ""

    async def _send(self, msg: pb.MetricsBatch) -> pb.SendMetricsResponse:
        try:
            resp: pb.SendMetricsResponse = await self.stub().SendMetrics(
                msg, metadata=self.metadata, timeout=self.options.call_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise _classify(exc) from exc
        if resp.suggested_interval_s:
            self.suggested_interval_s = resp.suggested_interval_s
        return resp

    async def _send_live(self, batch: EncodedBatch) -> None:
        for attempt in (1, 2):
            session = await self.session()
            msg = self._series.message(
                batch, agent_id=self.agent_id, session_id=session, known=self._known
            )
            try:
                await self._send(msg)
            except DeliveryError as exc:
                if attempt == 1 and str(exc).startswith("NOT_FOUND"):
                    self._drop_session(session)
                    continue
                raise
            self._known.update(batch.ids)
            return

    # ------------------------------------------------------------ delivery

    def _note_failure(self, exc: DeliveryError) -> None:
        self._failures += 1
        if exc.retry_after_s is not None:
            delay = exc.retry_after_s
        else:
            base = min(
                self.options.backoff_max_s,
                self.options.backoff_min_s * 2 ** min(self._failures - 1, 16),
            )
            delay = base * (0.5 + self._rng.random())
        self._retry_at = self._clock() + delay

    def _log_failure(self, fmt: str, seq: int, exc: DeliveryError) -> None:
        """Warn on the first failure of a streak; later ones only at debug level."""
        level = logging.WARNING if self._failures == 0 else logging.DEBUG
        _log.log(level, fmt, seq, exc)

    def _note_success(self) -> None:
        if self._failures:
            _log.info("server reachable again after %d failed attempts", self._failures)
        self._failures = 0
        self._retry_at = 0.0

    @property
    def retry_in_s(self) -> float:
        return max(0.0, self._retry_at - self._clock())

    async def deliver(self, batch: EncodedBatch) -> str:
        """Send or spool one batch. Returns ``ok``, ``spooled`` or ``dropped: <why>``."""
        if len(self.spool) == 0 and self.retry_in_s == 0:
            try:
                await self._send_live(batch)
            except DeliveryError as exc:
                if not exc.retryable:
                    _log.error("server refused batch %d: %s", batch.batch_seq, exc)
                    return f"dropped: {exc}"
                self._log_failure("cannot deliver batch %d, spooling: %s", batch.batch_seq, exc)
                self._note_failure(exc)
            else:
                self._note_success()
                return "ok"
        msg = self._series.message(batch, agent_id=self.agent_id, known=None)
        data = msg.SerializeToString()
        await self._spool_io(lambda: self.spool.put(data))
        self.wake.set()
        return "spooled"

    async def _spool_io(self, op: Callable[[], _T]) -> _T:
        """Run one spool operation in a worker thread, one at a time."""
        async with self._spool_lock:
            return await asyncio.to_thread(op)

    async def drain(self) -> int:
        """Send spooled batches oldest first until empty or a failure; returns how many."""
        sent = 0
        while (data := await self._spool_io(self.spool.peek)) is not None:
            msg = pb.MetricsBatch.FromString(data)
            try:
                await self._send(msg)
            except DeliveryError as exc:
                if exc.retryable:
                    self._log_failure("cannot replay spooled batch %d: %s", msg.batch_seq, exc)
                    self._note_failure(exc)
                    return sent
                _log.error("server refused a spooled batch, dropping it: %s", exc)
            else:
                self._note_success()
                sent += 1
            await self._spool_io(self.spool.pop)
        return sent

    async def _channel_ready(self) -> None:
        """Return once the channel is connected (it keeps trying, 0.2-5 s apart)."""
        self.stub()
        channel = self._channel
        assert channel is not None
        state = channel.get_state(try_to_connect=True)
        while state != grpc.ChannelConnectivity.READY:
            await channel.wait_for_state_change(state)
            state = channel.get_state(try_to_connect=True)

    async def _wait_backoff(self, wait_s: float) -> None:
        """Sleep out the backoff, but end it early when the server is reachable again
        (so a long outage does not leave the spool waiting for a 60 s backoff)."""
        ready = asyncio.ensure_future(self._channel_ready())
        try:
            done, _ = await asyncio.wait({ready}, timeout=wait_s)
        finally:
            ready.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready
        if done:
            self._retry_at = 0.0

    async def replay_loop(self) -> None:
        """Drain the spool whenever it has data and the backoff allows."""
        while True:
            if len(self.spool) == 0:
                self.wake.clear()
                await self.wake.wait()
                continue
            wait = self.retry_in_s
            if wait > 0:
                await self._wait_backoff(wait)
                if self.retry_in_s > 0:
                    continue
            n = await self.drain()
            if n:
                _log.info("replayed %d spooled batches, %d left", n, len(self.spool))

    # ------------------------------------------------------------ heartbeat, control

    async def heartbeat(self, stats: pb.AgentStats) -> None:
        session = await self.session()
        try:
            resp = await self.stub().Heartbeat(
                pb.HeartbeatRequest(agent_id=self.agent_id, session_id=session, stats=stats),
                metadata=self.metadata,
                timeout=self.options.call_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                self._drop_session(session)
            raise _classify(exc) from exc
        if resp.suggested_interval_s:
            self.suggested_interval_s = resp.suggested_interval_s

    async def control_loop(self, executor: CommandExecutor) -> None:
        """Keep the Control stream open; run each command and report its result."""
        failures = 0
        while True:
            try:
                session = await self.session()
                stream = self.stub().Control(
                    pb.ControlSubscribe(agent_id=self.agent_id, session_id=session),
                    metadata=self.metadata,
                )
                async for cmd in stream:
                    failures = 0
                    task = asyncio.get_running_loop().create_task(self._run_command(executor, cmd))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                failures = 0
            except (grpc.aio.AioRpcError, DeliveryError) as exc:
                if (
                    isinstance(exc, grpc.aio.AioRpcError)
                    and exc.code() == grpc.StatusCode.NOT_FOUND
                ):
                    self._drop_session(self._session)
                _log.debug("control stream ended: %s", exc)
                failures += 1
            delay = min(
                self.options.backoff_max_s, self.options.backoff_min_s * 2 ** min(failures, 6)
            )
            await asyncio.sleep(delay * (0.5 + self._rng.random()))

    async def _run_command(self, executor: CommandExecutor, cmd: pb.ControlCommand) -> None:
        result = await executor.execute(cmd.kind, dict(cmd.args))
        _log.info(
            "command %s %s: ok=%s status=%d",
            cmd.kind,
            dict(cmd.args),
            result.ok,
            result.exit_status,
        )
        try:
            await self.stub().ReportResult(
                pb.CommandResult(
                    agent_id=self.agent_id,
                    command_id=cmd.command_id,
                    ok=result.ok,
                    exit_status=result.exit_status,
                    output=result.output,
                    error=result.error,
                ),
                metadata=self.metadata,
                timeout=self.options.call_timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            _log.warning("cannot report result of command %s: %s", cmd.command_id, exc.code())
