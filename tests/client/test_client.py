"""client: the logging handler (batched, non-blocking, never raises) and the push helper."""

from __future__ import annotations

import json
import logging
import threading
import time

import httpx
import pytest

from monitoringserver.client import MetricsPusher, MonitoringLogHandler, PushError


class Recorder:
    def __init__(self, statuses: list[int] | None = None) -> None:
        self.bodies: list[object] = []
        self.headers: list[str] = []
        self.statuses = statuses or []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            status = self.statuses.pop(0) if self.statuses else 200
            if status == 200:
                self.bodies.append(json.loads(request.content))
            self.headers.append(request.headers.get("authorization", ""))
        if status == 0:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(status, json={"status": "success"})


def wait(cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_handler_batches_and_retries() -> None:
    rec = Recorder(statuses=[0, 503])  # down, then overloaded, then fine
    handler = MonitoringLogHandler(
        "http://mon",
        token="tok",
        server_id="app-1",
        flush_interval_s=0.05,
        transport=httpx.MockTransport(rec),
        max_backoff_s=0.05,
    )
    logger = logging.getLogger("test.client.handler")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.warning("disk %s", "full")
        logger.info("second")
        wait(lambda: handler.sent == 2)
    finally:
        logger.removeHandler(handler)
        handler.close()
    lines = [line for body in rec.bodies for line in body]  # type: ignore[attr-defined]
    assert [(x["level"], x["message"], x["server_id"], x["logger"]) for x in lines] == [
        ("warning", "disk full", "app-1", "test.client.handler"),
        ("info", "second", "app-1", "test.client.handler"),
    ]
    assert rec.headers[0] == "Bearer tok"
    assert handler.failures == 2


def test_handler_never_blocks_or_raises() -> None:
    gate = threading.Event()

    def slow(request: httpx.Request) -> httpx.Response:
        gate.wait(10)
        return httpx.Response(200)

    handler = MonitoringLogHandler(
        "http://mon",
        max_queue=2,
        batch_size=1,
        flush_interval_s=0.01,
        transport=httpx.MockTransport(slow),
    )
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m", None, None)
    for _ in range(50):
        handler.emit(record)  # the sender is stuck: a blocking emit would hang here
    # the queue holds 2 and one batch is in flight: the rest is counted, not waited for
    assert handler.dropped >= 40
    bad = logging.LogRecord("x", logging.ERROR, __file__, 1, "%d", ("nope",), None)
    logging.raiseExceptions = False
    try:
        handler.emit(bad)  # formatting fails: handled, not raised
    finally:
        logging.raiseExceptions = True
        gate.set()
        handler.close()


def test_handler_drops_batches_the_server_refuses() -> None:
    handler = MonitoringLogHandler(
        "http://mon", flush_interval_s=0.01, transport=httpx.MockTransport(Recorder([400]))
    )
    handler.emit(logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None))
    wait(lambda: handler.dropped == 1)
    handler.flush()
    handler.close()


def test_push_helper() -> None:
    rec = Recorder(statuses=[200, 422, 0])
    with MetricsPusher(
        "http://mon/", token="t", server_id="app", transport=httpx.MockTransport(rec)
    ) as push:
        push.push(
            {"queue_depth": 3, "disk_io": {"read_iops": 1.5}}, labels={"env": "prod"}, timestamp=10
        )
        with pytest.raises(PushError, match="HTTP 422"):
            push.push({"x": 1})
        assert push.try_push({"x": 1}) is False
    assert rec.bodies == [
        {
            "server_id": "app",
            "timestamp": 10,
            "metrics": {"queue_depth": 3, "disk_io": {"read_iops": 1.5}},
            "labels": {"env": "prod"},
        }
    ]
