"""The remote-write decode worker process: same arrays as in-process, declines safely."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace

import cramjam
import httpx
import numpy as np
import pytest

from monitoringserver.ingest.decode_worker import DecodeWorker
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import STALE_NAN
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.remote_write import RemoteWrite
from tests.ingest.promhelp import running_server, write_request

NOW_MS = 1_750_000_000_000
UP: Labels = (("__name__", "up"), ("job", "a"))
CPU: Labels = (("__name__", "cpu"), ("instance", "h1"), ("mode", "idle"))
MEM: Labels = (("__name__", "mem"), ("instance", "h1"))


@pytest.fixture
async def worker() -> AsyncIterator[DecodeWorker]:
    w = DecodeWorker()
    await w.start()
    try:
        yield w
    finally:
        await w.aclose()


def _learn(w: DecodeWorker, body: bytes, ids: dict[bytes, int]) -> None:
    """Teach ``w`` (and ``ids``) the series of ``body`` with made-up store ids."""
    keys = RemoteWriteDecoder().decode_keyed(body, None).keys
    assert keys is not None
    for key in keys:
        ids.setdefault(key, 1000 + len(ids))
    w.learn(keys, np.array([ids[k] for k in keys], dtype=np.uint64))


async def test_known_series_decode_like_in_process(worker: DecodeWorker) -> None:
    ids: dict[bytes, int] = {}
    _learn(worker, write_request([(UP, [(NOW_MS, 1.0)]), (CPU, [(NOW_MS, 2.0)])]), ids)
    body = write_request(
        [(CPU, [(NOW_MS - 1000, 3.5), (NOW_MS, -0.0)]), (UP, [(NOW_MS + 7, STALE_NAN)])]
    )
    found = await worker.decode_known(body, compressed=True, max_bytes=1 << 20)
    assert found is not None
    local = RemoteWriteDecoder().decode_keyed(body, ids)
    assert local.series_ids is not None
    assert local.ts_ms is not None
    assert local.values is not None
    assert found[0].tolist() == local.series_ids.tolist()
    assert found[1].tolist() == local.ts_ms.tolist() == [NOW_MS - 1000, NOW_MS, NOW_MS + 7]
    assert found[2].view(np.uint64).tolist() == local.values.view(np.uint64).tolist()
    found[1][0] = 0  # writable, like the in-process arrays
    assert worker.decoded == 1


@pytest.mark.parametrize(
    ("what", "compressed", "max_bytes"),
    [
        ("unknown series", True, 1 << 20),
        ("not snappy", True, 1 << 20),
        ("over max_bytes", True, 16),
        ("identity, known", False, 1 << 20),
    ],
)
async def test_declines_what_it_cannot_answer(
    worker: DecodeWorker, what: str, compressed: bool, max_bytes: int
) -> None:
    ids: dict[bytes, int] = {}
    known = write_request([(UP, [(NOW_MS, 1.0)])])
    _learn(worker, known, ids)
    body = {
        "unknown series": write_request([(UP, [(NOW_MS, 1.0)]), (MEM, [(NOW_MS, 1.0)])]),
        "not snappy": b"\xff\x00garbage",
        "over max_bytes": known,
        "identity, known": bytes(cramjam.snappy.decompress_raw(known)),
    }[what]
    found = await worker.decode_known(body, compressed=compressed, max_bytes=max_bytes)
    if what == "identity, known":
        assert found is not None
        assert found[0].tolist() == [ids[next(iter(ids))]]
    else:
        assert found is None


async def test_forget_clears_the_map_and_concurrent_requests_match(worker: DecodeWorker) -> None:
    ids: dict[bytes, int] = {}
    bodies = [write_request([(UP, [(NOW_MS + i, float(i))])]) for i in range(20)]
    _learn(worker, bodies[0], ids)
    answers = await asyncio.gather(
        *(worker.decode_known(b, compressed=True, max_bytes=1 << 20) for b in bodies)
    )
    assert [a[1].tolist() if a else None for a in answers] == [[NOW_MS + i] for i in range(20)]
    worker.forget()
    assert await worker.decode_known(bodies[0], compressed=True, max_bytes=1 << 20) is None


async def test_in_flight_limit_declines_the_excess() -> None:
    w = DecodeWorker(max_in_flight=1)
    await w.start()
    try:
        ids: dict[bytes, int] = {}
        body = write_request([(UP, [(NOW_MS, 1.0)])])
        _learn(w, body, ids)
        first, second = await asyncio.gather(
            w.decode_known(body, compressed=True, max_bytes=1 << 20),
            w.decode_known(body, compressed=True, max_bytes=1 << 20),
        )
        assert first is not None
        assert second is None
    finally:
        await w.aclose()


async def test_a_dead_or_unstarted_worker_declines_everything() -> None:
    body = write_request([(UP, [(NOW_MS, 1.0)])])
    idle = DecodeWorker()
    assert not idle.alive
    idle.learn([b"x"], np.array([1], dtype=np.uint64))  # no-ops without a process
    idle.forget()
    assert await idle.decode_known(body, compressed=True, max_bytes=1 << 20) is None
    await idle.aclose()

    w = DecodeWorker()
    await w.start()
    try:
        _learn(w, body, {})
        assert await w.decode_known(body, compressed=True, max_bytes=1 << 20) is not None
        process = w._process  # the test kills the worker
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            while w.alive:
                await asyncio.sleep(0.01)
        assert await w.decode_known(body, compressed=True, max_bytes=1 << 20) is None
        w.learn([b"x"], np.array([1], dtype=np.uint64))
    finally:
        await w.aclose()
    assert not w.alive


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(20):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_route_uses_the_worker_in_a_real_server(tmp_path: Path) -> None:
    remote_write = RemoteWrite()

    def service(s: Server) -> Service:
        return Service(*remote_write.service(s))

    data_dir = tmp_path / "data"
    async with running_server(data_dir, [remote_write.router], [service]) as (srv, headers):
        worker = remote_write.worker
        assert worker is not None
        assert not worker.alive  # spawned by the first remote write, not at start
        now = int(time.time() * 1000) // 1000 * 1000
        async with httpx.AsyncClient(base_url=f"http://{srv.http_address}") as client:

            async def post(body: bytes) -> httpx.Response:
                return await client.post("/api/v1/write", content=body, headers=headers)

            # New series while the worker starts: decoded in-process, learnt.
            first = write_request([(UP, [(now - 4000, 0.0)]), (CPU, [(now, 0.0)])])
            assert (await post(first)).status_code == 204
            await _until(lambda: worker.ready)
            for i in range(1, 3):  # known series: by id from the worker
                body = write_request(
                    [(UP, [(now - 4000 + i * 1000, float(i))]), (CPU, [(now, float(i))])]
                )
                assert (await post(body)).status_code == 204
            assert (worker.decoded, worker.labelled) == (2, 0)
            mixed = write_request([(UP, [(now - 1000, 9.0)]), (MEM, [(now, 1.0)])])
            assert (await post(mixed)).status_code == 204  # labelled by the worker
            assert (worker.decoded, worker.labelled) == (2, 1)
            again = write_request([(MEM, [(now + 1000, 2.0)]), (UP, [(now + 1000, 3.0)])])
            assert (await post(again)).status_code == 204  # learnt: by id
            assert (worker.decoded, worker.labelled) == (3, 1)
            bad = b"\xff\x00garbage"
            r = await post(bad)  # declined, then refused in-process with the usual error
            assert r.status_code == 400
            assert r.json()["error"].startswith("cannot parse remote write body")
            for job in "bc":  # in-process after a decline; the worker declines: sorted here
                unsorted = write_request([(((("job", job), ("__name__", "up"))), [(now, 4.0)])])
                assert (await post(unsorted)).status_code == 204
            assert (worker.decoded, worker.labelled) == (3, 1)
        assert srv.store is not None
        await srv.store.writer.commit_pending()
        found = {
            s.labels: s.ts_ms.tolist()
            for s in srv.store.querier.select([], now - 60_000, now + 60_000)
        }
        assert found[UP] == [now - 4000, now - 3000, now - 2000, now - 1000, now + 1000]
        assert found[MEM] == [now, now + 1000]
        assert found[(("__name__", "up"), ("job", "b"))] == [now]
        assert found[(("__name__", "up"), ("job", "c"))] == [now]
    assert not worker.alive


async def test_a_worker_that_cannot_be_spawned_is_not_tried_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = write_request([(UP, [(NOW_MS, 1.0)])])
    w = DecodeWorker()
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    await w.ensure_started()
    assert not w.alive
    monkeypatch.undo()
    await w.ensure_started()
    assert not w.alive
    assert await w.decode_known(body, compressed=True, max_bytes=1 << 20) is None
    await w.aclose()


async def test_a_closed_worker_is_not_started() -> None:
    w = DecodeWorker()
    await w.aclose()
    await w.ensure_started()
    assert not w.alive


def test_the_option_turns_the_worker_off() -> None:
    remote_write = RemoteWrite()
    server = SimpleNamespace(
        config=SimpleNamespace(
            prometheus_ingest=PromIngestOptions(remote_write_decode_worker=False)
        )
    )
    remote_write.router(server)
    assert remote_write.worker is None
    asyncio.run(remote_write.service(server)[1]())  # returns at once: nothing to run


async def test_serve_in_a_thread_speaks_the_same_protocol(threaded: DecodeWorker) -> None:
    """The worker's loop run in this process (what the child runs, visible to coverage)."""
    w = threaded
    ids: dict[bytes, int] = {}
    body = write_request([(UP, [(NOW_MS, 1.0), (NOW_MS + 1, 2.0)]), (CPU, [(NOW_MS, 3.0)])])
    assert await w.decode_known(body, compressed=True, max_bytes=1 << 20) is None
    _learn(w, body, ids)
    found = await w.decode_known(body, compressed=True, max_bytes=1 << 20)
    assert found is not None
    assert found[0].tolist() == [1000, 1000, 1001]
    assert found[2].tolist() == [1.0, 2.0, 3.0]
    assert await w.decode_known(b"junk", compressed=True, max_bytes=1 << 20) is None
    w.forget()
    assert await w.decode_known(body, compressed=True, max_bytes=1 << 20) is None
