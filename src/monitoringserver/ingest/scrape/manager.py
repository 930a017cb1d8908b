"""The scrape manager: keeps one scrape loop per discovered target.

Every ``file_sd_check_interval_s`` it re-reads changed file_sd files and reconciles the
target set: new targets start a loop; targets that disappeared stop and get staleness
markers for all their series. :meth:`apply_config` swaps the jobs (loops whose target and
job settings are unchanged keep running). ``run()`` returns after ``stop()``.

Wiring (``server.py``)::

    server.service_factories.append(lambda s: Service(*scrape_service(s)))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import httpx

from monitoringserver.ingest.scrape.config import ScrapeConfig, ScrapeOptions, load_scrape_file
from monitoringserver.ingest.scrape.sd import FileSD, Target, build_targets, static_groups
from monitoringserver.ingest.scrape.target import TargetScraper
from monitoringserver.metrics.api import MetricAppender

__all__ = ["ScrapeManager", "TargetStatus", "build_scrape_manager", "scrape_service"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetStatus:
    job: str
    url: str
    labels: dict[str, str]
    health: str  # "up", "down" or "unknown"
    last_error: str
    last_scrape_s: float
    last_duration_s: float
    interval_s: float
    timeout_s: float


@dataclass(slots=True)
class _Loop:
    scraper: TargetScraper
    task: asyncio.Task[None]
    stop: asyncio.Event


class ScrapeManager:
    """Owns the scrape loops; one event loop."""

    def __init__(
        self,
        configs: tuple[ScrapeConfig, ...],
        appender: MetricAppender,
        *,
        options: ScrapeOptions | None = None,
        clock: Callable[[], float] = time.time,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.options = options or ScrapeOptions()
        self.appender = appender
        self.clock = clock
        self._transport = transport
        self._configs: tuple[ScrapeConfig, ...] = ()
        self._file_sd: dict[str, list[FileSD]] = {}
        self._clients: dict[bool, httpx.AsyncClient] = {}
        self._loops: dict[tuple[str, Target, ScrapeConfig], _Loop] = {}
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self.apply_config(configs)

    def apply_config(self, configs: tuple[ScrapeConfig, ...]) -> None:
        """Replace the jobs; takes effect at the next reconciliation (at once when running)."""
        self._configs = configs
        self._file_sd = {c.job_name: [FileSD(f) for f in c.file_sd_configs] for c in configs}
        self._wake.set()

    def _client(self, insecure: bool) -> httpx.AsyncClient:
        client = self._clients.get(insecure)
        if client is None:
            client = httpx.AsyncClient(
                transport=self._transport, verify=not insecure, follow_redirects=True
            )
            self._clients[insecure] = client
        return client

    def desired(self) -> dict[tuple[str, Target, ScrapeConfig], ScrapeConfig]:
        """Targets of every job now (polls file_sd files)."""
        out: dict[tuple[str, Target, ScrapeConfig], ScrapeConfig] = {}
        for cfg in self._configs:
            sds = self._file_sd.get(cfg.job_name, [])
            for sd in sds:
                sd.poll()
            groups = static_groups(cfg) + [g for sd in sds for g in sd.current()]
            for target in build_targets(cfg, groups):
                out[(cfg.job_name, target, cfg)] = cfg
        return out

    async def reconcile(self) -> None:
        """Start loops for new targets; stop removed ones and mark their series stale."""
        desired = self.desired()
        for key in [k for k in self._loops if k not in desired]:
            loop = self._loops.pop(key)
            loop.stop.set()
            await loop.task
            await loop.scraper.mark_stale()
        for key, cfg in desired.items():
            if key in self._loops:
                continue
            scraper = TargetScraper(
                key[1],
                cfg,
                self.appender,
                self._client(cfg.insecure_skip_verify),
                max_bytes=self.options.max_scrape_bytes,
                clock=self.clock,
            )
            stop = asyncio.Event()
            task = asyncio.create_task(scraper.run(stop), name=f"scrape:{key[1].url}")
            self._loops[key] = _Loop(scraper, task, stop)

    def status(self) -> list[TargetStatus]:
        out = []
        for (job, target, cfg), loop in sorted(self._loops.items(), key=lambda kv: kv[0][1].url):
            last = loop.scraper.last
            out.append(
                TargetStatus(
                    job=job,
                    url=target.url,
                    labels=dict(target.labels),
                    health="unknown" if last is None else ("up" if last.ok else "down"),
                    last_error="" if last is None else last.error,
                    last_scrape_s=loop.scraper.last_scrape_s,
                    last_duration_s=0.0 if last is None else last.duration_s,
                    interval_s=cfg.scrape_interval_s,
                    timeout_s=cfg.scrape_timeout_s,
                )
            )
        return out

    async def run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                await self.reconcile()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._wake.wait(), timeout=self.options.file_sd_check_interval_s
                    )
        finally:
            loops, self._loops = list(self._loops.values()), {}
            for loop in loops:
                loop.stop.set()
            for loop in loops:
                with contextlib.suppress(asyncio.CancelledError):
                    await loop.task
            for client in self._clients.values():
                await client.aclose()
            self._clients = {}

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()


def build_scrape_manager(server: Any) -> ScrapeManager:
    """The manager for ``server`` per ``config.scrape`` (no jobs without a config file)."""
    found = getattr(server.config, "scrape", None)
    options = found if isinstance(found, ScrapeOptions) else ScrapeOptions()
    configs = load_scrape_file(options.config_file) if options.config_file else ()
    return ScrapeManager(configs, server.store.appender, options=options)


def scrape_service(
    server: Any,
) -> tuple[str, Callable[[], Coroutine[Any, Any, None]], Callable[[], Coroutine[Any, Any, None]]]:
    """``(name, run, stop)`` for a ``server.Service``: scraping per ``config.scrape``.

    Without a ``scrape.config_file`` the service idles until stopped.
    """
    manager = build_scrape_manager(server)
    return "scrape", manager.run, manager.stop
