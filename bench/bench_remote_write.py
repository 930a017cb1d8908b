"""Remote-write ingest and query latency: this server beside VictoriaMetrics and Prometheus.

Workload (issue 5): node-exporter-like series (``bench.common.workload``), ``hosts`` × 100
series × 60 points (10 s apart, ending now); requests of 100 series × 20 points (2 000
samples, what Prometheus sends), pre-encoded once and sent identically to each receiver
by 4 concurrent keep-alive senders (a minimal HTTP/1.1 writer, so the shared 2-core CPU
goes to the receivers). Points are sent in three time-ordered rounds so no receiver
sees a series go backwards.

Per receiver: samples/s, CPU-seconds per million samples (utime+stime from
``/proc/<pid>/stat`` over the ingest, child processes included), peak RSS (``VmHWM``,
summed over child processes), bytes per sample on disk
after flushing (this server: Parquet parts after ``POST /api/v1/admin/tsdb/flush``;
VictoriaMetrics: after ``/internal/force_flush`` and ``force_merge``; Prometheus: a TSDB
snapshot block of the head), and warm median latency (5 runs after 1 warm-up) of three
``/api/v1/query_range`` queries over the data's range.

Every receiver runs with its default settings (this server's head flush timer,
``storage.flush_interval_s`` = 120 s, included); each is flushed on demand after its
ingest, through its own endpoint, so no background flush is forced into the ingest window.

Usage: ``python -m bench.bench_remote_write [hosts] [--no-victoria] [--out=PATH]``
(default 1000 = 6 M samples; ``--no-victoria`` measures this server alone and prints
without recording); bounded by ``BUDGET_S``; results in
``bench/results/remote_write.json`` (or ``PATH``, also for a ``--no-victoria`` run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common.workload import INTERVAL_MS, SERIES_PER_HOST, Workload
from monitoringserver.backends.remote_write_out import encode_write_request

RESULTS = Path(__file__).parent / "results" / "remote_write.json"
POINTS = 60
POINTS_PER_REQUEST = 20
SENDERS = 4
BUDGET_S = 300.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
QUERIES = {
    "one_series": 'node_cpu_seconds_total{instance="host-0000:9100",cpu="0",mode="idle"}',
    "sum_by_instance_rate_cpu": "sum by (instance) (rate(node_cpu_seconds_total[5m]))",
    "sum_rate_network": "sum(rate(node_network_receive_bytes_total[5m]))",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """``pid``'s live child processes and theirs (e.g. this server's decode worker)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        for child in map(int, text.split()):
            out += [child, *descendants(child)]
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its live descendants (a receiver that decodes in
    child processes is charged for them)."""
    total = 0.0
    for p in (pid, *descendants(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def peak_rss_mib(pid: int) -> float:
    """Peak RSS (``VmHWM``) of ``pid`` plus that of its live descendants."""
    total = 0.0
    for p in (pid, *descendants(pid)):
        try:
            text = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def du_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class Receiver:
    name: str
    write_path: str
    proc: subprocess.Popen[bytes]
    base: str
    headers: dict[str, str] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def hostport(self) -> tuple[str, int]:
        host, port = self.base.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                return self.proc.wait(timeout=10)
        return self.proc.returncode


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def start_receivers(tmp: Path, *, anchors: bool = True) -> list[Receiver]:
    """This server, then (with ``anchors``) VictoriaMetrics and Prometheus."""
    out = []
    data = tmp / "ms"
    ms = subprocess.Popen(
        [sys.executable, "-m", "bench.rw_server", "--data-dir", str(data)],
        env={**os.environ, "MONITORING_LOGGING__LEVEL": "warning"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (data / "http.addr").exists():
        if time.monotonic() > deadline or ms.poll() is not None:
            raise RuntimeError("monitoringserver did not start")
        time.sleep(0.05)
    base = f"http://{(data / 'http.addr').read_text().strip()}"
    token = (data / "admin.token").read_text().strip()
    wait_ready(f"{base}/readyz", ms)
    out.append(Receiver("monitoringserver", "/api/v1/write", ms, base,
                        {"Authorization": f"Bearer {token}"}))  # fmt: skip
    if not anchors:
        return out
    vm_port = free_port()
    vm = subprocess.Popen(
        ["/usr/bin/victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}",
         f"-storageDataPath={tmp / 'vm'}", "-retentionPeriod=1y", "-loggerLevel=ERROR"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{vm_port}/health", vm)
    out.append(Receiver("victoriametrics", "/api/v1/write", vm, f"http://127.0.0.1:{vm_port}"))
    prom_port = free_port()
    (tmp / "prometheus.yml").write_text("global: {}\n")
    prom = subprocess.Popen(
        ["/usr/bin/prometheus", f"--config.file={tmp / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp / 'prom'}", f"--web.listen-address=127.0.0.1:{prom_port}",
         "--web.enable-remote-write-receiver", "--web.enable-admin-api", "--log.level=error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom)
    out.append(Receiver("prometheus", "/api/v1/write", prom, f"http://127.0.0.1:{prom_port}"))
    return out


def make_rounds(hosts: int, end_ms: int) -> tuple[list[list[bytes]], int]:
    """Three rounds of pre-encoded bodies (each round: 20 points of every series)."""
    wl = Workload(hosts=hosts)
    start_ms = end_ms - (POINTS - 1) * INTERVAL_MS
    batches = wl.host_batches(start_ms, POINTS)
    rounds: list[list[bytes]] = []
    total = 0
    for r in range(POINTS // POINTS_PER_REQUEST):
        lo = start_ms + r * POINTS_PER_REQUEST * INTERVAL_MS
        hi = lo + POINTS_PER_REQUEST * INTERVAL_MS
        bodies = []
        for b in batches:
            part = b.select((b.ts_ms >= lo) & (b.ts_ms < hi))
            total += len(part)
            bodies.append(encode_write_request(part))
        rounds.append(bodies)
    return rounds, total


async def _sender(rx: Receiver, queue: asyncio.Queue[bytes]) -> None:
    """Send bodies from ``queue`` over one keep-alive connection. A 429 or 503 is
    retried as Prometheus retries it (after ``Retry-After``, else 30 ms, the minimum
    back-off of its queue manager) and counted in ``rx.retries``; any other non-2xx
    fails the run."""
    host, port = rx.hostport
    reader, writer = await asyncio.open_connection(host, port)
    extra = "".join(f"{k}: {v}\r\n" for k, v in rx.headers.items())
    head = (
        f"POST {rx.write_path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
        "Content-Encoding: snappy\r\nContent-Type: application/x-protobuf\r\n"
        "X-Prometheus-Remote-Write-Version: 0.1.0\r\n"
    ).encode()
    try:
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            writer.write(head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            status = await reader.readline()
            length = 0
            chunked = False
            retry_after = 0.03
            while (line := await reader.readline()) not in (b"\r\n", b""):
                low = line.lower()
                if low.startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif low.startswith(b"transfer-encoding:") and b"chunked" in low:
                    chunked = True
                elif low.startswith(b"retry-after:"):
                    retry_after = float(line.split(b":")[1])
            payload = await reader.readexactly(length) if not chunked else b""
            if chunked:
                while (size := int((await reader.readline()).strip() or b"0", 16)) > 0:
                    payload += await reader.readexactly(size + 2)
                await reader.readline()
            code = status.split()[1]
            if code in (b"429", b"503"):
                rx.retries[code.decode()] = rx.retries.get(code.decode(), 0) + 1
                await asyncio.sleep(retry_after)
                queue.put_nowait(body)
                continue
            if not code.startswith(b"2"):
                raise RuntimeError(f"{rx.name}: {status!r} {payload[:300]!r}")
    finally:
        writer.close()
        await writer.wait_closed()


async def send_all(rx: Receiver, rounds: list[list[bytes]]) -> float:
    started = time.perf_counter()
    for bodies in rounds:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        await asyncio.gather(*(_sender(rx, queue) for _ in range(SENDERS)))
    return time.perf_counter() - started


def query_latency(rx: Receiver, query: str, start_s: float, end_s: float) -> dict[str, Any]:
    params = {"query": query, "start": f"{start_s:.3f}", "end": f"{end_s:.3f}", "step": "30"}
    timings = []
    series = 0
    with httpx.Client(base_url=rx.base, headers=rx.headers, timeout=120) as client:
        for i in range(6):
            t0 = time.perf_counter()
            r = client.get("/api/v1/query_range", params=params)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                return {"error": f"HTTP {r.status_code}: {r.text[:200]}"}
            series = len(r.json()["data"]["result"])
            if i:
                timings.append(elapsed)
    return {"median_ms": round(statistics.median(timings) * 1000, 2), "series": series}


def wait_until(check: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.5)
    return False


def bytes_on_disk(rx: Receiver, tmp: Path, samples: int) -> dict[str, Any]:
    if rx.name == "monitoringserver":
        flushed_samples = 0

        def flushed() -> bool:
            # The server's local agent keeps writing a few samples every 10 s: flush again
            # until a flush leaves the head empty.
            nonlocal flushed_samples
            r = httpx.post(f"{rx.base}/api/v1/admin/tsdb/flush", headers=rx.headers, timeout=300)
            r.raise_for_status()
            flushed_samples += int(r.json()["data"]["flushed_samples"])
            r = httpx.get(f"{rx.base}/api/v1/status/storage", headers=rx.headers, timeout=30)
            return int(r.json()["data"].get("head_samples", 1)) == 0

        ok = wait_until(flushed, 60)
        r = httpx.get(f"{rx.base}/api/v1/status/storage", headers=rx.headers, timeout=30)
        data = r.json()["data"]
        raw = data.get("resolutions", {}).get("raw", {})
        files = du_bytes(tmp / "ms" / "metrics") if (tmp / "ms" / "metrics").exists() else 0
        return {"bytes": files, "raw_parquet_bytes": raw.get("bytes"), "head_flushed": ok,
                "flushed_samples": flushed_samples,
                "what": "Parquet parts (raw + rollups) after /api/v1/admin/tsdb/flush"}  # fmt: skip
    if rx.name == "victoriametrics":
        httpx.get(f"{rx.base}/internal/force_flush", timeout=60)
        month = time.strftime("%Y_%m", time.gmtime())
        httpx.get(f"{rx.base}/internal/force_merge", params={"partition_prefix": month},
                  timeout=120)  # fmt: skip
        time.sleep(3)
        return {"bytes": du_bytes(tmp / "vm" / "data"), "what": "data/ after force_merge"}
    r = httpx.post(f"{rx.base}/api/v1/admin/tsdb/snapshot", timeout=120)
    name = r.json()["data"]["name"]
    return {"bytes": du_bytes(tmp / "prom" / "snapshots" / name),
            "what": "TSDB snapshot block of the head (compacted, like a 2 h block)"}  # fmt: skip


def merged_bytes(data_dir: Path, samples: int) -> dict[str, Any]:
    """This server's equivalent of VictoriaMetrics' ``force_merge``, run offline on the
    stopped server's data directory: every run of a time partition merged into one
    (``merge_fan_in=2``), so the figure compares like with like. Rollups are only built
    when a partition closes (not yet for this data), so the bytes are raw samples."""
    from prometheus_client import CollectorRegistry

    from monitoringserver.pipeline.metric_store import open_metric_store
    from monitoringserver.storage.options import StorageOptions

    async def run() -> dict[str, Any]:
        handle = await open_metric_store(
            data_dir, StorageOptions(merge_fan_in=2), registry=CollectorRegistry()
        )
        try:
            await handle.compact_now()
            stats = handle.querier.stats()
        finally:
            await handle.aclose()
        raw = stats.resolutions["raw"]
        return {
            "raw_bytes": raw.bytes,
            "raw_samples": raw.samples,
            "raw_bytes_per_sample": round(raw.bytes / samples, 3),
            "all_bytes": du_bytes(data_dir / "metrics"),
            "what": "Parquet after merging every run of each partition (offline, server stopped)",
        }

    return asyncio.run(run())


def main(argv: list[str]) -> int:
    anchors = "--no-victoria" not in argv
    outs = [a.removeprefix("--out=") for a in argv if a.startswith("--out=")]
    results_path = Path(outs[-1]) if outs else RESULTS
    args = [a for a in argv if not a.startswith("--")]
    hosts = int(args[0]) if args else 1000
    began = time.monotonic()
    load_before = os.getloadavg()[0]
    end_ms = (int(time.time() * 1000) // INTERVAL_MS) * INTERVAL_MS - INTERVAL_MS
    t0 = time.perf_counter()
    rounds, total = make_rounds(hosts, end_ms)
    encode_s = time.perf_counter() - t0
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rw-") as tmpname:
        tmp = Path(tmpname)
        receivers = start_receivers(tmp, anchors=anchors)
        try:
            for rx in receivers:
                if time.monotonic() - began > BUDGET_S:
                    rx.result = {"skipped": "time budget spent"}
                    continue
                cpu0 = cpu_seconds(rx.proc.pid)
                secs = asyncio.run(send_all(rx, rounds))
                cpu = cpu_seconds(rx.proc.pid) - cpu0
                rx.result = {
                    "samples_per_s": round(total / secs),
                    "ingest_seconds": round(secs, 2),
                    "cpu_seconds_per_million_samples": round(cpu / (total / 1e6), 3),
                    "retried_by_status": dict(rx.retries),
                }
            start_s = (end_ms - (POINTS - 1) * INTERVAL_MS) / 1000
            for rx in receivers:
                if "skipped" in rx.result:
                    continue
                rx.result["disk"] = bytes_on_disk(rx, tmp, total)
                rx.result["bytes_per_sample"] = round(rx.result["disk"]["bytes"] / total, 3)
                rx.result["queries"] = {
                    name: query_latency(rx, q, start_s, end_ms / 1000)
                    for name, q in QUERIES.items()
                }
                rx.result["peak_rss_mib"] = round(peak_rss_mib(rx.proc.pid), 1)
        finally:
            for rx in receivers:
                rx.result["exit_status"] = rx.stop()
        ms = receivers[0]
        if ms.result.get("exit_status") == 0 and "disk" in ms.result:
            ms.result["disk_after_flush"] = ms.result.pop("disk")
            ms.result["bytes_per_sample_after_flush"] = ms.result.pop("bytes_per_sample")
            ms.result["disk"] = merged_bytes(tmp / "ms", total)
            ms.result["bytes_per_sample"] = ms.result["disk"]["raw_bytes_per_sample"]
        results = {rx.name: rx.result for rx in receivers}
    out = {
        "workload": f"{hosts} hosts x {SERIES_PER_HOST} series x {POINTS} points "
        f"({total} samples), {POINTS_PER_REQUEST * SERIES_PER_HOST} samples per request, "
        f"{SENDERS} concurrent senders, identical pre-encoded bodies for every receiver",
        "samples": total,
        "encode_seconds": round(encode_s, 2),
        "receivers": results,
        "load_average_1m_before": round(load_before, 2),
        "cpus": os.cpu_count(),
        "wall_seconds": round(time.monotonic() - began, 1),
    }
    if anchors or outs:  # an iteration run without the anchors is printed, not recorded
        results_path.parent.mkdir(exist_ok=True)
        results_path.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
