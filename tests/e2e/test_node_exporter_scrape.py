"""A real prometheus-node-exporter scraped by the server's scrape manager (file SD,
metric relabelling, report series, staleness when it stops and when it is removed)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitoringserver.ingest.scrape.config import ScrapeOptions, parse_scrape_configs
from monitoringserver.ingest.scrape.manager import ScrapeManager
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.server import Server, Service
from monitoringserver.web.routers.targets import Scraping
from tests.conftest import free_port
from tests.ingest.promhelp import External, running_server, wait_for, wait_http

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"

pytestmark = pytest.mark.skipif(
    shutil.which(NODE_EXPORTER) is None, reason="Debian package prometheus-node-exporter missing"
)


def exporter(port: int, work: Path) -> External:
    return External(
        [
            NODE_EXPORTER,
            f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.loadavg",
            "--collector.meminfo",
        ],
        work,
        "node-exporter",
    )


async def test_scrape_real_node_exporter(tmp_path: Path) -> None:
    port = free_port()
    work = tmp_path / "ne"
    node = exporter(port, work).start()
    await asyncio.to_thread(wait_http, f"http://127.0.0.1:{port}/metrics", node)
    sd_file = tmp_path / "targets.yml"
    sd_file.write_text(f"- targets: ['127.0.0.1:{port}']\n  labels: {{rack: r1}}\n")
    configs = parse_scrape_configs(
        {
            "scrape_configs": [
                {
                    "job_name": "node",
                    "scrape_interval": "0.5s",
                    "scrape_timeout": "0.5s",
                    "file_sd_configs": [{"files": [str(sd_file)]}],
                    "metric_relabel_configs": [
                        {"action": "drop", "source_labels": ["__name__"], "regex": "go_.*"}
                    ],
                }
            ]
        }
    )
    managers: list[ScrapeManager] = []
    scraping = Scraping()

    def service(server: Server) -> Service:
        assert server.store is not None
        manager = ScrapeManager(
            configs, server.store.appender, options=ScrapeOptions(file_sd_check_interval_s=0.2)
        )
        managers.append(manager)
        scraping.manager = manager
        return Service(*scraping.service(server))

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    try:
        async with running_server(data_dir, routers=[scraping.router], services=[service]) as (
            srv,
            headers,
        ):
            assert srv.store is not None
            q = srv.store.querier

            def series(name: str) -> list[tuple[dict[str, str], list[float]]]:
                found = q.select([Matcher("__name__", MatchOp.EQ, name)], 0, 2**62)
                return [(dict(s.labels), s.values.tolist()) for s in found]

            await wait_for(
                lambda: len(series("up")) == 1 and len(series("up")[0][1]) >= 2,
                timeout_s=60,
                what="two scrapes",
            )
            ((up_labels, up_values),) = series("up")
            assert up_labels == {
                "__name__": "up",
                "job": "node",
                "rack": "r1",
                "instance": f"127.0.0.1:{port}",
            }
            assert set(up_values) == {1.0}
            load = series("node_load1")
            assert load
            assert load[0][0]["instance"] == f"127.0.0.1:{port}"
            assert series("node_memory_MemTotal_bytes")[0][1][0] > 0
            assert series("go_goroutines") == []
            scraped = series("scrape_samples_scraped")[0][1][-1]
            kept = series("scrape_samples_post_metric_relabeling")[0][1][-1]
            assert 0 < kept < scraped
            assert series("scrape_series_added")[0][1][0] == kept
            assert series("scrape_duration_seconds")[0][1][-1] > 0
            async with httpx.AsyncClient(base_url=f"http://{srv.http_address}") as client:
                r = await client.get("/api/v1/targets", headers=headers)
                (target,) = r.json()["data"]["activeTargets"]
                assert target["health"] == "up"
                assert target["scrapePool"] == "node"
                assert target["scrapeUrl"] == f"http://127.0.0.1:{port}/metrics"
                assert target["labels"]["rack"] == "r1"
                assert target["scrapeInterval"] == "0.5s"
                health = (await client.get("/api/v1/health", headers=headers)).json()
                assert health["components"]["scrape"]["status"] == "healthy"
                r = await client.get(
                    "/api/v1/targets", params={"scrapePool": "other"}, headers=headers
                )
                assert r.json()["data"]["activeTargets"] == []

            node.stop()  # the exporter goes away: up 0, its series stale

            def down_and_stale() -> bool:
                ups = series("up")[0][1]
                loads = q.select([Matcher("__name__", MatchOp.EQ, "node_load1")], 0, 2**62)
                return ups[-1] == 0.0 and bool(is_stale_nan(np.asarray(loads[0].values))[-1])

            await wait_for(down_and_stale, timeout_s=30, what="up 0 and stale markers")
            probe = await scraping.health()
            assert probe.status.value == "degraded"
            assert f"node/127.0.0.1:{port}" in probe.detail
            assert managers[0].status()[0].health == "down"

            sd_file.write_text("[]\n")  # the target is removed: report series go stale

            def up_stale() -> bool:
                ups = q.select([Matcher("__name__", MatchOp.EQ, "up")], 0, 2**62)
                return bool(is_stale_nan(np.asarray(ups[0].values))[-1])

            await wait_for(up_stale, timeout_s=30, what="up stale after removal")
            assert managers[0].status() == []
    finally:
        node.stop()
