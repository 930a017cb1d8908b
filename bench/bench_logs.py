"""Log pipeline benchmark: ingest, storage, search and tail against a real server process.

Corpus: generated nginx access (50 %), syslog (25 %) and JSON application logs (25 %,
with request ids and trace ids), about 170 B of message per line (~180 B per record),
25 hosts, timestamps in the last hour. The issue asks for 10 M lines; on the shared
2-core machine the whole run must stay under 5 minutes, so the corpus is scaled down
(default 1 M lines, ``--lines N``) and the result says so.

Steps: (1) the server (log routers + embedded log pipeline, auth off) runs in a
subprocess on 127.0.0.1:0; (2) seed-002 JSON ingest over HTTP, 1000 lines per request,
4 keep-alive clients, bodies pre-encoded; (3) flush to archives (zstd-3), compact them
(merge, zstd-9), stored bytes per line vs zstd-3 over 1 MiB frames of the same lines;
(4) needle search (one request id, last 24 h) and the newest 100 error lines of one host;
(5) tail latency: lines posted one per request, time until they arrive on a Loki tail
WebSocket; (6) a fresh server takes the same corpus over gRPC ``StreamLogs`` the way
agents ship it (:mod:`bench.logs_grpc_client`, a client in its own process).
Ingest rates count until the last request is acknowledged (WAL written); the time
until every line is committed to DuckDB is reported beside them, and so are the
refusals (429 / RESOURCE_EXHAUSTED) the clients retried after the server's hint.
Results: ``bench/results/logs.json`` (``--out PATH`` elsewhere).
Usage: ``python -m bench.bench_logs [--lines N] [--out PATH] [--profile DIR]``;
``--profile`` samples the server with py-spy (on PATH) during each ingest phase.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import zstandard

from bench.logs_grpc_client import BATCH_RECORDS, BATCHES_PER_CALL, STREAMS, write_calls
from bench.logs_server import LogBenchServer, load_average

RESULTS = Path(__file__).parent / "results" / "logs.json"
LINES_PER_REQUEST = 1000
CLIENTS = 4


def corpus(n: int, seed: int, t0_ms: int, span_ms: int) -> list[dict[str, object]]:
    """Seed-002 log objects; deterministic for a seed."""
    rnd = random.Random(seed)
    hosts = [f"web-{i:02d}" for i in range(20)] + [f"db-{i:02d}" for i in range(5)]
    paths = ["/api/v1/items", "/api/v1/users", "/static/app.js", "/login", "/api/v1/orders",
             "/health", "/images/logo.png"]  # fmt: skip
    agents = ["Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/120.0 Safari/537.36", "curl/8.5.0", "Go-http-client/1.1",
              "python-httpx/0.27"]  # fmt: skip
    out: list[dict[str, object]] = []
    step = max(1, span_ms // max(1, n))
    for i in range(n):
        ts = t0_ms + i * step
        host = rnd.choice(hosts)
        clock = f"11:{(i // 20) % 60:02d}:{i % 60:02d}"
        k = rnd.random()
        if k < 0.5:
            st = rnd.choices([200, 201, 304, 404, 500, 503], [80, 5, 5, 6, 2, 2])[0]
            ip = f"10.{rnd.randint(0, 3)}.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"
            path = rnd.choice(paths) + (f"/{rnd.randint(1, 99999)}" if rnd.random() < 0.5 else "")
            msg = (
                f'{ip} - - [10/Jan/2026:{clock} +0000] "GET {path} HTTP/1.1" {st} '
                f'{rnd.randint(100, 50000)} "https://shop.example.com{rnd.choice(paths)}" '
                f'"{rnd.choice(agents)}" rt={rnd.random():.3f}'
            )
            level = "error" if st >= 500 else "warning" if st >= 400 else "info"
            logger, source = "nginx.access", "/var/log/nginx/access.log"
        elif k < 0.75:
            level = rnd.choices(["info", "warning", "error"], [85, 10, 5])[0]
            proc = rnd.choice(["sshd", "systemd", "kernel", "cron", "postfix/smtpd"])
            text = rnd.choice([
                f"Accepted publickey for deploy from 10.0.{rnd.randint(0, 255)}."
                f"{rnd.randint(1, 254)} port {rnd.randint(30000, 65000)} ssh2: ED25519 "
                f"SHA256:{uuid.UUID(int=rnd.getrandbits(128)).hex[:22]}",
                f"Started Session {rnd.randint(1, 99999)} of User deploy.",
                f"Out of memory: Killed process {rnd.randint(1000, 99999)} (java) "
                f"total-vm:{rnd.randint(10**6, 10**7)}kB, anon-rss:{rnd.randint(10**5, 10**6)}kB",
                f"connect from unknown[192.168.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}]",
                "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)",
            ])  # fmt: skip
            msg = f"Jan 10 {clock} {host} {proc}[{rnd.randint(100, 65000)}]: {text}"
            logger, source = proc, "journald"
        else:
            level = rnd.choices(["debug", "info", "warning", "error"], [10, 75, 10, 5])[0]
            body = {
                "ts": f"2026-01-10T{clock}.{rnd.randint(0, 999):03d}Z",
                "level": level,
                "logger": "orders.service",
                "msg": rnd.choice(
                    ["order created", "payment authorized", "cache miss", "retrying request"]
                ),
                "request_id": str(uuid.UUID(int=rnd.getrandbits(128))),
                "trace_id": uuid.UUID(int=rnd.getrandbits(128)).hex,
                "user_id": rnd.randint(1, 10**6),
                "duration_ms": round(rnd.random() * 500, 2),
            }
            msg = json.dumps(body, separators=(",", ":"))
            logger, source = "orders.service", "/var/log/app/orders.json"
        out.append({"server_id": host, "timestamp": ts, "message": msg, "type": level,
                    "logger": logger, "source": source})  # fmt: skip
    return out


def zstd_frames_bytes(lines: list[str], level: int = 3, frame: int = 1 << 20) -> int:
    raw = "".join(m + "\n" for m in lines).encode()
    cctx = zstandard.ZstdCompressor(level=level)
    return sum(len(cctx.compress(raw[i : i + frame])) for i in range(0, len(raw), frame))


# -- the server side (a subprocess) -------------------------------------------------------


# -- the client side ------------------------------------------------------------------


async def _sender(
    port: int, queue: list[bytes], latencies: list[float], refused: list[int]
) -> None:
    """One keep-alive connection speaking just enough HTTP/1.1 (the load generator shares
    the two cores with the server, so it must be cheap)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    prefix = b"POST /api/v1/logs HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    try:
        while queue:
            body = queue.pop()
            t = time.perf_counter()
            writer.write(b"%sContent-Length: %d\r\n\r\n%s" % (prefix, len(body), body))
            status = await reader.readline()
            size = 0
            retry = 0.0
            while (header := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = header.partition(b":")
                if name.lower() == b"content-length":
                    size = int(value)
                elif name.lower() == b"retry-after":
                    retry = float(value)
            await reader.readexactly(size)
            if b" 429 " in status:
                refused[0] += 1
                queue.append(body)
                await asyncio.sleep(retry or 1.0)
                continue
            if b" 200 " not in status:
                raise RuntimeError(f"ingest failed: {status!r}")
            latencies.append(time.perf_counter() - t)
    finally:
        writer.close()
        await writer.wait_closed()


async def _ingest(port: int, bodies: list[bytes]) -> tuple[float, list[float], int]:
    queue = list(reversed(bodies))
    latencies: list[float] = []
    refused = [0]
    started = time.perf_counter()
    await asyncio.gather(*(_sender(port, queue, latencies, refused) for _ in range(CLIENTS)))
    return time.perf_counter() - started, latencies, refused[0]


async def _timed_get(
    client: httpx.AsyncClient, params: dict[str, str], n: int = 5
) -> dict[str, object]:
    times = []
    data: dict[str, object] = {}
    for _ in range(n):
        t = time.perf_counter()
        r = await client.get("/api/v1/logs", params=params)
        times.append(time.perf_counter() - t)
        r.raise_for_status()
        data = r.json()["data"]
    logs = data["logs"]
    assert isinstance(logs, list)
    return {
        "median_ms": round(statistics.median(times) * 1000, 1),
        "min_ms": round(min(times) * 1000, 1),
        "lines": len(logs),
        "archives_scanned": data["archives_scanned"],
        "archives_pruned": data["archives_pruned"],
    }


async def _tail_latency(base: str, port: int, n: int = 200) -> dict[str, object]:
    import websockets

    url = f"ws://127.0.0.1:{port}/loki/api/v1/tail?query=%7Bserver_id%3D%22tail-host%22%7D"
    lat: list[float] = []
    async with websockets.connect(url) as ws, httpx.AsyncClient(base_url=base) as client:
        for i in range(n):
            body = {"server_id": "tail-host", "message": f"tail {i}", "type": "info"}
            t = time.perf_counter()
            await client.post("/api/v1/logs", json=body)
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
                values = [v[1] for s in msg.get("streams", []) for v in s["values"]]
                if f"tail {i}" in values:
                    break
            lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    return {
        "samples": n,
        "p50_ms": round(lat[len(lat) // 2], 2),
        "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2),
        "max_ms": round(lat[-1], 2),
        "note": "client side: POST sent until the line arrives on the WebSocket "
        "(includes the HTTP round trip and the WAL append)",
    }


async def _wait_committed(client: httpx.AsyncClient, total: int, deadline_s: float = 600) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        st = (await client.get("/api/v1/logs/stats")).json()["data"]["store"]
        if st["head_lines"] + st["archived_lines"] >= total:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError("lines were not committed in time")


async def _http_phase(
    tmp: Path, bodies: list[bytes], lines: int, needle: str, now_ms: int, profile: Path | None
) -> dict[str, object]:
    async with LogBenchServer(tmp, profile) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        load0 = load_average()
        cpu0 = srv.cpu_seconds()
        srv.start_profile("http_ingest")
        t0 = time.perf_counter()
        elapsed, lat, refused = await _ingest(srv.port, bodies)
        ingest_cpu = srv.cpu_seconds() - cpu0
        lat.sort()
        async with httpx.AsyncClient(base_url=base, timeout=300) as client:
            await _wait_committed(client, lines)
            committed_s = time.perf_counter() - t0
            commit_cpu = srv.cpu_seconds() - cpu0
            srv.stop_profile()
            load1 = load_average()
            r = await client.post("/api/v1/logs/rotate", params={"flush": "true"})
            r.raise_for_status()
            fresh = (await client.get("/api/v1/logs/stats")).json()["data"]["store"]
            t_c = time.perf_counter()
            cpu_c = srv.cpu_seconds()
            r = await client.post("/api/v1/logs/rotate", params={"compact": "true"})
            r.raise_for_status()
            compact_s = time.perf_counter() - t_c
            compact_cpu = srv.cpu_seconds() - cpu_c
            stats = (await client.get("/api/v1/logs/stats")).json()["data"]
            needle_res = await _timed_get(
                client, {"q": needle, "start_time": str(now_ms - 86_400_000)}
            )
            top_res = await _timed_get(
                client, {"server_id": "web-03", "level": "error", "limit": "100"}
            )
        tail = await _tail_latency(base, srv.port)
    return {
        "ingest": {
            "lines_per_s": round(lines / elapsed),
            "lines_per_server_cpu_s": round(lines / ingest_cpu) if ingest_cpu else None,
            "server_cpu_s": round(ingest_cpu, 1),
            "seconds": round(elapsed, 2),
            "clients": CLIENTS,
            "lines_per_request": LINES_PER_REQUEST,
            "request_p50_ms": round(lat[len(lat) // 2] * 1000, 1),
            "request_p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 1),
            "refused_429_retried": refused,
            "committed_to_duckdb_after_s": round(committed_s, 2),
            "server_cpu_s_until_committed": round(commit_cpu, 1),
            "load_average_before_after": [load0, load1],
        },
        "fresh": fresh,
        "stats": stats,
        "compact_s": compact_s,
        "compact_cpu_s": compact_cpu,
        "needle": needle_res,
        "top": top_res,
        "tail": tail,
    }


async def _grpc_phase(
    tmp: Path, calls_file: Path, lines: int, profile: Path | None
) -> dict[str, object]:
    async with LogBenchServer(tmp, profile) as srv:
        load0 = load_average()
        cpu0 = srv.cpu_seconds()
        srv.start_profile("grpc_ingest")
        t0 = time.perf_counter()
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.logs_grpc_client", "--send",
            f"127.0.0.1:{srv.grpc_port}", str(calls_file),
            cwd=Path(__file__).parent.parent, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError(f"the gRPC client failed with status {client.returncode}")
        sent = json.loads(out)
        ingest_cpu = srv.cpu_seconds() - cpu0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{srv.port}") as http:
            await _wait_committed(http, lines)
            committed_s = time.perf_counter() - t0
            commit_cpu = srv.cpu_seconds() - cpu0
            srv.stop_profile()
            store = (await http.get("/api/v1/logs/stats")).json()["data"]["store"]
        stored = store["head_lines"] + store["archived_lines"]
        if stored != lines:
            raise RuntimeError(f"gRPC ingest stored {stored} lines, sent {lines}")
        elapsed = float(sent["seconds"])
        return {
            "lines_per_s": round(lines / elapsed),
            "lines_per_server_cpu_s": round(lines / ingest_cpu) if ingest_cpu else None,
            "server_cpu_s": round(ingest_cpu, 1),
            "seconds": round(elapsed, 2),
            "streams": STREAMS,
            "agents": 25,
            "records_per_batch": BATCH_RECORDS,
            "batches_per_call": BATCHES_PER_CALL,
            "call_p50_ms": sent["call_p50_ms"],
            "call_p99_ms": sent["call_p99_ms"],
            "failed_calls_retried_by_status": sent["retries"],
            "committed_to_duckdb_after_s": round(committed_s, 2),
            "server_cpu_s_until_committed": round(commit_cpu, 1),
            "load_average_before_after": [load0, load_average()],
        }


async def run(lines: int, profile: Path | None = None) -> dict[str, object]:
    now_ms = int(time.time() * 1000)
    t0 = time.perf_counter()
    # 40 minutes of lines, or 20 hours for large corpora (one line per ms would otherwise
    # run into the future, where the server rightly refuses lines as too_new).
    span_ms = 2_400_000 if lines <= 2_400_000 else 20 * 3_600_000
    docs = corpus(lines, seed=7, t0_ms=now_ms - span_ms - 600_000, span_ms=span_ms)
    gen_s = time.perf_counter() - t0
    raw_msg = sum(len(str(d["message"]).encode()) for d in docs) / lines
    needle = next(json.loads(str(d["message"]))["request_id"] for d in docs[lines // 3 :]
                  if str(d["message"]).startswith("{"))  # fmt: skip
    frames = zstd_frames_bytes([str(d["message"]) for d in docs])
    bodies = [
        json.dumps(docs[i : i + LINES_PER_REQUEST], separators=(",", ":")).encode()
        for i in range(0, lines, LINES_PER_REQUEST)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        calls_file = Path(tmp) / "grpc_calls.bin"
        write_calls(docs, calls_file)
        del docs
        (Path(tmp) / "http").mkdir()
        (Path(tmp) / "grpc").mkdir()
        http = await _http_phase(Path(tmp) / "http", bodies, lines, needle, now_ms, profile)
        del bodies
        grpc_res = await _grpc_phase(Path(tmp) / "grpc", calls_file, lines, profile)
    fresh = http["fresh"]
    stats = http["stats"]
    assert isinstance(fresh, dict)
    assert isinstance(stats, dict)
    store = stats["store"]
    return {
        "corpus": {
            "lines": lines,
            "scaled_from": 10_000_000,
            "message_bytes_per_line": round(raw_msg, 1),
            "generation_s": round(gen_s, 1),
        },
        "ingest_http_json": http["ingest"],
        "ingest_grpc_stream": grpc_res,
        "storage": {
            "archives": store["archives"],
            "archived_lines": store["archived_lines"],
            "fresh_archives_zstd3_bytes_per_line": round(fresh["stored_bytes"] / lines, 2),
            "after_compaction_zstd9_bytes_per_line": round(store["stored_bytes"] / lines, 2),
            "compaction_s": round(float(str(http["compact_s"])), 1),
            "compaction_server_cpu_s": round(float(str(http["compact_cpu_s"])), 1),
            "token_index_bytes_per_line": round(store["index_bytes"] / lines, 2),
            "archives_plus_index_bytes_per_line": round(
                (store["stored_bytes"] + store["index_bytes"]) / lines, 2
            ),
            "zstd3_1MiB_frames_bytes_per_line": round(frames / lines, 2),
            "raw_message_bytes_per_line": round(store["raw_bytes"] / lines, 1),
        },
        "needle_search_last_24h": http["needle"],
        "newest_100_errors_one_host": http["top"],
        "tail_latency": http["tail"],
    }


def main(argv: list[str]) -> int:
    lines = int(argv[argv.index("--lines") + 1]) if "--lines" in argv else 1_000_000
    out = Path(argv[argv.index("--out") + 1]) if "--out" in argv else RESULTS
    profile = Path(argv[argv.index("--profile") + 1]) if "--profile" in argv else None
    result = asyncio.run(run(lines, profile))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main(sys.argv[1:]))
