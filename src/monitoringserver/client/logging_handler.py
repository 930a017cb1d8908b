"""A ``logging.Handler`` that ships an application's logs to monitoringserver.

Non-blocking and safe: :meth:`emit` only formats the record and puts it on a bounded
queue (when full the record is dropped and counted in :attr:`dropped`); a daemon thread
sends batches (``batch_size`` records or every ``flush_interval_s``) as seed-002 JSON to
``POST /api/v1/logs`` with a bearer token, retrying a failed batch with backoff while
new records keep queueing. Nothing here ever raises into the application.

    handler = MonitoringLogHandler("http://monitor:9940", token="...", server_id="billing")
    logging.getLogger().addHandler(handler)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import httpx

__all__ = ["MonitoringLogHandler"]

_LEVELS = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "critical",
}


class MonitoringLogHandler(logging.Handler):
    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        server_id: str = "",
        level: int = logging.NOTSET,
        batch_size: int = 200,
        flush_interval_s: float = 1.0,
        max_queue: int = 10_000,
        timeout_s: float = 5.0,
        max_backoff_s: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(level)
        self.server_id = server_id or _hostname()
        self.dropped = 0
        self.sent = 0
        self.failures = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(max_queue)
        self._batch_size = batch_size
        self._flush_s = flush_interval_s
        self._max_backoff = max_backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout_s, transport=transport
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="monitoring-log-handler", daemon=True
        )
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            item = {
                "server_id": self.server_id,
                "timestamp": record.created,
                "level": _LEVELS.get(record.levelno, record.levelname.lower()),
                "logger": record.name,
                "message": self.format(record),
                "attrs": {
                    "module": record.module,
                    "funcName": record.funcName,
                    "lineno": str(record.lineno),
                },
            }
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
        except Exception:  # noqa: BLE001 (a log handler must never raise)
            self.handleError(record)

    def _take(self, first: dict[str, Any] | None) -> list[dict[str, Any]]:
        batch = [first] if first is not None else []
        deadline = time.monotonic() + self._flush_s
        while len(batch) < self._batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                item = self._queue.get(timeout=remaining)
            except queue.Empty:
                break
            if item is None:
                self._stop.set()
                break
            batch.append(item)
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> bool:
        try:
            resp = self._client.post("/api/v1/logs", json=batch)
        except httpx.HTTPError:
            return False
        if resp.status_code < 300:
            self.sent += len(batch)
            return True
        if 400 <= resp.status_code < 500 and resp.status_code != 429:
            self.dropped += len(batch)  # the server will never take it
            return True
        return False

    def _run(self) -> None:
        backoff = 0.5
        pending: list[dict[str, Any]] = []
        while True:
            if not pending:
                try:
                    first = self._queue.get(timeout=0.5)
                except queue.Empty:
                    if self._stop.is_set():
                        return
                    continue
                if first is None:
                    self._stop.set()
                pending = self._take(first)
            if pending and not self._send(pending):
                self.failures += 1
                if self._stop.is_set():
                    self.dropped += len(pending)
                    return
                self._stop.wait(backoff)
                backoff = min(self._max_backoff, backoff * 2)
                continue
            pending = []
            backoff = 0.5
            if self._stop.is_set() and self._queue.empty():
                return

    def flush(self, timeout_s: float = 5.0) -> None:
        """Wait (up to ``timeout_s``) until the queue is empty."""
        deadline = time.monotonic() + timeout_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        """Send what is queued (best effort, bounded by the HTTP timeout) and stop."""
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            self._stop.set()
        self._thread.join(timeout=10.0)
        self._client.close()
        super().close()


def _hostname() -> str:
    import socket

    return socket.gethostname()
