"""Helpers for the Prometheus-ecosystem ingest tests: apps over a FakeStore, a real
in-process server with extra router/service factories, and external programs."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cramjam
import httpx
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.config import Config, ServerOptions, load_config
from monitoringserver.model.labels import Labels
from monitoringserver.proto.prompb import remote_pb2
from monitoringserver.server import Server, Service
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, create_app
from tests.fakes import FakeStore

NOW_S = 1_750_000_000.0


@dataclass
class PromWeb:
    client: httpx.AsyncClient
    store: FakeStore
    components: WebComponents
    write: dict[str, str]
    read: dict[str, str]
    now: list[float]


@asynccontextmanager
async def prom_web(routers: Sequence[APIRouter], *, auth: bool = True) -> AsyncIterator[PromWeb]:
    """An app with ``routers`` over an in-memory store; ``now`` is the mutable clock."""
    now = [NOW_S]
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: now[0])
    tokens.open()
    store = FakeStore()
    comps = WebComponents(
        appender=store,
        querier=store,
        tokens=tokens,
        registry=CollectorRegistry(),
        auth_enabled=auth,
        clock=lambda: now[0],
    )
    app = create_app(comps, routers)
    write = tokens.create("w", ["monitoring:write"])[1]
    read = tokens.create("r", ["monitoring:read"])[1]
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield PromWeb(
                client,
                store,
                comps,
                {"Authorization": f"Bearer {write}"},
                {"Authorization": f"Bearer {read}"},
                now,
            )
    finally:
        db.close()


def write_request(series: Sequence[tuple[Labels, Sequence[tuple[int, float]]]]) -> bytes:
    """A snappy-compressed remote-write body."""
    req = remote_pb2.WriteRequest()
    for labels, samples in series:
        ts = req.timeseries.add()
        for name, value in labels:
            ts.labels.add(name=name, value=value)
        for t, v in samples:
            ts.samples.add(timestamp=t, value=v)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


def server_config(data_dir: Path, **env_extra: str) -> Config:
    env = {"MONITORING_STORAGE__BATCH_INTERVAL_S": "0.05", **env_extra}
    base = load_config(None, env=env)
    opts = ServerOptions(data_dir=str(data_dir), http_listen="127.0.0.1:0")
    return Config(server=opts, storage=base.storage)


@asynccontextmanager
async def running_server(
    data_dir: Path,
    routers: Sequence[Callable[[Server], APIRouter]] = (),
    services: Sequence[Callable[[Server], Service]] = (),
    config: Config | None = None,
) -> AsyncIterator[tuple[Server, dict[str, str]]]:
    """A real in-process server with extra factories; yields it and admin headers."""
    srv = Server(config=config or server_config(data_dir), out=io.StringIO())
    srv.router_factories.extend(routers)
    srv.service_factories.extend(services)
    await srv.start()
    task = asyncio.create_task(srv.serve())
    try:
        deadline = time.monotonic() + 30
        while not srv.ready:
            assert not task.done(), task.exception()
            assert time.monotonic() < deadline, "server not ready"
            await asyncio.sleep(0.01)
        token = (data_dir / "admin.token").read_text().strip()
        yield srv, {"Authorization": f"Bearer {token}"}
    finally:
        srv.request_stop()
        await task
        await srv.aclose()


class External:
    """A program started in ``workdir`` with output to files; stopped by pid."""

    def __init__(self, argv: list[str], workdir: Path, name: str) -> None:
        self.argv = argv
        self.workdir = workdir
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> External:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (
            open(self.workdir / f"{self.name}.out", "ab") as out,
            open(self.workdir / f"{self.name}.err", "ab") as err,
        ):
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=err, cwd=self.workdir)
        return self

    def stderr(self) -> str:
        path = self.workdir / f"{self.name}.err"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


async def wait_for(check: Callable[[], Any], *, timeout_s: float = 60.0, what: str = "") -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.1)


def wait_http(url: str, proc: External, *, timeout_s: float = 30.0) -> None:
    """Block until ``url`` answers 200 (the program's readiness endpoint)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive():
            raise AssertionError(f"{proc.name} exited: {proc.stderr()}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{proc.name} not ready at {url}: {proc.stderr()}")
