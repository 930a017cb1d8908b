"""The remote-write decode worker process: ``python -m monitoringserver.ingest.decode_serve FD``.

Serves the frames :class:`~monitoringserver.ingest.decode_worker.DecodeWorker` sends on the
Unix stream socket ``FD`` (see that module for the contract) until end of input. Kept apart
from the event-loop side so the process imports no ``asyncio``: it starts sooner (it is
spawned by the first remote write, which then waits for it no longer than necessary).

Frames: a header (request id, kind, payload length in bytes), then the payload. The worker
sends ``_READY`` once (its imports done; the payload is ``_PROTOCOL``, so a server whose
code on disk changed under it — an upgrade in place — never reads frames of another
layout: it stops using the worker), then one reply per ``_DECODE_REQ`` in order:
``_SAMPLES`` (series ids, timestamps, values), ``_LABELLED``
(:mod:`~monitoringserver.ingest.decode_labels`) or ``_DECLINED``. It takes ``_LEARN``
(keys and store ids), ``_FORGET``, and ``_LEARN_REPLY`` (the store ids of a labelled
reply's series, by that request's id: the worker keeps the keys of its newest
``_KEPT_REPLIES`` labelled replies, so they need not travel back).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import sys
from typing import TYPE_CHECKING, BinaryIO, cast

import numpy as np

from monitoringserver.ingest.decode_labels import WorkerPairs
from monitoringserver.ingest.remote_write import decompress_snappy
from monitoringserver.ingest.rw_wire import known_series_ids, split_write_request

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["main", "serve"]

#: Frame header: request id, kind, payload length in bytes.
_HEADER = struct.Struct("<IBI")
#: Decode request prefix: flags (``_COMPRESSED``, ``_WANT_LABELS``), largest decompressed
#: size in bytes.
_DECODE = struct.Struct("<BQ")
_COMPRESSED, _WANT_LABELS = 1, 2
_LEARN, _FORGET, _DECODE_REQ, _DECLINED, _SAMPLES, _LABELLED, _READY = 1, 2, 3, 4, 5, 6, 7
#: Store ids of the series of a labelled reply, by its request id (payload: uint64 ids).
_LEARN_REPLY = 8
#: The frame layout's version, sent with ``_READY``; change it with any layout change.
_PROTOCOL = 2
_VERSION = struct.Struct("<I")
#: Labelled replies whose keys the worker keeps for a ``_LEARN_REPLY`` (the newest).
_KEPT_REPLIES = 1024


def _read_exactly(stream: BinaryIO, n: int) -> bytes | None:
    data = stream.read(n)
    return data if len(data) == n else None


def serve(sock: socket.socket) -> None:
    """The worker's loop: answer frames from ``sock`` until end of input (or until the
    server's end closes or resets it: no error here)."""
    with contextlib.suppress(ConnectionError):
        _serve(sock)


def _serve(sock: socket.socket) -> None:
    known: dict[bytes, int] = {}
    pairs = WorkerPairs()
    kept: dict[int, list[bytes]] = {}  # request id → keys of its labelled reply
    sock.sendall(_HEADER.pack(0, _READY, _VERSION.size) + _VERSION.pack(_PROTOCOL))
    stream = cast(BinaryIO, sock.makefile("rb", buffering=1 << 20))
    with stream:
        while (header := _read_exactly(stream, _HEADER.size)) is not None:
            rid, kind, length = _HEADER.unpack(header)
            payload = _read_exactly(stream, length)
            if payload is None:
                return
            if kind == _LEARN:
                (count,) = struct.unpack_from("<I", payload)
                ids = np.frombuffer(payload, dtype=np.uint64, count=count, offset=4).tolist()
                lengths = np.frombuffer(payload, np.uint32, count, offset=4 + 8 * count)
                ends = (np.cumsum(lengths, dtype=np.int64) + (4 + 12 * count)).tolist()
                starts = [4 + 12 * count, *ends[:-1]]
                keys = map(payload.__getitem__, map(slice, starts, ends))
                known.update(zip(keys, ids, strict=False))
                continue
            if kind == _LEARN_REPLY:
                learnt = kept.pop(rid, None)
                ids = np.frombuffer(payload, dtype=np.uint64).tolist()
                if learnt is not None and len(learnt) == len(ids):
                    known.update(zip(learnt, ids, strict=True))
                continue
            if kind == _FORGET:
                known.clear()
                continue
            kind, answer, labelled = _decode(payload, known, pairs)
            if labelled is not None:
                kept[rid] = labelled
                if len(kept) > _KEPT_REPLIES:
                    del kept[next(iter(kept))]
            size = sum(memoryview(a).nbytes for a in answer)
            parts: list[Buffer] = [_HEADER.pack(rid, kind, size), *answer]
            sent = sock.sendmsg(parts)
            if sent < _HEADER.size + size:  # a partial send: the rest in one piece
                sock.sendall(b"".join(parts)[sent:])


def _decode(
    payload: bytes, known: dict[bytes, int], pairs: WorkerPairs
) -> tuple[int, list[Buffer], list[bytes] | None]:
    """A decode request's reply kind and payload: ``_SAMPLES`` (every series known),
    ``_LABELLED`` (labels wanted and answerable; with its series' keys) or
    ``_DECLINED`` (other layout, any error)."""
    flags, max_bytes = _DECODE.unpack_from(payload)
    body = payload[_DECODE.size :]
    try:
        raw = decompress_snappy(body, max_bytes=max_bytes) if flags & _COMPRESSED else body
        parts = split_write_request(raw)
        if parts is None:
            return _DECLINED, [], None
        ids = known_series_ids(parts, known)
        if ids is not None:
            arrays = (ids, parts.ts_ms, parts.values)
            return _SAMPLES, [np.ascontiguousarray(a).data for a in arrays], None
        labelled = pairs.reply(parts) if flags & _WANT_LABELS else None
    except Exception:  # noqa: BLE001 (any failure: the event loop decodes it and reports)
        return _DECLINED, [], None
    if labelled is None:
        return _DECLINED, [], None
    return _LABELLED, labelled[0], labelled[1]


def main(argv: list[str]) -> int:
    """``python -m monitoringserver.ingest.decode_serve FD``: serve the socket ``FD``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server decides when we stop
    fd = int(argv[1])
    with socket.socket(fileno=fd) as sock:
        serve(sock)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
