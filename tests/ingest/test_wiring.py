"""Every router and service of the Prometheus-ecosystem edge wired into one real server,
as ``server.compose()`` is meant to do it: no route shadows another."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from monitoringserver.server import Server, Service
from monitoringserver.web.routers.federate import federate_router
from monitoringserver.web.routers.forwarding import Forwarding
from monitoringserver.web.routers.imports import import_router
from monitoringserver.web.routers.pushgateway import Pushgateway
from monitoringserver.web.routers.remote_write import remote_write_router
from monitoringserver.web.routers.seed004 import seed004_router
from monitoringserver.web.routers.targets import Scraping
from tests.ingest.promhelp import running_server, write_request


async def test_all_routes_and_services_together(tmp_path: Path) -> None:
    pg = Pushgateway()
    scraping = Scraping()
    forwarding = Forwarding()

    def pg_service(s: Server) -> Service:
        return Service(*pg.service(s))

    def scrape(s: Server) -> Service:
        return Service(*scraping.service(s))

    def forward(s: Server) -> Service:
        return Service(*forwarding.service(s))

    routers = [
        remote_write_router,
        import_router,
        federate_router,
        seed004_router,
        pg.router,
        scraping.router,
    ]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    now = int(time.time() * 1000)
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", "/api/v1/write", {"content": write_request([((("__name__", "a"),), [(now, 1)])])},
         204),
        ("POST", "/api/v1/import/prometheus", {"content": "b 1\n"}, 204),
        ("POST", "/write", {"content": "c v=1"}, 204),
        ("POST", "/api/v2/write", {"content": "c v=2"}, 204),
        ("PUT", "/metrics/job/x", {"content": "d 1\n"}, 200),
        ("GET", "/api/v1/pushgateway/groups", {}, 200),
        ("POST", "/simple/insert/e/1", {}, 200),
        ("GET", "/prom/metrics", {}, 200),
        ("GET", "/prom/deamon/metrics", {}, 200),
        ("GET", "/federate", {"params": {"match[]": "a"}}, 200),
        ("GET", "/api/v1/targets", {}, 200),
        ("GET", "/metrics", {}, 200),
    ]  # fmt: skip
    services = [pg_service, scrape, forward]
    async with (
        running_server(data_dir, routers=routers, services=services) as (srv, headers),
        httpx.AsyncClient(base_url=f"http://{srv.http_address}", headers=headers) as client,
    ):
        for method, path, kwargs, status in calls:
            r = await client.request(method, path, **kwargs)
            assert r.status_code == status, (method, path, r.text)
        r = await client.get("/federate", params={"match[]": "a"})
        assert r.text.startswith("# TYPE a untyped\na 1 ")
        health = (await client.get("/api/v1/health")).json()["components"]
        assert health["forward"]["status"] == "healthy"
