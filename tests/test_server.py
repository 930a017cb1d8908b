"""The composition root in-process (port 0): start, serve, stop, restart, failures."""

from __future__ import annotations

import asyncio
import io
import logging
import os
from pathlib import Path

import httpx
import pytest

from monitoringserver.cli import main
from monitoringserver.config import Config, ServerOptions, load_config
from monitoringserver.server import DataDirLock, Server, _main
from monitoringserver.storage.options import StorageOptions


def config(data_dir: Path, **server: object) -> Config:
    env = {"MONITORING_STORAGE__BATCH_INTERVAL_S": "0.05"}
    base = load_config(None, env=env)
    fields: dict[str, object] = {"data_dir": str(data_dir), "http_listen": "127.0.0.1:0", **server}
    opts = ServerOptions(**fields)  # type: ignore[arg-type]
    return Config(server=opts, storage=base.storage)


async def running(cfg: Config) -> tuple[Server, asyncio.Task[None], io.StringIO]:
    out = io.StringIO()
    srv = Server(config=cfg, out=out)
    await srv.start()
    task = asyncio.create_task(srv.serve())
    deadline = asyncio.get_running_loop().time() + 30
    while not srv.ready:
        assert not task.done(), task.exception()
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    return srv, task, out


async def stop(srv: Server, task: asyncio.Task[None]) -> None:
    srv.request_stop()
    await task
    await srv.aclose()


async def test_serve_bootstrap_ingest_restart(data_dir: Path) -> None:
    srv, task, out = await running(config(data_dir))
    token = (data_dir / "admin.token").read_text().strip()
    assert token in out.getvalue()
    assert oct(os.stat(data_dir / "admin.token").st_mode & 0o777) == "0o600"
    assert (data_dir / "http.addr").read_text().strip() == srv.http_address
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=f"http://{srv.http_address}", headers=headers) as c:
        assert (await c.get("/readyz")).status_code == 200
        r = await c.post("/api/v1/metrics", json={"server_id": "s", "metrics": {"a": 1.0}})
        assert r.status_code == 200
        health = (await c.get("/api/v1/health")).json()
        assert health["components"]["auth"]["status"] == "healthy"
        # the CLI goes through this server's API while it holds the data directory
        created = await asyncio.to_thread(
            main, ["token", "create", "--name", "x", "--scope", "read", "--data-dir", str(data_dir)]
        )
        assert created == 0
    await stop(srv, task)
    assert not (data_dir / "http.addr").exists()

    srv, task, out = await running(config(data_dir))
    assert "admin token" not in out.getvalue()
    async with httpx.AsyncClient(base_url=f"http://{srv.http_address}", headers=headers) as c:
        r = await c.get("/api/v1/metrics", params={"server_id": "s"})
        assert [p[1] for p in r.json()["data"][0]["points"]] == [1.0]
        tokens = (await c.get("/api/v1/admin/tokens")).json()["data"]
        assert {t["name"] for t in tokens} == {"admin", "x"}
    await stop(srv, task)


async def test_auth_disabled_warns_and_admits_anyone(
    data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(data_dir)
    cfg = Config(
        server=cfg.server,
        storage=cfg.storage,
        auth=load_config(None, env={"MONITORING_AUTH__ENABLED": "false"}).auth,
    )
    with caplog.at_level(logging.WARNING):
        srv, task, _ = await running(cfg)
    assert "authentication is DISABLED" in caplog.text
    assert not (data_dir / "admin.token").exists()
    async with httpx.AsyncClient(base_url=f"http://{srv.http_address}") as c:
        assert (await c.get("/api/v1/status/storage")).status_code == 200
        health = (await c.get("/api/v1/health")).json()
        assert health["status"] == "degraded"
    await stop(srv, task)


async def test_locked_data_dir_and_busy_port(data_dir: Path) -> None:
    lock = DataDirLock(data_dir)
    assert lock.try_acquire()
    try:
        assert await _main(config(data_dir), io.StringIO()) == 1
    finally:
        lock.release()
    srv, task, _ = await running(config(data_dir))
    other = data_dir.parent / "other"
    busy = config(other, http_listen=srv.http_address)
    assert await _main(busy, io.StringIO()) == 1
    released = DataDirLock(other)
    assert released.try_acquire()  # the failed start let go of its lock
    released.release()
    await stop(srv, task)


def test_storage_options_reach_the_config() -> None:
    assert isinstance(load_config(None, env={}).storage, StorageOptions)


async def test_router_and_service_factories_are_wired(data_dir: Path) -> None:
    from fastapi import APIRouter

    from monitoringserver.server import Service
    from monitoringserver.web.app import ComponentHealth, HealthStatus

    events: list[str] = []
    stopped = asyncio.Event()

    def router(srv: Server) -> APIRouter:
        r = APIRouter()

        @r.get("/extra")
        async def extra() -> dict[str, bool]:
            return {"store": srv.store is not None}

        return r

    def service(_srv: Server) -> Service:
        async def run() -> None:
            events.append("run")
            await stopped.wait()

        async def stop_service() -> None:
            events.append("stop")
            stopped.set()

        async def probe() -> ComponentHealth:
            return ComponentHealth(HealthStatus.DEGRADED, "warming up")

        _srv.health_checks["svc"] = probe
        return Service("svc", run, stop_service)

    out = io.StringIO()
    srv = Server(config=config(data_dir), out=out)
    srv.router_factories.append(router)
    srv.service_factories.append(service)
    await srv.start()
    task = asyncio.create_task(srv.serve())
    while not srv.ready:
        assert not task.done()
        await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=f"http://{srv.http_address}") as c:
        assert (await c.get("/extra")).json() == {"store": True}
        health = (await c.get("/api/v1/health")).json()
        assert health["components"]["svc"] == {"status": "degraded", "detail": "warming up"}
    await stop(srv, task)
    assert events == ["run", "stop"]


async def test_storage_health_degrades_when_the_wal_grows(data_dir: Path) -> None:
    from types import SimpleNamespace

    from monitoringserver.metrics.api import StoreStats
    from monitoringserver.web.app import HealthStatus

    cfg = config(data_dir)
    srv = Server(config=cfg, out=io.StringIO())

    def stats(wal: int) -> StoreStats:
        return StoreStats(1, 2, {}, wal, None, None)

    for wal, expected in [(10, HealthStatus.HEALTHY), (10**12, HealthStatus.DEGRADED)]:
        querier = SimpleNamespace(stats=lambda w=wal: stats(w))
        srv.store = SimpleNamespace(querier=querier)  # type: ignore[assignment]
        assert (await srv._storage_health()).status is expected
