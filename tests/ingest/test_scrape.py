"""Scrape loops over an injected transport: labels, relabelling, staleness, report series,
failures, auth, file SD reconciliation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from monitoringserver.ingest.scrape.config import ScrapeOptions, parse_scrape_configs
from monitoringserver.ingest.scrape.manager import ScrapeManager, scrape_service
from monitoringserver.ingest.scrape.sd import FileSD, build_targets, static_groups
from monitoringserver.ingest.scrape.target import TargetScraper
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.web.routers.targets import Scraping
from tests.fakes import FakeStore
from tests.ingest.promhelp import prom_web, wait_for

NOW = 1_750_000_000.0


class Exporter:
    """A fake exporter: body per host, request log."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.requests: list[httpx.Request] = []
        self.status = 200
        self.ctype = "text/plain; version=0.0.4"

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.status != 200:
            return httpx.Response(self.status)
        body = self.bodies.get(request.url.host, "")
        return httpx.Response(200, text=body, headers={"content-type": self.ctype})


def job(**extra: Any) -> Any:
    (cfg,) = parse_scrape_configs(
        {
            "scrape_configs": [
                {
                    "job_name": "node",
                    "scrape_interval": "1s",
                    "static_configs": [{"targets": ["h1:9100"]}],
                    **extra,
                }
            ]
        }
    )
    return cfg


def values(store: FakeStore, name: str) -> dict[tuple[tuple[str, str], ...], list[float]]:
    return {
        s.labels: s.values.tolist()
        for s in store.select([Matcher("__name__", MatchOp.EQ, name)], 0, 2**62)
    }


async def scraper_for(
    cfg: Any, exporter: Exporter, store: FakeStore, clock: list[float]
) -> tuple[TargetScraper, httpx.AsyncClient]:
    (target,) = build_targets(cfg, static_groups(cfg))
    client = httpx.AsyncClient(transport=httpx.MockTransport(exporter.handler))
    return TargetScraper(
        target, cfg, store, client, max_bytes=10_000, clock=lambda: clock[0]
    ), client


async def test_labels_staleness_and_report_series() -> None:
    exporter = Exporter()
    exporter.bodies["h1"] = 'a{job="x"} 1\nb 2\nc{instance="i"} 3 1000\n'
    store, clock = FakeStore(), [NOW]
    cfg = job(
        metric_relabel_configs=[{"action": "drop", "source_labels": ["__name__"], "regex": "c"}]
    )
    scraper, client = await scraper_for(cfg, exporter, store, clock)
    async with client:
        first = await scraper.scrape_once()
        assert (first.ok, first.scraped, first.post_relabel, first.series_added) == (True, 3, 2, 2)
        (a_labels,) = values(store, "a")
        assert dict(a_labels) == {
            "__name__": "a",
            "job": "node",
            "exported_job": "x",
            "instance": "h1:9100",
        }
        assert values(store, "c") == {}
        exporter.bodies["h1"] = "b 5\n"
        clock[0] += 1
        second = await scraper.scrape_once()
        assert (second.stale, second.series_added) == (1, 0)
        (a_vals,) = values(store, "a").values()
        assert is_stale_nan(np.asarray(a_vals)).tolist() == [False, True]
        exporter.status = 500
        clock[0] += 1
        third = await scraper.scrape_once()
        assert not third.ok
        assert "500" in third.error
        (up,) = values(store, "up").values()
        assert up == [1.0, 1.0, 0.0]
        (b_vals,) = values(store, "b").values()
        assert b_vals[:2] == [2.0, 5.0]
        assert is_stale_nan(np.asarray(b_vals))[2]
        for name in (
            "scrape_duration_seconds",
            "scrape_samples_scraped",
            "scrape_samples_post_metric_relabeling",
            "scrape_series_added",
        ):
            assert len(next(iter(values(store, name).values()))) == 3
        await scraper.mark_stale()
        (up,) = values(store, "up").values()
        assert is_stale_nan(np.asarray(up))[-1]


async def test_honor_labels_timestamps_auth_params_openmetrics() -> None:
    exporter = Exporter()
    exporter.ctype = "application/openmetrics-text; version=1.0.0"
    exporter.bodies["h1"] = 'm{job="mine"} 7 1749999999.5\n# EOF\n'
    store, clock = FakeStore(), [NOW]
    cfg = job(
        honor_labels=True,
        honor_timestamps=True,
        basic_auth={"username": "u", "password": "p"},
        params={"module": ["x"]},
        metrics_path="/probe",
    )
    scraper, client = await scraper_for(cfg, exporter, store, clock)
    async with client:
        assert (await scraper.scrape_once()).ok
    (series,) = store.select([Matcher("__name__", MatchOp.EQ, "m")], 0, 2**62)
    assert dict(series.labels)["job"] == "mine"
    assert series.ts_ms.tolist() == [1_749_999_999_500]
    req = exporter.requests[0]
    assert req.url.path == "/probe"
    assert req.url.params["module"] == "x"
    assert req.headers["authorization"].startswith("Basic ")
    assert "openmetrics" in req.headers["accept"]

    cfg = job(honor_timestamps=False, bearer_token="tok", sample_limit=1)
    exporter.ctype = "text/plain"
    exporter.bodies["h1"] = "m 1 5\n"
    scraper, client = await scraper_for(cfg, exporter, store, clock)
    async with client:
        assert (await scraper.scrape_once()).ok
        assert exporter.requests[-1].headers["authorization"] == "Bearer tok"
        exporter.bodies["h1"] = "m 1\nn 2\n"
        over = await scraper.scrape_once()
        assert not over.ok
        assert "sample_limit" in over.error
        exporter.bodies["h1"] = "x" * 20_000 + " 1\n"
        big = await scraper.scrape_once()
        assert "larger than" in big.error
        exporter.bodies["h1"] = "not valid {\n"
        assert not (await scraper.scrape_once()).ok


def test_target_relabelling() -> None:
    cfg = job(
        static_configs=[{"targets": ["a:1", "b:2"], "labels": {"env": "prod"}}],
        relabel_configs=[
            {"action": "drop", "source_labels": ["__address__"], "regex": "b:.*"},
            {"source_labels": ["__address__"], "regex": "(.*):.*", "target_label": "instance"},
            {"target_label": "__param_target", "replacement": "x y"},
            {"target_label": "__scheme__", "replacement": "https"},
        ],
    )
    (target,) = build_targets(cfg, static_groups(cfg))
    assert target.url == "https://a:1/metrics?target=x+y"
    assert dict(target.labels) == {"env": "prod", "instance": "a", "job": "node"}


def test_file_sd_poll(tmp_path: Path) -> None:
    cfg = job(static_configs=[], file_sd_configs=[{"files": [str(tmp_path / "*.json")]}])
    sd = FileSD(cfg.file_sd_configs[0])
    assert sd.poll() is None  # no files, nothing changed
    path = tmp_path / "t.json"
    path.write_text(json.dumps([{"targets": ["h1:1"], "labels": {"rack": "r1"}}]))
    groups = sd.poll()
    assert groups is not None
    assert dict(groups[0].labels) == {"rack": "r1", "__meta_filepath": str(path)}
    assert sd.poll() is None
    path.write_text("[{broken")
    assert sd.poll() == groups  # a broken file keeps its old targets
    path.unlink()
    assert sd.poll() == []


async def test_manager_file_sd_add_and_remove_targets(tmp_path: Path) -> None:
    exporter = Exporter()
    exporter.bodies = {"h1": "m 1\n", "h2": "m 2\n"}
    sd_file = tmp_path / "targets.yml"
    sd_file.write_text("- targets: ['h1:1', 'h2:1']\n")
    (cfg,) = parse_scrape_configs(
        {
            "scrape_configs": [
                {
                    "job_name": "j",
                    "scrape_interval": "0.05s",
                    "scrape_timeout": "0.05s",
                    "file_sd_configs": [{"files": [str(sd_file)]}],
                }
            ]
        }
    )
    store = FakeStore()
    manager = ScrapeManager(
        (cfg,),
        store,
        options=ScrapeOptions(file_sd_check_interval_s=0.02),
        transport=httpx.MockTransport(exporter.handler),
    )
    task = asyncio.create_task(manager.run())
    try:
        await wait_for(lambda: len(values(store, "m")) == 2, timeout_s=20, what="two targets")
        assert {s.health for s in manager.status()} <= {"up", "unknown"}
        sd_file.write_text("- targets: ['h1:1']\n")

        def h2_stale() -> bool:
            for labels, vals in values(store, "up").items():
                if dict(labels)["instance"] == "h2:1":
                    return bool(is_stale_nan(np.asarray(vals))[-1])
            return False

        await wait_for(h2_stale, timeout_s=20, what="h2 stale")
        assert [s.url for s in manager.status()] == ["http://h1:1/metrics"]
        manager.apply_config(())
        await wait_for(lambda: not manager.status(), timeout_s=20, what="no targets")
    finally:
        await manager.stop()
        await task


async def test_scrape_service_without_file_idles() -> None:
    server = type("S", (), {})()
    server.config = type("C", (), {"scrape": ScrapeOptions()})()
    server.store = type("H", (), {"appender": FakeStore()})()
    name, run, stop = scrape_service(server)
    assert name == "scrape"
    task = asyncio.create_task(run())
    await stop()
    await asyncio.wait_for(task, 10)


@pytest.mark.parametrize("status", [404, 503])
async def test_http_errors_mark_down(status: int) -> None:
    exporter = Exporter()
    exporter.status = status
    store, clock = FakeStore(), [NOW]
    scraper, client = await scraper_for(job(), exporter, store, clock)
    async with client:
        result = await scraper.scrape_once()
    assert not result.ok
    assert str(status) in result.error


async def test_targets_route_without_targets_and_component_service() -> None:
    scraping = Scraping()
    async with prom_web([scraping.router(object())]) as w:
        r = await w.client.get("/api/v1/targets", headers=w.read)
        assert r.json() == {
            "status": "success",
            "data": {"activeTargets": [], "droppedTargets": []},
        }
        server = type("S", (), {})()
        server.config = type("C", (), {"scrape": ScrapeOptions()})()
        server.store = type("H", (), {"appender": w.store})()
        _name, run, stop = scraping.service(server)
        assert scraping.manager is not None
        task = asyncio.create_task(run())
        await stop()
        await asyncio.wait_for(task, 10)
        assert (await w.client.get("/api/v1/targets")).status_code == 401
