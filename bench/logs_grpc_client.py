"""gRPC ``NodeAgent.StreamLogs`` load for :mod:`bench.bench_logs`.

The corpus is shipped the way agents ship it (``agent/logship.py``): each host is one
agent (``agent_id`` = host, so the server stores ``server_id`` = host), its lines go in
``LogBatch`` messages of ``BATCH_RECORDS`` records with increasing ``batch_seq``, and one
``StreamLogs`` call carries up to ``BATCHES_PER_CALL`` batches. ``STREAMS`` calls run at
once; an agent has at most one call in flight (so its sequence numbers arrive in
order, as with one agent process). A failed call (``RESOURCE_EXHAUSTED`` when the
server's write queue is full, or any other error) is sent again whole after the
server's ``retry-after-ms`` hint (else 1 s); the server's dedup drops the batches it
already applied, exactly as for a real agent's retry. Retries are counted by status.

The messages are serialised before the clock starts (like the HTTP bodies), written to
a file, and sent by a client in its own process (``python -m bench.logs_grpc_client
--send TARGET FILE``), which prints one JSON object: seconds, calls, retries by status
(with the details of the first few failures other than ``RESOURCE_EXHAUSTED``),
latencies.
"""

from __future__ import annotations

import asyncio
import collections
import json
import struct
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc

from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["BATCHES_PER_CALL", "BATCH_RECORDS", "STREAMS", "write_calls"]

BATCH_RECORDS = 500
BATCHES_PER_CALL = 20
STREAMS = 4
_METHOD = "/monitoringserver.v1.NodeAgent/StreamLogs"
_LEN = struct.Struct("<I")
_MAX_FAILURES = 50  # consecutive failed calls of one agent before the bench gives up


def write_calls(docs: Sequence[dict[str, object]], path: Path) -> int:
    """Serialise the corpus as agents' calls into ``path``; returns the call count.

    File layout: per call, ``<agent_id len><agent_id><batch count>`` then per batch
    ``<len><LogBatch bytes>`` (lengths little-endian u32)."""
    by_host: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
    for d in docs:
        by_host[str(d["server_id"])].append(d)
    calls = 0
    with path.open("wb") as f:
        for host, lines in by_host.items():
            batches: list[bytes] = []
            for seq, i in enumerate(range(0, len(lines), BATCH_RECORDS), start=1):
                records = [
                    pb.LogRecord(
                        timestamp_ms=int(str(d["timestamp"])),
                        level=str(d["type"]),
                        logger=str(d["logger"]),
                        source=str(d["source"]),
                        message=str(d["message"]),
                    )
                    for d in lines[i : i + BATCH_RECORDS]
                ]
                msg = pb.LogBatch(agent_id=host, batch_seq=seq, records=records)
                batches.append(msg.SerializeToString())
            for j in range(0, len(batches), BATCHES_PER_CALL):
                chunk = batches[j : j + BATCHES_PER_CALL]
                name = host.encode()
                f.write(_LEN.pack(len(name)) + name + _LEN.pack(len(chunk)))
                for b in chunk:
                    f.write(_LEN.pack(len(b)) + b)
                calls += 1
    return calls


def _read_calls(path: Path) -> dict[str, collections.deque[list[bytes]]]:
    data = path.read_bytes()
    out: dict[str, collections.deque[list[bytes]]] = {}
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        host = data[pos + 4 : pos + 4 + n].decode()
        pos += 4 + n
        (count,) = _LEN.unpack_from(data, pos)
        pos += 4
        call: list[bytes] = []
        for _ in range(count):
            (size,) = _LEN.unpack_from(data, pos)
            call.append(data[pos + 4 : pos + 4 + size])
            pos += 4 + size
        out.setdefault(host, collections.deque()).append(call)
    return out


def _identity(b: bytes) -> bytes:
    return b


async def _send(target: str, path: Path) -> dict[str, object]:
    calls = _read_calls(path)
    ready = collections.deque(calls)
    latencies: list[float] = []
    retries: dict[str, int] = {}
    failures: dict[str, int] = {}
    details: list[str] = []  # the first few unexpected failures
    async with grpc.aio.insecure_channel(
        target, options=[("grpc.max_send_message_length", 64 << 20)]
    ) as channel:
        stream = channel.stream_unary(
            _METHOD, request_serializer=_identity, response_deserializer=_identity
        )
        wake = asyncio.Event()

        async def gen(batches: list[bytes]) -> AsyncIterator[bytes]:
            for b in batches:
                yield b

        async def worker() -> None:
            while ready or any(calls.values()):
                if not ready:
                    wake.clear()
                    await wake.wait()
                    continue
                host = ready.popleft()
                t = time.perf_counter()
                call = stream(gen(calls[host][0]), timeout=120)
                try:
                    await call
                except grpc.aio.AioRpcError:
                    # Like the agent: resend the same batches (the server's dedup drops
                    # those it applied). A refusal can surface as a failed send when the
                    # server ends the call first; the call's own status tells.
                    code = (await call.code()).name
                    retries[code] = retries.get(code, 0) + 1
                    if code != "RESOURCE_EXHAUSTED" and len(details) < 5:
                        details.append(f"{code}: {await call.details()}")
                    failures[host] = failures.get(host, 0) + 1
                    if failures[host] > _MAX_FAILURES:
                        raise
                    hint = dict(await call.trailing_metadata() or ()).get("retry-after-ms")
                    await asyncio.sleep(int(str(hint)) / 1000 if hint else 1.0)
                    ready.append(host)
                    wake.set()
                    continue
                failures[host] = 0
                latencies.append(time.perf_counter() - t)
                calls[host].popleft()
                if calls[host]:
                    ready.append(host)
                wake.set()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(STREAMS)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "seconds": elapsed,
        "calls": len(latencies),
        "retries": retries,
        "failure_details": details,
        "call_p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
        "call_p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1),
    }


def main(argv: list[str]) -> int:
    if argv[:1] != ["--send"] or len(argv) != 3:
        print("usage: python -m bench.logs_grpc_client --send HOST:PORT FILE", file=sys.stderr)
        return 2
    print(json.dumps(asyncio.run(_send(argv[1], Path(argv[2])))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
