"""A bounded publish/subscribe bus for live delivery (log tail, dashboard pushes).

Publishers never block and never wait for subscribers: :meth:`Bus.publish` appends the
item to every subscriber's bounded queue and returns. A subscriber whose queue is full
is a slow consumer: it is dropped at once, and its next :meth:`Subscription.get` raises
:class:`SubscriptionClosed` whose message says why (so the WebSocket handler can tell
its client before closing).

Loop affinity: one event loop. ``publish``, ``subscribe`` and ``get`` run on it;
other threads use :meth:`Bus.publish_threadsafe`.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from monitoringserver.errors import MonitoringError, OverloadedError

__all__ = ["Bus", "BusStats", "Subscription", "SubscriptionClosed"]

T = TypeVar("T")


class SubscriptionClosed(MonitoringError):  # noqa: N818 -- reads as an event, like StopIteration
    """The subscription ended: closed by its owner, by the bus, or dropped as too slow."""

    error_type = "unavailable"


@dataclass(frozen=True, slots=True)
class BusStats:
    subscribers: int
    published: int
    delivered: int
    dropped_subscribers: int


class Subscription(Generic[T]):
    """One consumer's bounded queue. Iterate it, or call :meth:`get`."""

    def __init__(self, bus: Bus[T], maxsize: int, name: str) -> None:
        self._bus = bus
        self.maxsize = maxsize
        self.name = name
        self._items: collections.deque[T] = collections.deque()
        self._ready = asyncio.Event()
        self.closed_reason: str | None = None

    def _offer(self, item: T) -> bool:
        if self.closed_reason is not None:
            return False
        if len(self._items) >= self.maxsize:
            self._close(
                f"cannot deliver to subscriber {self.name!r}: it fell {self.maxsize} items "
                "behind (slow consumer) and was dropped"
            )
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def _close(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self._bus._remove(self)
            self._ready.set()

    def close(self) -> None:
        """Unsubscribe; pending items are discarded."""
        self._items.clear()
        self._close("subscription closed")

    def pending(self) -> int:
        return len(self._items)

    async def get(self) -> T:
        """The next item; raises :class:`SubscriptionClosed` once closed or dropped
        (items queued before a drop are discarded: the consumer has lost data)."""
        while True:
            if self.closed_reason is not None:
                raise SubscriptionClosed(self.closed_reason)
            if self._items:
                return self._items.popleft()
            self._ready.clear()
            await self._ready.wait()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                yield await self.get()
            except SubscriptionClosed:
                return


class Bus(Generic[T]):
    """``max_subscribers`` bounds the fan-out; ``queue_size`` is the default per-subscriber
    queue length (items, e.g. batches)."""

    def __init__(self, *, max_subscribers: int = 1000, queue_size: int = 256) -> None:
        self._subs: dict[int, Subscription[T]] = {}
        self._max = max_subscribers
        self._queue_size = queue_size
        self._published = 0
        self._delivered = 0
        self._dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, *, maxsize: int | None = None, name: str = "") -> Subscription[T]:
        if len(self._subs) >= self._max:
            raise OverloadedError(
                f"cannot subscribe: {self._max} subscribers already", retry_after_s=5.0
            )
        self._loop = asyncio.get_running_loop()
        sub = Subscription(self, maxsize or self._queue_size, name or f"sub-{id(self):x}")
        self._subs[id(sub)] = sub
        return sub

    def _remove(self, sub: Subscription[T]) -> None:
        if self._subs.pop(id(sub), None) is not None and sub.closed_reason != (
            "subscription closed"
        ):
            self._dropped += 1

    def publish(self, item: T) -> int:
        """Offer ``item`` to every subscriber; return how many took it. Never blocks."""
        self._published += 1
        n = 0
        for sub in list(self._subs.values()):
            if sub._offer(item):
                n += 1
        self._delivered += n
        return n

    def publish_threadsafe(self, item: T) -> None:
        """``publish`` from another thread (no-op before anyone subscribed)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.publish, item)

    def close(self) -> None:
        """End every subscription (their ``get`` raises SubscriptionClosed)."""
        for sub in list(self._subs.values()):
            sub._close("the bus is shutting down")

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def stats(self) -> BusStats:
        return BusStats(len(self._subs), self._published, self._delivered, self._dropped)
