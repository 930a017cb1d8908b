"""Forwarding to a real VictoriaMetrics through an outage and a server restart: every
sample arrives exactly once (counted with VictoriaMetrics' /api/v1/export)."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest

from monitoringserver.model.samples import SampleBatch
from monitoringserver.pipeline.forwarder import ForwardOptions
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.forwarding import Forwarding
from tests.conftest import free_port
from tests.ingest.promhelp import External, running_server, wait_for, wait_http

VICTORIA = "/usr/bin/victoria-metrics"

pytestmark = pytest.mark.skipif(
    shutil.which(VICTORIA) is None, reason="Debian package victoria-metrics not installed"
)

HOSTS = 20
PER_ROUND = 50  # points per series per round


def victoria(port: int, work: Path) -> External:
    return External(
        [
            VICTORIA,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={work / 'vm-data'}",
            "-retentionPeriod=1y",
            "-loggerLevel=WARN",
        ],
        work,
        "victoria-metrics",
    )


def round_batch(round_no: int, base_ms: int) -> SampleBatch:
    labels = [(("__name__", "fwd_test"), ("host", f"h{i}")) for i in range(HOSTS)]
    ts = base_ms + round_no * PER_ROUND * 1000 + np.arange(PER_ROUND, dtype=np.int64) * 1000
    return SampleBatch(
        labels,
        np.repeat(np.arange(HOSTS, dtype=np.uint32), PER_ROUND),
        np.tile(ts, HOSTS),
        np.tile(np.arange(PER_ROUND, dtype=np.float64) + round_no * 1000, HOSTS),
    )


def exported(port: int) -> list[tuple[str, int]]:
    r = httpx.get(
        f"http://127.0.0.1:{port}/api/v1/export",
        params={"match[]": "fwd_test", "start": "0"},
        timeout=10,
    )
    out: list[tuple[str, int]] = []
    for line in r.text.splitlines():
        item = json.loads(line)
        out.extend((item["metric"]["host"], t) for t in item["timestamps"])
    return out


async def test_forward_through_outage_and_restart_exactly_once(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "vm"
    vm = victoria(port, work).start()
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/health", vm)
    options = ForwardOptions(
        url=f"http://127.0.0.1:{port}/api/v1/write",
        min_backoff_s=0.05,
        max_backoff_s=0.5,
        max_samples_per_request=300,
        flush_interval_s=0.05,
    )

    def service(server: Server) -> Service:
        shim = SimpleNamespace(
            config=SimpleNamespace(forward=options),
            store=server.store,
            data_dir=server.data_dir,
            registry=server.registry,
            health_checks=server.health_checks,
        )
        return Service(*Forwarding().service(shim))

    async def forward_status(srv: Server, headers: dict[str, str]) -> str:
        async with httpx.AsyncClient(base_url=f"http://{srv.http_address}") as client:
            r = await client.get("/api/v1/health", headers=headers)
            status: str = r.json()["components"]["forward"]["status"]
            return status

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    base_ms = int(time.time() * 1000) - 3_600_000
    expected = 0
    try:
        async with running_server(data_dir, services=[service]) as (srv, headers):
            assert srv.store is not None
            await srv.store.appender.append(round_batch(0, base_ms))
            expected += HOSTS * PER_ROUND
            await wait_for(
                lambda: len(exported(port)) == HOSTS * PER_ROUND,
                timeout_s=60,
                what="round 0 in VictoriaMetrics",
            )
            vm.stop()  # outage: the next rounds wait in the disk queue
            for round_no in (1, 2):
                await srv.store.appender.append(round_batch(round_no, base_ms))
                expected += HOSTS * PER_ROUND

            def retried() -> bool:
                value = srv.registry.get_sample_value("monitoring_forward_retries_total")
                return bool(value and value >= 2)

            await wait_for(retried, timeout_s=30, what="retries during the outage")
            assert await forward_status(srv, headers) == "degraded"
        # the server restarted while the receiver is still down
        async with running_server(data_dir, services=[service]) as (srv, headers):
            assert srv.store is not None
            await srv.store.appender.append(round_batch(3, base_ms))
            expected += HOSTS * PER_ROUND
            vm.start()
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/health", vm)

            def complete() -> bool:
                return len(exported(port)) >= expected

            await wait_for(complete, timeout_s=90, what="every round in VictoriaMetrics")
            got = exported(port)
            assert len(got) == expected
            assert len(set(got)) == expected  # no sample twice
            sent = srv.registry.get_sample_value(
                "monitoring_forward_samples_total", {"outcome": "sent"}
            )
            assert sent == 3 * HOSTS * PER_ROUND  # rounds 1-2 from the queue, 3 live
            assert await forward_status(srv, headers) == "healthy"
    finally:
        vm.stop()
