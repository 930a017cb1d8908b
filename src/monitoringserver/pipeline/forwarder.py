"""Forwarding: every acknowledged sample is remote-written to one receiver, through a
disk-backed queue, without loss across receiver outages and server restarts.

Path: the metric writer calls :meth:`Forwarder.offer` with each acknowledged batch (a
subscriber hook); batches wait in a bounded memory buffer (``max_buffered_samples``;
beyond it they are dropped and counted) for at most ``flush_interval_s``; the flusher
encodes them into remote-write requests of at most ``max_samples_per_request`` samples
and appends them to the :class:`DiskQueue`; the sender posts the oldest request and
acknowledges it only after a 2xx. 429/5xx/connection errors are retried with
exponential backoff (``min_backoff_s`` doubling up to ``max_backoff_s``, or the
receiver's ``Retry-After``); other 4xx drop that request (counted). The queue is bounded
by ``max_queue_bytes`` (oldest requests dropped, counted).

Guarantee: at least once; exactly once unless the server dies between a 2xx and the
position update (then that one request is sent again), or by ``kill -9`` within the
flush interval (those buffered samples were acknowledged but not yet queued; they remain
in the local store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from monitoringserver.backends.remote_write_out import (
    RemoteWriteClient,
    SendOutcome,
    encode_write_request,
)
from monitoringserver.errors import ConfigError, MonitoringError
from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.disk_queue import DiskQueue

__all__ = ["ForwardOptions", "Forwarder", "build_forwarder", "forward_service"]

log = logging.getLogger(__name__)

_COUNT = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    """The ``[forward]`` section. Durations are seconds, sizes bytes."""

    #: Receiver URL (``http://vm:8428/api/v1/write``); empty = no forwarding.
    url: str = ""
    bearer_token: str = ""
    basic_auth_username: str = ""
    basic_auth_password: str = ""
    #: Queue directory; empty = ``<data-dir>/forward``.
    queue_dir: str = ""
    max_queue_bytes: int = 1 << 30
    segment_bytes: int = 16 << 20
    #: fsync queue segments and the read position (slower; survives power loss).
    fsync: bool = False
    max_samples_per_request: int = 5_000
    max_buffered_samples: int = 1_000_000
    flush_interval_s: float = 0.2
    min_backoff_s: float = 0.1
    max_backoff_s: float = 30.0
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        for name in ("max_queue_bytes", "segment_bytes", "max_samples_per_request",
                     "max_buffered_samples"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ConfigError(f"cannot accept forward option {name}: must be positive")
        for name in ("flush_interval_s", "min_backoff_s", "max_backoff_s", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"cannot accept forward option {name}: must be positive")
        if self.max_backoff_s < self.min_backoff_s:
            raise ConfigError("cannot accept forward option max_backoff_s: below min_backoff_s")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"cannot accept forward option url={self.url!r}: need http(s)://")


class _Metrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        reg = registry or CollectorRegistry()
        self.samples = Counter(
            "monitoring_forward_samples",
            "Samples forwarded by remote write, by outcome (sent, dropped_4xx, dropped_buffer).",
            ["outcome"],
            registry=reg,
        )
        self.requests_dropped = Counter(
            "monitoring_forward_dropped_requests",
            "Remote-write requests dropped, by reason (rejected = 4xx, queue_full).",
            ["reason"],
            registry=reg,
        )
        self.retries = Counter(
            "monitoring_forward_retries", "Remote-write sends retried.", registry=reg
        )
        self.queue_bytes = Gauge(
            "monitoring_forward_queue_bytes", "Bytes waiting in the forward queue.", registry=reg
        )


class Forwarder:
    """Owns the buffer, the flusher and the sender. One event loop."""

    def __init__(
        self,
        queue: DiskQueue,
        client: RemoteWriteClient,
        options: ForwardOptions,
        *,
        registry: CollectorRegistry | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.queue = queue
        self.client = client
        self.options = options
        self.metrics = _Metrics(registry)
        self._sleep = sleep
        self._pending: list[SampleBatch] = []
        self._buffered = 0
        self._wake = asyncio.Event()
        self._queued = asyncio.Event()
        self._stop = asyncio.Event()
        self._dropped_seen = queue.dropped_records
        self._retry_after: float | None = None
        #: Consecutive sends that asked for a retry (0 after any success); for health.
        self.failing_sends = 0
        self.last_error = ""
        self._last_error = ""

    def offer(self, batch: SampleBatch) -> None:
        """The subscriber hook: buffer ``batch`` (dropped and counted when the buffer is full)."""
        n = len(batch)
        if not n:
            return
        if self._buffered + n > self.options.max_buffered_samples:
            self.metrics.samples.labels("dropped_buffer").inc(n)
            return
        self._pending.append(batch)
        self._buffered += n
        if self._buffered >= self.options.max_samples_per_request:
            self._wake.set()

    def _encode_and_put(self, batches: list[SampleBatch]) -> int:
        merged = SampleBatch.concat(batches)
        step = self.options.max_samples_per_request
        for start in range(0, len(merged), step):
            part = merged if len(merged) <= step else _slice(merged, start, start + step)
            self.queue.put(_COUNT.pack(len(part)) + encode_write_request(part))
        return len(merged)

    async def flush(self) -> int:
        """Move buffered samples to the disk queue now; return how many."""
        taken, self._pending, self._buffered = self._pending, [], 0
        if not taken:
            return 0
        n = await asyncio.to_thread(self._encode_and_put, taken)
        self._count_queue_drops()
        self._queued.set()
        return n

    def _count_queue_drops(self) -> None:
        dropped = self.queue.dropped_records
        if dropped > self._dropped_seen:
            self.metrics.requests_dropped.labels("queue_full").inc(dropped - self._dropped_seen)
            self._dropped_seen = dropped
        self.metrics.queue_bytes.set(self.queue.pending_bytes())

    async def send_once(self) -> SendOutcome | None:
        """Send the oldest queued request; ``None`` when the queue is empty."""
        record = await asyncio.to_thread(self.queue.peek)
        if record is None:
            return None
        (count,) = _COUNT.unpack_from(record)
        result = await self.client.send(record[_COUNT.size :])
        if result.outcome is SendOutcome.OK:
            await asyncio.to_thread(self.queue.ack)
            self.metrics.samples.labels("sent").inc(count)
            self.failing_sends = 0
        elif result.outcome is SendOutcome.DROP:
            await asyncio.to_thread(self.queue.ack)
            self.metrics.samples.labels("dropped_4xx").inc(count)
            self.metrics.requests_dropped.labels("rejected").inc()
            log.warning(
                "remote write receiver %s refused a request (HTTP %d): %s; dropped %d samples",
                self.client.url, result.status, result.detail, count,
            )  # fmt: skip
        else:
            self.metrics.retries.inc()
            self._retry_after = result.retry_after_s
            self._last_error = f"HTTP {result.status} {result.detail}".strip()
            self.failing_sends += 1
            self.last_error = self._last_error
        self._count_queue_drops()
        return result.outcome

    async def _flusher(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.options.flush_interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except MonitoringError:
                log.exception("cannot queue samples for forwarding")
        await self.flush()

    async def _sender(self) -> None:
        backoff = self.options.min_backoff_s
        while not self._stop.is_set():
            self._queued.clear()
            try:
                outcome = await self.send_once()
            except MonitoringError:
                log.exception("cannot read the forward queue")
                outcome = SendOutcome.RETRY
            if outcome is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queued.wait(), timeout=1.0)
            elif outcome is SendOutcome.RETRY:
                delay = self._retry_after or backoff
                log.debug("remote write failed (%s); retrying in %.1f s", self._last_error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
                backoff = min(backoff * 2, self.options.max_backoff_s)
            else:
                backoff = self.options.min_backoff_s
                self._retry_after = None

    async def run(self) -> None:
        """Flush and send until :meth:`stop`; then flush what is buffered and close."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._flusher(), name="forward-flush")
                tg.create_task(self._sender(), name="forward-send")
        finally:
            await self.client.aclose()
            self.queue.close()

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._queued.set()


def _slice(batch: SampleBatch, a: int, b: int) -> SampleBatch:
    return SampleBatch(batch.series, batch.series_idx[a:b], batch.ts_ms[a:b], batch.values[a:b])


def build_forwarder(server: Any) -> Forwarder | None:
    """The forwarder per ``server.config.forward`` subscribed to ``server.store.writer``;
    ``None`` when no ``forward.url`` is configured."""
    found = getattr(server.config, "forward", None)
    options = found if isinstance(found, ForwardOptions) else ForwardOptions()
    if not options.url:
        return None
    queue = DiskQueue(
        Path(options.queue_dir) if options.queue_dir else Path(server.data_dir) / "forward",
        max_bytes=options.max_queue_bytes,
        segment_bytes=options.segment_bytes,
        fsync=options.fsync,
    )
    basic = (
        (options.basic_auth_username, options.basic_auth_password)
        if options.basic_auth_username
        else None
    )
    client = RemoteWriteClient(
        options.url,
        bearer_token=options.bearer_token,
        basic_auth=basic,
        timeout_s=options.timeout_s,
    )
    forwarder = Forwarder(queue, client, options, registry=server.registry)
    server.store.writer.subscribe(forwarder.offer)
    return forwarder


def forward_service(
    server: Any, forwarder: Forwarder | None = None
) -> tuple[str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]]:
    """``(name, run, stop)`` for a ``server.Service``, per ``config.forward``.

    Uses ``forwarder`` or :func:`build_forwarder`; without a ``forward.url`` it idles until
    stopped.
    """
    forwarder = forwarder or build_forwarder(server)
    if forwarder is None:
        stop = asyncio.Event()

        async def idle() -> None:
            await stop.wait()

        async def stop_idle() -> None:
            stop.set()

        return "forward", idle, stop_idle
    return "forward", forwarder.run, forwarder.stop
