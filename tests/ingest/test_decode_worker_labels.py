"""``DecodeWorker.decode``: new series come back labelled, known ones by id; a worker
that stops mid-way or answers out of step leaves decoding to the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading

import numpy as np
import pytest

from monitoringserver.ingest import decode_serve
from monitoringserver.ingest.decode_serve import _HEADER, _LABELLED
from monitoringserver.ingest.decode_worker import DecodeWorker, _Channel
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.model.labels import Labels
from monitoringserver.web.routers.remote_write import _StoreIds
from tests.ingest.promhelp import write_request

NOW_MS = 1_750_000_000_000
UP: Labels = (("__name__", "up"), ("job", "a"))
CPU: Labels = (("__name__", "cpu"), ("instance", "h1"), ("mode", "idle"))
MEM: Labels = (("__name__", "mem"), ("instance", "h1"))
MAX = 1 << 20


async def test_new_known_and_mixed_requests(threaded: DecodeWorker) -> None:
    w = threaded
    async with asyncio.timeout(10):
        while not w.ready:
            await asyncio.sleep(0.01)
    body = write_request([(UP, [(NOW_MS, 1.0), (NOW_MS + 1, 2.0)]), (CPU, [(NOW_MS, 3.0)])])
    found = await w.decode(body, compressed=True, max_bytes=MAX)
    local = RemoteWriteDecoder().decode_keyed(body, {})
    assert found is not None
    assert found.batch is not None
    assert local.batch is not None
    assert list(found.batch.series) == list(local.batch.series) == [UP, CPU]
    assert found.keys is None  # kept by the worker
    assert found.batch.series_idx.tolist() == [0, 0, 1]
    assert found.batch.values.tolist() == [1.0, 2.0, 3.0]
    assert found.reply_id is not None
    w.learn_reply(found.reply_id + 1000, np.array([5, 6], dtype=np.uint64))  # not kept
    w.learn_reply(found.reply_id, np.array([7], dtype=np.uint64))  # not its length
    assert (await w.decode(body, compressed=True, max_bytes=MAX)) is not None
    assert w.labelled == 2  # nothing learnt above
    again = await w.decode(body, compressed=True, max_bytes=MAX)
    assert again is not None
    assert again.reply_id is not None
    w.learn_reply(again.reply_id, np.array([7, 9], dtype=np.uint64))
    known = await w.decode(body, compressed=True, max_bytes=MAX)
    assert known is not None
    assert known.batch is None
    assert known.series_ids is not None
    assert known.series_ids.tolist() == [7, 7, 9]
    mixed = write_request([(MEM, [(NOW_MS, 4.0)]), (UP, [(NOW_MS, 5.0)])])
    found = await w.decode(mixed, compressed=True, max_bytes=MAX)
    assert found is not None
    assert found.batch is not None
    assert list(found.batch.series) == [MEM, UP]
    assert found.batch.series[1] is not UP
    assert found.batch.series[1][1] is known_pair(w, ("job", "a"))
    assert await w.decode(b"\xff\x00garbage", compressed=True, max_bytes=MAX) is None
    assert await w.decode(body, compressed=True, max_bytes=16) is None  # over max_bytes
    assert (w.decoded, w.labelled) == (1, 4)


def known_pair(w: DecodeWorker, pair: tuple[str, str]) -> tuple[str, str]:
    """The event loop's shared object for ``pair``."""
    assert w._channel is not None
    return next(p for p in w._channel.pairs.pairs if p == pair)


async def test_a_worker_killed_with_a_request_in_flight_answers_none() -> None:
    w = DecodeWorker()
    await w.start()
    try:
        process = w._process  # the test stops, then kills the worker
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        body = write_request([(UP, [(NOW_MS, 1.0)])])
        pending = asyncio.create_task(w.decode(body, compressed=True, max_bytes=MAX))
        async with asyncio.timeout(10):
            while not (w._channel and w._channel.pending):
                await asyncio.sleep(0.01)
        os.kill(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            assert await pending is None
        assert not w.ready
        assert await w.decode(body, compressed=True, max_bytes=MAX) is None
    finally:
        await w.aclose()


async def test_a_reply_out_of_step_stops_using_the_worker(threaded: DecodeWorker) -> None:
    w = threaded
    channel = w._channel
    assert channel is not None
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    channel.pending[99] = future  # type: ignore[assignment]
    junk = b"\x01\x00\x00\x00" * 3
    channel.data_received(_HEADER.pack(99, _LABELLED, len(junk)) + junk)
    assert future.result() is None
    async with asyncio.timeout(10):
        await channel.closed.wait()
    assert not w.alive
    body = write_request([(UP, [(NOW_MS, 1.0)])])
    assert await w.decode(body, compressed=True, max_bytes=MAX) is None


async def test_a_worker_of_another_protocol_version_is_not_used(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker started from changed code on disk (an upgrade in place) announces
    another frame layout: the server never reads its frames and decodes in-process."""
    monkeypatch.setattr(decode_serve, "_PROTOCOL", decode_serve._PROTOCOL + 1)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = threading.Thread(target=decode_serve.serve, args=(theirs,), daemon=True)
    thread.start()
    w = DecodeWorker()
    _transport, w._channel = await asyncio.get_running_loop().create_connection(_Channel, sock=ours)
    try:
        async with asyncio.timeout(10):
            await w._channel.closed.wait()
        assert not w.ready
        assert not w.alive
        assert "speaks another protocol" in caplog.text
        body = write_request([(UP, [(NOW_MS, 1.0)])])
        assert await w.decode(body, compressed=True, max_bytes=MAX) is None
    finally:
        await w.aclose()
        thread.join(10)
        theirs.close()
    assert not thread.is_alive()


async def test_the_worker_keeps_the_newest_replies_keys(
    threaded: DecodeWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode_serve, "_KEPT_REPLIES", 1)
    w = threaded
    old = write_request([(UP, [(NOW_MS, 1.0)])])
    new = write_request([(MEM, [(NOW_MS, 1.0)])])
    first = await w.decode(old, compressed=True, max_bytes=MAX)
    second = await w.decode(new, compressed=True, max_bytes=MAX)
    assert first is not None
    assert second is not None
    assert first.reply_id is not None
    assert second.reply_id is not None
    w.learn_reply(first.reply_id, np.array([1], dtype=np.uint64))  # dropped: not kept
    w.learn_reply(second.reply_id, np.array([2], dtype=np.uint64))
    by_id = await w.decode(new, compressed=True, max_bytes=MAX)
    assert by_id is not None
    assert by_id.series_ids is not None
    assert by_id.series_ids.tolist() == [2]
    again = await w.decode(old, compressed=True, max_bytes=MAX)
    assert again is not None
    assert again.batch is not None  # labelled again


class _Recording:
    """Stands in for a decode worker: records what the route's map tells it."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ready = True

    def forget(self) -> None:
        self.calls.append("forget")

    def learn(self, keys: list[bytes], ids: object) -> None:
        self.calls.append(f"learn {len(keys)}")

    def learn_reply(self, reply_id: int, ids: object) -> None:
        self.calls.append(f"reply {reply_id}")


def test_the_route_map_starts_over_when_full_counting_worker_learnt_series() -> None:
    recording = _Recording()
    store_ids = _StoreIds(3, recording)  # type: ignore[arg-type]
    store_ids.learn([b"a", b"b"], np.array([1, 2], dtype=np.uint64))
    store_ids.learn_reply(7, np.array([3], dtype=np.uint64))
    assert store_ids.size == 3
    store_ids.learn_reply(8, np.array([4], dtype=np.uint64))  # over 3: start over
    assert recording.calls == ["learn 2", "reply 7", "forget", "reply 8"]
    assert store_ids.ids == {}
    assert store_ids.size == 1
    assert store_ids.use_worker()
    store_ids.worker_answered(False)  # a decline: the next request in-process
    assert not store_ids.use_worker()
    assert store_ids.use_worker()
