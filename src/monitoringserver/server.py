"""The composition root: builds every component from the configuration and runs them.

Start-up order: lock the data directory → open the DuckDB file → tokens (and, on the very
first start, the admin token) → the metric store (replays its WAL) → the HTTP app on a
socket bound here (port 0 works: the bound address is written to ``<data-dir>/http.addr``)
→ ready. Everything runs on one (uvloop) event loop in one ``TaskGroup``; the gRPC server
and the local agent join it as further :class:`Service` entries.

Shutdown on SIGTERM/SIGINT, bounded by ``server.shutdown_timeout_s`` (10 s): not ready →
HTTP stops accepting and finishes in-flight requests → the store commits everything
acknowledged → tokens flush last-used times → the database closes → files removed, lock
released. Exit status 0 when that completed in time, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import uvicorn
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.config import Config, parse_listen
from monitoringserver.errors import ConfigError, MonitoringError, UnavailableError
from monitoringserver.pipeline.metric_store import (
    DATABASE_FILE,
    MetricStoreHandle,
    open_metric_store,
)
from monitoringserver.storage.db import Database
from monitoringserver.util.gcpolicy import GcPolicy, GcPolicyHandle, apply_gc_policy
from monitoringserver.web.app import (
    ComponentHealth,
    HealthCheck,
    HealthStatus,
    WebComponents,
    asgi_entry,
    create_app,
)
from monitoringserver.web.http_protocol import HttpProtocol

__all__ = [
    "ADMIN_TOKEN_FILE",
    "HTTP_ADDR_FILE",
    "LOCK_FILE",
    "DataDirLock",
    "Server",
    "Service",
    "compose",
    "run_server",
]

log = logging.getLogger("monitoringserver.server")

ADMIN_TOKEN_FILE = "admin.token"  # noqa: S105 (a file name)
HTTP_ADDR_FILE = "http.addr"
LOCK_FILE = "server.lock"


@dataclass(frozen=True, slots=True)
class Service:
    """A long-running component: ``run()`` until ``stop()`` is awaited (then it returns)."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    stop: Callable[[], Coroutine[Any, Any, None]]


class DataDirLock:
    """An exclusive ``flock`` on ``<data-dir>/server.lock`` holding the owner's pid.

    The server and the token CLI's direct mode both take it, so only one process opens
    the DuckDB file. The kernel releases it when the process dies, even by SIGKILL.
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by the owner only (0600), atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _bind(listen: str) -> socket.socket:
    host, port = parse_listen(listen)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from exc
    sock.setblocking(False)
    return sock


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):  # only shown in a URL
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the server owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Server:
    """One running server. Build with :meth:`start`; then :meth:`serve` until stopped."""

    config: Config
    out: TextIO
    #: Called once the store is open (``server.store``, ``server.tokens`` and
    #: ``server.registry`` are set): routers to include in the app, services to run.
    router_factories: list[Callable[[Server], APIRouter]] = field(default_factory=list)
    service_factories: list[Callable[[Server], Service]] = field(default_factory=list)
    extra_routers: list[APIRouter] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    #: Probes behind ``/api/v1/health``; factories may add their component's probe here.
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    #: Applied at the end of :meth:`start` (the series index and the app exist by then),
    #: undone by :meth:`aclose`; see :mod:`monitoringserver.util.gcpolicy`.
    gc_policy: GcPolicy = field(default_factory=GcPolicy)
    gc_handle: GcPolicyHandle | None = None
    lock: DataDirLock | None = None
    database: Database | None = None
    tokens: TokenStore | None = None
    store: MetricStoreHandle | None = None
    http_address: str = ""
    ready: bool = False
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    _sock: socket.socket | None = None
    _http: _Uvicorn | None = None

    @property
    def data_dir(self) -> Path:
        return self.config.data_dir

    async def start(self) -> None:
        """Open everything and bind the HTTP socket; raises ``MonitoringError`` on failure."""
        cfg = self.config
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock = DataDirLock(self.data_dir)
        if not self.lock.try_acquire():
            raise ConfigError(
                f"cannot start server: data directory {self.data_dir} is in use by pid "
                f"{self.lock.holder()}"
            )
        self.database = await asyncio.to_thread(
            Database, self.data_dir / DATABASE_FILE, memory_limit=cfg.storage.memory_limit
        )
        self.tokens = TokenStore(self.database)
        await asyncio.to_thread(self.tokens.open)
        if cfg.auth.enabled and cfg.auth.bootstrap_admin_token:
            await asyncio.to_thread(self._bootstrap_admin)
        if not cfg.auth.enabled:
            log.warning("authentication is DISABLED (auth.enabled = false): every caller is admin")
        self.store = await open_metric_store(
            self.data_dir, cfg.storage, registry=self.registry, database=self.database
        )
        self.health_checks["storage"] = self._storage_health
        self.health_checks["auth"] = self._auth_health
        comps = WebComponents(
            appender=self.store.appender,
            querier=self.store.querier,
            tokens=self.tokens,
            registry=self.registry,
            limits=cfg.limits,
            auth_enabled=cfg.auth.enabled,
            sample_max_age_s=cfg.storage.sample_age_limit_s,
            sample_max_future_s=cfg.storage.max_future_skew_s,
            ready=lambda: self.ready and not self.stop_event.is_set(),
            health_checks=self.health_checks,
        )
        self.extra_routers.extend(factory(self) for factory in self.router_factories)
        self.services.extend(factory(self) for factory in self.service_factories)
        app = create_app(comps, self.extra_routers)
        self._sock = _bind(cfg.server.http_listen)
        host, port = self._sock.getsockname()[:2]
        self.http_address = f"{_url_host(host)}:{port}"
        ucfg = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=max(1, int(cfg.server.shutdown_timeout_s / 2)),
            server_header=False,
            http=HttpProtocol,  # uvicorn's httptools protocol, one copy less per body
            proxy_headers=False,  # done by the entry, from uvicorn's trusted addresses:
        )
        ucfg.app = asgi_entry(app, forwarded_allow_ips=ucfg.forwarded_allow_ips)
        self._http = _Uvicorn(ucfg)
        # Last: what start-up built lives as long as the process and is frozen here.
        self.gc_handle = apply_gc_policy(self.gc_policy)

    def _bootstrap_admin(self) -> None:
        assert self.tokens is not None
        if self.tokens.count() > 0:
            return
        _info, secret = self.tokens.create("admin", ["admin"])
        path = self.data_dir / ADMIN_TOKEN_FILE
        write_private(path, secret + "\n")
        print(
            "\nmonitoring-server: created the first admin token (shown once; also saved with "
            f"mode 0600 in {path}):\n\n    {secret}\n",
            file=self.out,
            flush=True,
        )
        log.info("created the first admin token", extra={"file": str(path)})

    async def _storage_health(self) -> ComponentHealth:
        assert self.store is not None
        stats = await asyncio.to_thread(self.store.querier.stats)
        detail = (
            f"{stats.series} series, {stats.head_samples} head samples, WAL {stats.wal_bytes} B"
        )
        # The WAL is truncated once its records are committed; a long WAL means commits lag.
        if stats.wal_bytes > 4 * self.config.storage.wal_segment_bytes:
            return ComponentHealth(HealthStatus.DEGRADED, "commits are behind: " + detail)
        return ComponentHealth(HealthStatus.HEALTHY, detail)

    async def _auth_health(self) -> ComponentHealth:
        if not self.config.auth.enabled:
            return ComponentHealth(HealthStatus.DEGRADED, "authentication disabled")
        return ComponentHealth(HealthStatus.HEALTHY, "bearer tokens")

    async def serve(self) -> None:
        """Run until :meth:`request_stop`, then shut down within the timeout."""
        assert self._http is not None
        assert self._sock is not None
        assert self.store is not None
        assert self.tokens is not None
        http, sock, store, tokens = self._http, self._sock, self.store, self.tokens
        async with asyncio.TaskGroup() as tg:
            tasks = {
                "store": tg.create_task(store.run(), name="metric-store"),
                "tokens": tg.create_task(
                    tokens.run(self.config.auth.last_used_flush_interval_s), name="token-flush"
                ),
                "http": tg.create_task(http.serve(sockets=[sock]), name="http"),
            }
            for service in self.services:
                tasks[service.name] = tg.create_task(service.run(), name=service.name)
            while not http.started:
                if tasks["http"].done():
                    raise UnavailableError("cannot start HTTP server: it stopped during start-up")
                await asyncio.sleep(0.01)
            write_private(self.data_dir / HTTP_ADDR_FILE, self.http_address + "\n")
            self.ready = True
            log.info(
                "ready",
                extra={"http": f"http://{self.http_address}", "data_dir": str(self.data_dir)},
            )
            print(f"dashboard: http://{self.http_address}/dashboard", file=self.out, flush=True)
            await self.stop_event.wait()
            log.info("shutting down")
            self.ready = False
            async with asyncio.timeout(self.config.server.shutdown_timeout_s):
                http.should_exit = True
                await asyncio.wait({tasks["http"]})
                for service in self.services:
                    await service.stop()
                await store.aclose()
                tasks["tokens"].cancel()

    def request_stop(self) -> None:
        self.stop_event.set()

    async def aclose(self) -> None:
        """Release what :meth:`start` opened (safe after a failed start)."""
        if self._sock is not None:
            self._sock.close()
        if self.store is not None:
            with contextlib.suppress(MonitoringError):
                await self.store.aclose()
        if self.tokens is not None and self.database is not None:
            with contextlib.suppress(MonitoringError):
                await asyncio.to_thread(self.tokens.flush_last_used)
        if self.database is not None:
            await asyncio.to_thread(self.database.close)
        with contextlib.suppress(OSError):
            (self.data_dir / HTTP_ADDR_FILE).unlink()
        if self.lock is not None:
            self.lock.release()
        if self.gc_handle is not None:
            self.gc_handle.remove()
            self.gc_handle = None


def compose(server: Server) -> None:
    """Register the routers and services beyond the foundation (PromQL, gRPC, logs, agent).

    Each factory receives the started :class:`Server` (store, tokens, registry, config) and
    returns an ``APIRouter`` or a :class:`Service`; services run in the server's TaskGroup
    and are stopped, in order, before the store closes.
    """
    from monitoringserver.compose import wire_all  # compose imports this module

    wire_all(server)
    if not server.config.agent.local:
        log.info("local agent disabled (agent.local = false / --no-local-agent)")


async def _main(config: Config, out: TextIO) -> int:
    server = Server(config=config, out=out)
    compose(server)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, server.request_stop)
    status = 0
    try:
        await server.start()
        await server.serve()
    except MonitoringError as exc:
        status = _report([exc], config)
    except BaseExceptionGroup as group:
        status = _report(_leaves(group), config)
    finally:
        await server.aclose()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped", extra={"status": status})
    return status


def _report(errors: list[BaseException], config: Config) -> int:
    """Log why the server stopped; returns the exit status (1)."""
    for err in errors:
        if isinstance(err, TimeoutError):
            log.error("cannot shut down within %s s", config.server.shutdown_timeout_s)
        elif isinstance(err, MonitoringError):
            log.error("%s", err)
        elif not isinstance(err, asyncio.CancelledError):
            log.error("server failed: %r", err, exc_info=err)
    return 1


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def run_server(config: Config, *, out: TextIO | None = None) -> int:
    """Run the server on a uvloop event loop until SIGTERM/SIGINT; returns the exit status."""
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_main(config, out or sys.stdout))
