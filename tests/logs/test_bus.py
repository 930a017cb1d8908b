"""The bounded pub/sub bus: fan-out, slow consumers dropped with a message, never blocking."""

from __future__ import annotations

import asyncio

import pytest

from monitoringserver.errors import OverloadedError
from monitoringserver.pipeline.bus import Bus, SubscriptionClosed


async def test_fan_out_and_order() -> None:
    bus: Bus[int] = Bus()
    a = bus.subscribe(name="a")
    b = bus.subscribe(name="b")
    for i in range(3):
        assert bus.publish(i) == 2
    assert [await a.get() for _ in range(3)] == [0, 1, 2]
    assert [await b.get() for _ in range(3)] == [0, 1, 2]
    assert bus.stats().delivered == 6


async def test_slow_subscriber_is_dropped_with_message_and_publisher_never_blocks() -> None:
    bus: Bus[int] = Bus(queue_size=2)
    slow = bus.subscribe(name="slow")
    fast = bus.subscribe(maxsize=100, name="fast")
    for i in range(10):
        bus.publish(i)
    assert bus.subscribers == 1
    with pytest.raises(SubscriptionClosed, match="slow consumer"):
        await slow.get()
    assert fast.pending() == 10
    assert bus.stats().dropped_subscribers == 1


async def test_waiting_get_wakes_on_publish_and_iteration_ends_on_close() -> None:
    bus: Bus[str] = Bus()
    sub = bus.subscribe()
    got: list[str] = []

    async def consume() -> None:
        async for item in sub:
            got.append(item)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    bus.publish("x")
    loop = asyncio.get_running_loop()
    loop.call_soon(bus.publish_threadsafe, "y")
    deadline = loop.time() + 5
    while len(got) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.001)
    bus.close()
    await task
    assert got == ["x", "y"]
    assert bus.subscribers == 0
    assert bus.stats().dropped_subscribers == 1


async def test_close_and_limits() -> None:
    bus: Bus[int] = Bus(max_subscribers=1)
    sub = bus.subscribe()
    with pytest.raises(OverloadedError):
        bus.subscribe()
    sub.close()
    assert bus.publish(1) == 0
    assert not sub._offer(1)
    with pytest.raises(SubscriptionClosed, match="closed"):
        await sub.get()
    assert bus.stats().dropped_subscribers == 0
    Bus[int]().publish_threadsafe(1)  # nobody subscribed: nothing to do
