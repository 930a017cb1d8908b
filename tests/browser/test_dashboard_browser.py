"""The dashboard in a real Chromium (Debian's /usr/bin/chromium via playwright): a real
server in-process on port 0 with the log pipeline and the dashboard router wired as the
composition root does, two nodes posted as seed-002 JSON, sign-in with the admin token,
nodes table and uPlot charts rendered, a log line posted while the page is open arrives
live in the logs tab, search narrows the list, and a service command reports its error."""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import APIRouter

from monitoringserver.config import Config, ServerOptions, load_config
from monitoringserver.pipeline.log_pipeline import LogPipeline, open_log_pipeline
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.dashboard import dashboard_router
from monitoringserver.web.routers.logs import LogsWeb, logs_router

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = Path(os.environ.get("DASHBOARD_SCREENSHOT", "/tmp/dashboard.png"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is not installed"),
]


async def _running(data_dir: Path) -> AsyncIterator[tuple[Server, str]]:
    base = load_config(None, env={"MONITORING_STORAGE__BATCH_INTERVAL_S": "0.05"})
    opts = ServerOptions(data_dir=str(data_dir), http_listen="127.0.0.1:0")
    srv = Server(config=Config(server=opts, storage=base.storage), out=io.StringIO())
    pipelines: list[LogPipeline] = []

    def logs(s: Server) -> APIRouter:
        assert s.database is not None
        assert s.store is not None
        p = open_log_pipeline(
            s.database, s.data_dir / "logs", metrics_sink=s.store.appender.append, wal_fsync="never"
        )
        pipelines.append(p)
        web = LogsWeb(
            p.writer, p.querier, p.store, p.compressor, p.aggregator, p.bus, p.parser.stats
        )
        return logs_router(web)

    def dashboard(s: Server) -> APIRouter:
        p = pipelines[0]
        return dashboard_router(s, log_bus=p.bus, log_querier=p.querier)

    srv.router_factories += [logs, dashboard]
    srv.service_factories.append(lambda _s: Service("logs", pipelines[0].run, pipelines[0].aclose))
    await srv.start()
    task = asyncio.create_task(srv.serve())
    deadline = time.monotonic() + 30
    while not srv.ready:
        assert not task.done(), task.exception()
        assert time.monotonic() < deadline, "server did not become ready"
        await asyncio.sleep(0.01)
    try:
        yield srv, (data_dir / "admin.token").read_text().strip()
    finally:
        srv.request_stop()
        await task
        await srv.aclose()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, str]]:
    async for s in _running(tmp_path / "data"):
        yield s


async def _post_nodes(base: str, token: str) -> None:
    now = time.time()
    docs = [
        {
            "server_id": node,
            "timestamp": now - 15 * (5 - i),
            "metrics": {
                "cpu_usage_percent": cpu + 7 * i,
                "memory_usage_percent": mem + 2 * i,
                "disk_usage_percent": disk,
            },
        }
        for node, cpu, mem, disk in (("web-1", 12.0, 40.0, 55.0), ("db-1", 35.0, 71.0, 83.0))
        for i in range(6)
    ]
    docs += [  # the agent's systemd collector: 1 for the unit's current state
        {
            "server_id": "web-1",
            "timestamp": now,
            "metrics": {"node_systemd_unit_state": float(state == "failed")},
            "labels": {"name": "nginx.service", "state": state},
        }
        for state in ("active", "failed")
    ]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        r = await client.post("/api/v1/metrics", json=docs)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 20
        while True:  # samples are queryable once the batcher committed them
            nodes = (await client.get("/api/dashboard/metrics")).json()["nodes"]
            if set(nodes) == {"web-1", "db-1"}:
                return
            assert time.monotonic() < deadline, nodes
            await asyncio.sleep(0.05)


async def _post_logs(base: str, token: str) -> None:
    lines = [
        {
            "server_id": "db-1",
            "message": "disk almost full on /var",
            "level": "error",
            "logger": "Service.disk",
        },
        {"server_id": "web-1", "message": "request served", "level": "info", "logger": "http"},
    ]
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as c:
        r = await c.post("/api/v1/logs", json=lines)
        assert r.status_code == 200, r.text


async def test_dashboard_in_chromium(server: tuple[Server, str]) -> None:
    from playwright.async_api import async_playwright

    srv, token = server
    base = f"http://{srv.http_address}"
    await _post_nodes(base, token)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{base}/dashboard")
            await page.wait_for_selector("#login-form", state="visible")
            await page.fill("#token", "not-a-token")
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector("#login-error:has-text('not valid')")
            await page.fill("#token", token)
            await page.click("#login-form button[type=submit]")
            await page.wait_for_selector("#nodes tbody tr[data-node='db-1']")
            await page.wait_for_selector("#nodes tbody tr[data-node='web-1']")
            await page.wait_for_selector("#charts .chart canvas")
            await page.wait_for_selector("#conn.on")
            await page.wait_for_selector("#stats .stat")
            rows = await page.locator("#nodes tbody tr").all_inner_texts()
            assert any("web-1" in r and "online" in r and "47.0 %" in r for r in rows), rows
            assert await page.locator("#charts .chart canvas").count() >= 2
            # the session is an HttpOnly cookie: the page's scripts never see the token
            assert token not in await page.evaluate("document.cookie")
            await page.click("#nodes tbody tr[data-node='web-1']")
            await page.wait_for_selector("#charts .chart.selected[data-node='web-1'] canvas")
            await page.screenshot(path=str(SCREENSHOT), full_page=True)
            await page.click("button.tab[data-tab='logs']")
            await page.wait_for_selector("#logs .filters", state="visible")
            await _post_logs(base, token)
            await page.wait_for_selector("#log-lines .lvl-ERROR:has-text('ERROR')")
            await page.wait_for_selector("#log-lines:has-text('disk almost full on /var')")
            await page.wait_for_selector("#log-lines:has-text('request served')")
            await page.fill("#f-search", "almost full")
            await page.wait_for_function(
                "!document.querySelector('#log-lines').textContent.includes('request served')"
            )
            await page.wait_for_selector("#log-lines:has-text('almost full')")
            await page.screenshot(path=str(SCREENSHOT.with_name("dashboard-logs.png")))
            await page.click("button.tab[data-tab='services']")
            row = page.locator("#svc-table tr[data-service='nginx.service']")
            assert await row.locator("td.st-failed").inner_text() == "failed"
            await row.locator("button[data-action='restart']").click()
            # the nodes router (control) is not wired here: the page reports the failure
            await page.wait_for_selector("#svc-result:has-text('restart nginx.service on web-1')")
            await page.wait_for_selector("#svc-result:has-text('failed')")
            await page.fill("#svc-name", "cron")
            await page.click("#svc-form button[data-action='stop']")
            await page.wait_for_selector("#svc-result:has-text('stop cron on db-1 failed')")
            await page.screenshot(path=str(SCREENSHOT.with_name("dashboard-services.png")))
            assert errors == []
        finally:
            await browser.close()
