"""A real Prometheus scrapes the server: /federate (honor_labels) and the seed-004 pages
with the seed's User-Agent rules switched on."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter

from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.server import Server
from monitoringserver.web.routers.federate import federate_router
from monitoringserver.web.routers.imports import import_router
from monitoringserver.web.routers.seed004 import create_seed004_router
from tests.conftest import free_port
from tests.ingest.promhelp import External, running_server, wait_for, wait_http

PROMETHEUS = "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None, reason="Debian package prometheus not installed"
)


def seed004(server: Server) -> APIRouter:
    return create_seed004_router(
        PromIngestOptions(seed004_user_agents=True), registry=server.registry
    )


def config(addr: str, token: str) -> str:
    def job(name: str, path: str, extra: str = "") -> str:
        return f"""
  - job_name: {name}
    metrics_path: {path}
    authorization: {{credentials: {token}}}
    static_configs: [{{targets: ["{addr}"]}}]{extra}"""

    federate = """
    honor_labels: true
    params: {'match[]': ['{job="pushed"}']}"""
    return (
        "global: {scrape_interval: 1s, scrape_timeout: 1s}\nscrape_configs:"
        + job("federate", "/federate", federate)
        + job("citybox", "/prom/deamon/metrics")
        + job("citybox_self", "/prom/metrics")
        + "\n"
    )


async def test_prometheus_federates_and_scrapes_seed004_pages(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    routers = [federate_router, import_router, seed004]
    async with running_server(data_dir, routers=routers) as (srv, headers):
        base = f"http://{srv.http_address}"
        async with httpx.AsyncClient(base_url=base, headers=headers) as client:
            r = await client.post(
                "/api/v1/import/prometheus", content='x{job="pushed",instance="i"} 42\n'
            )
            assert r.status_code == 204
            r = await client.post(
                "/simple/insert/temperature/21.5", headers={"User-Agent": "metrics_pusher"}
            )
            assert r.status_code == 200
        port = free_port()
        work = tmp_path / "prom"
        work.mkdir()
        (work / "prometheus.yml").write_text(config(srv.http_address, headers["Authorization"][7:]))
        prom = External(
            [
                PROMETHEUS,
                f"--config.file={work / 'prometheus.yml'}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            work,
            "prometheus",
        ).start()
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/-/ready", prom)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as theirs:

                async def query(q: str) -> list[dict[str, Any]]:
                    r = await theirs.get("/api/v1/query", params={"query": q})
                    result: list[dict[str, Any]] = r.json()["data"]["result"]
                    return result

                async def all_up() -> bool:
                    ups = await query("up")
                    return len(ups) == 3 and all(u["value"][1] == "1" for u in ups)

                await wait_for(all_up, timeout_s=60, what="three healthy scrape jobs")
                (x,) = await query("x")
                assert x["metric"] == {"__name__": "x", "job": "pushed", "instance": "i"}
                assert x["value"][1] == "42"
                (temp,) = await query("temperature")
                assert temp["value"][1] == "21.5"
                assert temp["metric"]["job"] == "citybox"
                assert temp["metric"]["exported_job"] == "seed004"
                assert await query("monitoring_ingest_samples_total")
            async with httpx.AsyncClient(base_url=base, headers=headers) as client:
                r = await client.get("/last/get/prometheus", headers={"User-Agent": "checker"})
                assert float(r.text) < 30
                r = await client.get("/prom/status", headers={"User-Agent": "curl/8"})
                assert r.status_code == 403
        finally:
            prom.stop()
