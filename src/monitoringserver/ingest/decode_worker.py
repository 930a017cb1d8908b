"""Remote-write decoding in a worker process (off the event loop's GIL).

The server's event-loop thread is the ingest ceiling: every remote-write request costs it
the snappy decompression, the split of the ``WriteRequest``, one dictionary lookup per
series and, for new series, the parsing of their labels. :class:`DecodeWorker` moves
that work to a child process (:mod:`.decode_serve`) over a Unix stream socket; the event
loop only writes the compressed body and reads back arrays (and, for new series,
ready-made label sets).

Contract:

* the worker keeps its own copy of the route's map *encoded label fields → store series
  id*, fed in order on the same socket by :meth:`DecodeWorker.learn`,
  :meth:`DecodeWorker.learn_reply` (the series of a labelled reply, whose keys the
  worker kept) and :meth:`DecodeWorker.forget`; a decode sent after them sees them;
* :meth:`DecodeWorker.decode_known` answers the store series id, timestamp (ms) and
  value of every sample when the worker knew every series of the request, and ``None``
  otherwise: an unknown series, a layout other than Prometheus', a body that does not
  decode or is over ``max_bytes``, too many requests in flight, a worker not started or
  gone. ``None`` means "decode it in-process", which then answers exactly as without a
  worker (errors included), so the worker never changes a result;
* :meth:`DecodeWorker.decode` answers the same, or for a request with unknown series
  its batch by label set and each series' key, built from a pair table both ends keep
  in step (:mod:`.decode_labels`); label sets the in-process decoder would change
  (sort, drop empty values) or refuse are declined the same way;
* the worker tells when its imports are done (:attr:`DecodeWorker.ready`); requests
  sent before wait for it, so a caller with an alternative asks :attr:`ready` first;
* the worker is spawned by :meth:`DecodeWorker.ensure_started` on the first remote
  write, not at server start; one that dies is not restarted: decoding stays
  in-process (logged once); a reply the event loop cannot read closes the socket;
* :meth:`DecodeWorker.aclose` closes the socket (the worker exits at end of input) and
  waits for the process; learn messages beyond ``max_buffered_bytes`` of unsent output
  are dropped (the worker then declines those series), never queued without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import sys
from collections.abc import Callable
from typing import cast

import numpy as np
from numpy.typing import NDArray

from monitoringserver.ingest.decode_labels import LoopPairs
from monitoringserver.ingest.decode_serve import (
    _COMPRESSED,
    _DECODE,
    _DECODE_REQ,
    _FORGET,
    _HEADER,
    _LABELLED,
    _LEARN,
    _LEARN_REPLY,
    _PROTOCOL,
    _READY,
    _SAMPLES,
    _VERSION,
    _WANT_LABELS,
    serve,
)
from monitoringserver.ingest.rw_wire import KeyedDecode

__all__ = ["DecodeWorker", "KnownSamples", "serve"]

_log = logging.getLogger("monitoringserver.ingest.decode_worker")

#: The arrays of a request whose series were all known: ``(series_ids, ts_ms, values)``,
#: one entry per sample, in wire order.
KnownSamples = tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.float64]]


class _Channel(asyncio.Protocol):
    """The event loop's end of the socket: frames out, replies matched to futures.
    Labelled replies are read as they arrive, awaited or not: the pair table follows
    the worker's. ``ready``: the worker has finished starting."""

    def __init__(
        self, pairs_of: Callable[[list[bytes]], list[tuple[str, str]]] | None = None
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[KnownSamples | KeyedDecode | None]] = {}
        self.buffer = bytearray()
        self.closed = asyncio.Event()
        self.pairs = LoopPairs(pairs_of)
        self.ready = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        start = 0
        size = len(buf)
        while size - start >= _HEADER.size:
            rid, kind, length = _HEADER.unpack_from(buf, start)
            end = start + _HEADER.size + length
            if end > size:
                break
            future = self.pending.pop(rid, None)
            found: KnownSamples | KeyedDecode | None = None
            if kind == _LABELLED:
                try:
                    batch = self.pairs.read(buf[start + _HEADER.size : end])
                    found = KeyedDecode(batch, None, reply_id=rid)
                except Exception:  # noqa: BLE001 (a reply out of step: stop using the worker)
                    _log.exception("cannot read a remote-write decode worker reply")
                    del buf[:]
                    if self.transport is not None:
                        self.transport.abort()
                    if future is not None and not future.done():
                        future.set_result(None)
                    return
            elif kind == _SAMPLES and future is not None:
                found = _arrays(buf[start + _HEADER.size : end])
            elif kind == _READY:
                payload = bytes(buf[start + _HEADER.size : end])
                if payload != _VERSION.pack(_PROTOCOL):
                    _log.warning(
                        "remote-write decode worker speaks another protocol (%s, expected %d):"
                        " decoding in-process",
                        payload.hex(),
                        _PROTOCOL,
                    )
                    del buf[:]
                    if self.transport is not None:
                        self.transport.abort()
                    return
                self.ready = True
            if future is not None and not future.done():
                future.set_result(found)
            start = end
        if start:
            del buf[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for future in self.pending.values():
            if not future.done():
                future.set_result(None)
        self.pending.clear()
        self.closed.set()


def _arrays(payload: bytearray) -> KnownSamples:
    """The three arrays of a ``_SAMPLES`` payload (writable: they share ``payload``)."""
    n = len(payload) // 24
    ids = np.frombuffer(payload, dtype=np.uint64, count=n)
    ts = np.frombuffer(payload, dtype=np.int64, count=n, offset=8 * n)
    values = np.frombuffer(payload, dtype=np.float64, count=n, offset=16 * n)
    return ids, ts, values


class DecodeWorker:
    """One decode worker process and its socket (see the module docstring).

    ``max_in_flight``: requests awaiting an answer before further ones decline;
    ``max_buffered_bytes``: unsent output above which decodes decline and learns drop.
    ``decoded`` counts the requests the worker answered with samples. Use from one event
    loop only.
    """

    def __init__(self, *, max_in_flight: int = 64, max_buffered_bytes: int = 16 << 20) -> None:
        self.max_in_flight = max_in_flight
        self.max_buffered_bytes = max_buffered_bytes
        self._channel: _Channel | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._next_id = 0
        self._lost_logged = False
        self._start_lock = asyncio.Lock()
        self._given_up = False  # closed, or could not be spawned: never started again
        self.decoded = 0
        self.labelled = 0
        #: Where labelled replies take their shared pairs (set before :meth:`start`; the
        #: route gives its decoder's ``pairs_of``).
        self.pairs_of: Callable[[list[bytes]], list[tuple[str, str]]] | None = None

    @property
    def alive(self) -> bool:
        """True while the worker's socket is open."""
        return self._channel is not None and self._channel.transport is not None

    @property
    def ready(self) -> bool:
        """True while the worker is alive and has finished starting (its imports): a
        request sent now is answered without waiting for the start."""
        return self.alive and self._channel is not None and self._channel.ready

    async def start(self) -> None:
        """Spawn the worker process (it answers once its imports are done; meanwhile
        decodes queue on the socket). Raises ``OSError`` when it cannot be spawned."""
        if self._process is not None:
            return
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "monitoringserver.ingest.decode_serve",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        _transport, self._channel = await loop.create_connection(
            lambda: _Channel(self.pairs_of), sock=ours
        )

    async def ensure_started(self) -> None:
        """Spawn the worker on first use (a server that takes no remote write runs no
        worker). Call it before the first :meth:`learn`: learns sent while the worker
        is absent are lost. A spawn that fails is logged and not tried again (decoding
        stays in-process); after :meth:`aclose` this does nothing."""
        if self._process is not None or self._given_up:
            return
        async with self._start_lock:
            if self._process is not None or self._given_up:
                return
            try:
                await self.start()
            except OSError as exc:
                self._given_up = True
                _log.warning(
                    "cannot start remote-write decode worker: %s (decoding in-process)", exc
                )

    def _open_transport(self) -> asyncio.Transport | None:
        channel = self._channel
        if channel is None or channel.transport is None:
            if channel is not None and not self._lost_logged:
                self._lost_logged = True
                _log.warning("remote-write decode worker is gone: decoding in-process")
            return None
        return channel.transport

    def learn(self, keys: list[bytes], ids: NDArray[np.uint64]) -> None:
        """Tell the worker that series ``keys[i]`` (encoded label fields) has store id
        ``ids[i]``. Dropped when the output is backed up or the worker is gone."""
        transport = self._open_transport()
        if transport is None or not keys:
            return
        if transport.get_write_buffer_size() > self.max_buffered_bytes:
            return
        lengths = np.fromiter(map(len, keys), dtype=np.uint32, count=len(keys))
        parts = [
            struct.pack("<I", len(keys)),
            np.ascontiguousarray(ids, dtype=np.uint64).tobytes(),
            lengths.tobytes(),
            b"".join(keys),
        ]
        size = sum(map(len, parts))
        transport.writelines([_HEADER.pack(0, _LEARN, size), *parts])

    def learn_reply(self, reply_id: int, ids: NDArray[np.uint64]) -> None:
        """Tell the worker that the series of its labelled reply ``reply_id``
        (:attr:`KeyedDecode.reply_id`) have store ids ``ids`` (in batch order). Dropped
        when the output is backed up or the worker is gone, and by the worker when it
        no longer keeps that reply's keys (it keeps the newest ones)."""
        transport = self._open_transport()
        if transport is None or transport.get_write_buffer_size() > self.max_buffered_bytes:
            return
        data = np.ascontiguousarray(ids, dtype=np.uint64).tobytes()
        transport.writelines([_HEADER.pack(reply_id, _LEARN_REPLY, len(data)), data])

    def forget(self) -> None:
        """Clear the worker's map (the route's map started over). Always sent while the
        worker is alive: a lost forget could leave ids of another store behind."""
        transport = self._open_transport()
        if transport is not None:
            transport.write(_HEADER.pack(0, _FORGET, 0))

    async def decode_known(
        self, body: bytes, *, compressed: bool, max_bytes: int
    ) -> KnownSamples | None:
        """The samples of a remote-write 1.0 ``body`` by store series id, or ``None``
        (decode in-process) as the module docstring lists."""
        found = await self._request(body, _COMPRESSED if compressed else 0, max_bytes)
        if isinstance(found, tuple):
            self.decoded += 1
            return found
        return None

    async def decode(self, body: bytes, *, compressed: bool, max_bytes: int) -> KeyedDecode | None:
        """A remote-write 1.0 ``body`` decoded as
        :meth:`~monitoringserver.ingest.remote_write.RemoteWriteDecoder.decode_keyed`
        would with the worker's map: by store series id when every series is known,
        else a batch with each series' key (:mod:`.decode_labels`); ``None`` (decode
        in-process) for whatever :meth:`decode_known` declines except unknown series,
        and for label sets the in-process decoder would not take as they are."""
        flags = _WANT_LABELS | (_COMPRESSED if compressed else 0)
        found = await self._request(body, flags, max_bytes)
        if found is None:
            return None
        if isinstance(found, tuple):
            self.decoded += 1
            return KeyedDecode(None, None, *found)
        self.labelled += 1
        return found

    async def _request(
        self, body: bytes, flags: int, max_bytes: int
    ) -> KnownSamples | KeyedDecode | None:
        transport = self._open_transport()
        channel = self._channel
        if transport is None or channel is None:
            return None
        if (
            len(channel.pending) >= self.max_in_flight
            or transport.get_write_buffer_size() > self.max_buffered_bytes
        ):
            return None
        self._next_id = rid = (self._next_id + 1) & 0x7FFFFFFF or 1  # 0: no request
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KnownSamples | KeyedDecode | None] = loop.create_future()
        channel.pending[rid] = future
        meta = _DECODE.pack(flags, max_bytes)
        transport.writelines([_HEADER.pack(rid, _DECODE_REQ, len(meta) + len(body)), meta, body])
        return await future

    async def aclose(self) -> None:
        """Close the socket and wait for the worker to exit (killed after 10 s)."""
        channel, process = self._channel, self._process
        self._channel = self._process = None
        self._given_up = True
        if channel is not None and channel.transport is not None:
            channel.transport.close()
            await channel.closed.wait()
        if process is not None:
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
