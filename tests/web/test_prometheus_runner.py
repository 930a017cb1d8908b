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


def _thread_name(cancel: threading.Event, remaining: float) -> str:
    return threading.current_thread().name


@pytest.mark.parametrize(
    ("inline_answer", "ran_on"),
    [("inline", "inline"), (None, "promql"), (BadDataError("cannot parse query: x"), "")],
)
async def test_an_inline_answer_is_used_else_the_thread_runs(
    inline_answer: str | Exception | None, ran_on: str
) -> None:
    runner: QueryRunner[str] = QueryRunner(1)
    loop_thread = threading.current_thread().name

    def inline() -> str | None:
        assert threading.current_thread().name == loop_thread  # on the loop itself
        if isinstance(inline_answer, Exception):
            raise inline_answer
        return inline_answer

    if isinstance(inline_answer, Exception):
        with pytest.raises(BadDataError, match="x"):
            await runner.run(_thread_name, 5.0, inline)
        return
    answer, waited = await runner.run(_thread_name, 5.0, inline)
    assert answer.startswith(ran_on)
    assert waited == 0.0


async def test_inline_is_not_tried_while_every_slot_is_taken() -> None:
    runner: QueryRunner[str] = QueryRunner(1)
    started, release = threading.Event(), threading.Event()

    def blocking(cancel: threading.Event, remaining: float) -> str:
        started.set()
        release.wait(10)
        return "first"

    first = asyncio.create_task(runner.run(blocking, 10.0))
    await _wait(started)
    tried: list[bool] = []

    def inline() -> str | None:
        tried.append(True)
        return "inline"

    second = asyncio.create_task(runner.run(_thread_name, 10.0, inline))
    await asyncio.sleep(0)
    assert not second.done()
    release.set()
    assert (await first)[0] == "first"
    answer, _ = await second
    assert answer.startswith("promql")
    assert tried == []
