"""One target's scrape loop: fetch, parse, label, relabel, staleness, report series.

Each scrape writes one batch: the samples (at the scrape's start time unless the target
exposes timestamps and ``honor_timestamps`` is on), a staleness marker for every series
of the previous scrape that is gone (all of them when the scrape fails), and the report
series ``up``, ``scrape_duration_seconds``, ``scrape_samples_scraped``,
``scrape_samples_post_metric_relabeling`` and ``scrape_series_added``.

Labels: with ``honor_labels: false`` a scraped label that collides with a target label is
renamed ``exported_<name>`` and the target's value wins; with ``true`` the scraped value
wins. ``metric_relabel_configs`` then run on each series. The outcome per distinct scraped
label set is cached, so a steady-state scrape does no per-series label work.

Loop affinity: one event loop; parsing runs on a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import numpy as np

from monitoringserver import __version__
from monitoringserver.errors import MonitoringError
from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.ingest.scrape.config import ScrapeConfig
from monitoringserver.ingest.scrape.relabel import relabel
from monitoringserver.ingest.scrape.sd import Target
from monitoringserver.metrics.api import MetricAppender
from monitoringserver.model.labels import METRIC_NAME, Labels
from monitoringserver.model.samples import STALE_NAN, SampleBatch

__all__ = ["ScrapeResult", "TargetScraper"]

log = logging.getLogger(__name__)

_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.9,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
_REPORT = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)
_CACHE_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    ok: bool
    duration_s: float
    scraped: int
    post_relabel: int
    series_added: int
    stale: int
    error: str = ""


class TargetScraper:
    """Scrapes one :class:`Target`. ``clock`` returns seconds since the epoch."""

    def __init__(
        self,
        target: Target,
        cfg: ScrapeConfig,
        appender: MetricAppender,
        client: httpx.AsyncClient,
        *,
        max_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.target = target
        self.cfg = cfg
        self.appender = appender
        self.client = client
        self.max_bytes = max_bytes
        self.clock = clock
        self.last: ScrapeResult | None = None
        self.last_scrape_s = 0.0
        self._parser = ExpositionParser()
        self._cache: dict[Labels, Labels | None] = {}
        self._previous: set[Labels] = set()
        self._report_labels = [
            tuple(sorted({**dict(target.labels), METRIC_NAME: name}.items())) for name in _REPORT
        ]

    # -- labels ------------------------------------------------------------------------

    def _final(self, scraped: Labels) -> Labels | None:
        found = self._cache.get(scraped, False)
        if found is not False:
            return found  # type: ignore[return-value]
        merged = dict(scraped)
        for name, value in self.target.labels:
            if self.cfg.honor_labels:
                merged.setdefault(name, value)
            else:
                if name in merged:
                    merged[f"exported_{name}"] = merged[name]
                merged[name] = value
        out: Labels | None
        if self.cfg.metric_relabel_configs:
            result = relabel(merged, self.cfg.metric_relabel_configs)
            out = tuple(sorted(result.items())) if result and result.get(METRIC_NAME) else None
        else:
            out = tuple(sorted((k, v) for k, v in merged.items() if v != ""))
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[scraped] = out
        return out

    # -- fetch -------------------------------------------------------------------------

    async def _fetch(self) -> tuple[bytes, str]:
        headers = {
            "Accept": _ACCEPT,
            "Accept-Encoding": "gzip",
            "User-Agent": f"monitoringserver/{__version__}",
            "X-Prometheus-Scrape-Timeout-Seconds": f"{self.cfg.scrape_timeout_s:g}",
        }
        auth = httpx.BasicAuth(*self.cfg.basic_auth) if self.cfg.basic_auth else None
        if self.cfg.bearer_token:
            headers["Authorization"] = f"Bearer {self.cfg.bearer_token}"
        async with self.client.stream(
            "GET", self.target.url, headers=headers, auth=auth, timeout=self.cfg.scrape_timeout_s
        ) as resp:
            if resp.status_code != 200:
                raise ValueError(f"server returned HTTP status {resp.status_code}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.aiter_bytes():
                size += len(chunk)
                if size > self.max_bytes:
                    raise ValueError(f"body is larger than {self.max_bytes} bytes")
                chunks.append(chunk)
            return b"".join(chunks), resp.headers.get("content-type", "")

    # -- one scrape --------------------------------------------------------------------

    async def scrape_once(self) -> ScrapeResult:
        """Scrape, write the batch and return what happened (never raises for the target)."""
        start = self.clock()
        ts_ms = int(start * 1000)
        batch = SampleBatch.empty()
        current: set[Labels] = set()
        scraped = 0
        error = ""
        try:
            body, ctype = await asyncio.wait_for(self._fetch(), self.cfg.scrape_timeout_s)
            text = body.decode("utf-8")
            exp = await asyncio.to_thread(
                self._parser.parse,
                text,
                default_ts_ms=ts_ms,
                openmetrics="openmetrics" in ctype.lower(),
            )
            scraped = len(exp.batch)
            batch, current = self._relabelled(exp.batch, ts_ms)
            if self.cfg.sample_limit and len(batch) > self.cfg.sample_limit:
                raise ValueError(
                    f"{len(batch)} samples exceed sample_limit {self.cfg.sample_limit}"
                )
        except (httpx.HTTPError, TimeoutError, ValueError, MonitoringError, zlib.error) as exc:
            error = str(exc) or type(exc).__name__
            batch, current, scraped = SampleBatch.empty(), set(), 0
        duration = self.clock() - start
        stale = self._previous - current
        added = len(current - self._previous)
        self._previous = current
        ok = not error
        result = ScrapeResult(ok, duration, scraped, len(batch), added, len(stale), error)
        report = [1.0 if ok else 0.0, duration, float(scraped), float(len(batch)), float(added)]
        extra = SampleBatch.from_rows(
            [
                *((s, ts_ms, STALE_NAN) for s in stale),
                *((lbl, ts_ms, v) for lbl, v in zip(self._report_labels, report, strict=True)),
            ]
        )
        await self._append(SampleBatch.concat([batch, extra]) if len(batch) else extra)
        self.last = result
        self.last_scrape_s = start
        if error:
            log.debug("scrape of %s failed: %s", self.target.url, error)
        return result

    def _relabelled(self, parsed: SampleBatch, ts_ms: int) -> tuple[SampleBatch, set[Labels]]:
        finals = [self._final(s) for s in parsed.series]
        keep_series = np.fromiter((f is not None for f in finals), dtype=bool, count=len(finals))
        mask = keep_series[parsed.series_idx] if len(parsed) else np.zeros(0, dtype=bool)
        series = [f if f is not None else () for f in finals]
        ts = parsed.ts_ms if self.cfg.honor_timestamps else np.full(len(parsed), ts_ms, np.int64)
        out = SampleBatch(series, parsed.series_idx, ts, parsed.values)
        if not mask.all():
            out = out.select(mask)
        return out, {f for f in finals if f is not None}

    async def _append(self, batch: SampleBatch) -> None:
        try:
            await self.appender.append(batch, source=f"scrape:{self.target.job}")
        except MonitoringError as exc:
            log.warning("cannot store scrape of %s: %s", self.target.url, exc)

    async def mark_stale(self) -> None:
        """The target went away: staleness markers for its series and report series."""
        ts_ms = int(self.clock() * 1000)
        rows = [(s, ts_ms, STALE_NAN) for s in (*self._previous, *self._report_labels)]
        self._previous = set()
        await self._append(SampleBatch.from_rows(rows))

    async def run(self, stop: asyncio.Event) -> None:
        """Scrape every ``scrape_interval`` (with a per-target offset) until ``stop``."""
        interval = self.cfg.scrape_interval_s
        offset = (zlib.crc32(self.target.url.encode()) % 1000) / 1000 * interval
        now = self.clock()
        next_at = now - now % interval + offset
        if next_at < now:
            next_at += interval
        while not stop.is_set():
            delay = next_at - self.clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                    return
                except TimeoutError:
                    pass
            await self.scrape_once()
            next_at += interval
            now = self.clock()
            if next_at < now:  # a slow scrape: skip the missed slots
                next_at += (now - next_at) // interval * interval + interval
