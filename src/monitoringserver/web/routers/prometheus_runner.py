"""Runs PromQL queries off the event loop: a bounded thread pool, a slot gate, a timeout.

A query may first be tried inline, on the loop itself, by a call that answers only when
its cost is small and bounded (``Engine``'s ``inline`` bounds: series and samples from
memory, about a millisecond at most) and returns ``None`` otherwise; handing a query to
a thread and waking the loop when it ends costs more than such a query.

:class:`QueryRunner` gives each query one of ``max_concurrent`` slots; a query that finds
none free waits for one, and that wait counts against its timeout. The query itself runs
in the runner's own pool of ``max_concurrent`` threads (queries never queue behind other
blocking work on the loop's default executor) and the loop is woken once, when it ends.

A query that times out (or whose request is cancelled) gets its ``cancel`` event set and
keeps its slot until its thread really ends, so abandoned queries cannot pile up.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

from monitoringserver.errors import QueryTimeoutError

__all__ = ["QueryRunner"]

T = TypeVar("T")

#: A query: takes its cancel event and the seconds left of its timeout.
QueryCall = Callable[[threading.Event, float], T]


class QueryRunner(Generic[T]):
    """At most ``max_concurrent`` queries at once, each in a worker thread.

    The pool's threads start on demand and exit when the runner is garbage collected.
    """

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("cannot create query runner: max_concurrent must be at least 1")
        self._gate = asyncio.Semaphore(max_concurrent)
        self._pool = ThreadPoolExecutor(max_concurrent, thread_name_prefix="promql")

    async def run(
        self,
        call: QueryCall[T],
        timeout_s: float,
        inline: Callable[[], T | None] | None = None,
    ) -> tuple[T, float]:
        """``call``'s result and the seconds it waited for a slot.

        ``inline``: tried first, on the loop, when a slot is free (it must return
        ``None`` at once, having done little, unless its work is bounded and small);
        its result, when not ``None``, is the answer.

        Raises :class:`QueryTimeoutError` when no slot frees up or the query does not
        finish within ``timeout_s``; the exceptions of ``call`` and ``inline``
        propagate unchanged.
        """
        if inline is not None and not self._gate.locked():
            # A free slot, held for the call without acquiring it: nothing else runs
            # on the loop meanwhile.
            answer = inline()
            if answer is not None:
                return answer, 0.0
        waited = 0.0
        if self._gate.locked():
            queued = time.perf_counter()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._gate.acquire()
            except TimeoutError as exc:
                raise QueryTimeoutError(
                    f"cannot execute query: no query slot free within {timeout_s:g}s"
                ) from exc
            waited = time.perf_counter() - queued
        else:
            await self._gate.acquire()  # free: returns at once
        remaining = max(0.001, timeout_s - waited)
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        try:
            ctx = contextvars.copy_context()
            job = self._pool.submit(ctx.run, call, cancel, remaining)
        except BaseException:
            self._gate.release()
            raise
        job.add_done_callback(_Notify(loop, done, self._gate))
        try:
            async with asyncio.timeout(remaining):
                return await done, waited
        except TimeoutError as exc:
            cancel.set()
            raise QueryTimeoutError(
                f"cannot execute query: query timed out after {timeout_s:g}s"
            ) from exc
        except asyncio.CancelledError:
            cancel.set()
            raise


class _Notify(Generic[T]):
    """Called in the worker thread when the query ends: wakes the loop once, which frees
    the slot and hands the outcome to the waiting request (unless it gave up)."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[T], gate: asyncio.Semaphore
    ) -> None:
        self.loop = loop
        self.done = done
        self.gate = gate

    def __call__(self, job: Future[T]) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            self.loop.call_soon_threadsafe(self.settle, job)

    def settle(self, job: Future[T]) -> None:
        self.gate.release()
        if self.done.done():  # timed out or cancelled meanwhile
            return
        exc = job.exception()
        if exc is not None:
            self.done.set_exception(exc)
        else:
            self.done.set_result(job.result())
