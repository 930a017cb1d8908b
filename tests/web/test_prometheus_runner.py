"""QueryRunner: slots, timeouts, cancellation and error propagation of off-loop queries."""

from __future__ import annotations

import asyncio
import threading

import pytest

from monitoringserver.errors import BadDataError, QueryTimeoutError
from monitoringserver.web.routers.prometheus_runner import QueryRunner


async def _wait(check: threading.Event, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check.is_set():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.005)


async def test_result_comes_back_with_no_wait() -> None:
    runner: QueryRunner[str] = QueryRunner(2)
    seen: list[float] = []

    def call(cancel: threading.Event, remaining: float) -> str:
        seen.append(remaining)
        return threading.current_thread().name

    name, waited = await runner.run(call, 5.0)
    assert name.startswith("promql")
    assert waited == 0.0
    assert 0 < seen[0] <= 5.0


async def test_errors_of_the_query_propagate() -> None:
    runner: QueryRunner[int] = QueryRunner(1)

    def call(cancel: threading.Event, remaining: float) -> int:
        raise BadDataError("cannot parse query: nope")

    with pytest.raises(BadDataError, match="nope"):
        await runner.run(call, 5.0)
    # The slot came back.
    assert (await runner.run(lambda c, r: 7, 5.0))[0] == 7


async def test_at_most_max_concurrent_run_and_the_wait_is_reported() -> None:
    runner: QueryRunner[int] = QueryRunner(2)
    release = threading.Event()
    lock = threading.Lock()
    running = [0, 0]  # now, peak

    def call(cancel: threading.Event, remaining: float) -> int:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        return 1

    tasks = [asyncio.create_task(runner.run(call, 10.0)) for _ in range(4)]
    await asyncio.sleep(0.05)
    release.set()
    results = await asyncio.gather(*tasks)
    assert [r for r, _ in results] == [1, 1, 1, 1]
    assert running[1] == 2
    assert max(w for _, w in results) > 0


async def test_timeout_sets_cancel_and_keeps_the_slot_until_the_thread_ends() -> None:
    runner: QueryRunner[int] = QueryRunner(1)
    cancelled = threading.Event()
    release = threading.Event()

    def stuck(cancel: threading.Event, remaining: float) -> int:
        cancel.wait(10)
        cancelled.set()
        release.wait(10)
        return 1

    with pytest.raises(QueryTimeoutError, match=r"timed out after 0\.05s"):
        await runner.run(stuck, 0.05)
    await _wait(cancelled)
    with pytest.raises(QueryTimeoutError, match="no query slot free"):
        await runner.run(lambda c, r: 2, 0.05)
    release.set()
    assert (await runner.run(lambda c, r: 3, 10.0))[0] == 3


async def test_a_cancelled_request_cancels_its_query() -> None:
    runner: QueryRunner[int] = QueryRunner(1)
    started, cancelled = threading.Event(), threading.Event()

    def call(cancel: threading.Event, remaining: float) -> int:
        started.set()
        if cancel.wait(10):
            cancelled.set()
        return 1

    task = asyncio.create_task(runner.run(call, 10.0))
    await _wait(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _wait(cancelled)
    assert (await runner.run(lambda c, r: 4, 10.0))[0] == 4


def test_max_concurrent_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        QueryRunner(0)
