"""A real Prometheus (Debian's /usr/bin/prometheus) scrapes itself and remote-writes into
an in-process server; its samples arrive with the same timestamps and values."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.web.routers.remote_write import remote_write_router
from tests.conftest import free_port
from tests.ingest.promhelp import External, running_server, wait_for, wait_http

PROMETHEUS = "/usr/bin/prometheus"

pytestmark = pytest.mark.skipif(
    shutil.which(PROMETHEUS) is None, reason="Debian package prometheus not installed"
)


def prometheus_config(port: int, write_url: str, token: str, sd_file: Path) -> str:
    return f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: prometheus
    static_configs:
      - targets: ["127.0.0.1:{port}"]
  - job_name: extra
    file_sd_configs:
      - files: ["{sd_file}"]
remote_write:
  - url: {write_url}
    authorization:
      credentials: {token}
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
      max_backoff: 1s
"""


async def test_real_prometheus_remote_writes_its_samples(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    async with running_server(data_dir, routers=[remote_write_router]) as (srv, headers):
        assert srv.store is not None
        token = headers["Authorization"].split()[1]
        port = free_port()
        work = tmp_path / "prom"
        work.mkdir()
        sd_file = work / "extra.yml"
        sd_file.write_text(f"- targets: ['127.0.0.1:{port}']\n")
        (work / "prometheus.yml").write_text(
            prometheus_config(port, f"http://{srv.http_address}/api/v1/write", token, sd_file)
        )
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
            querier = srv.store.querier
            up = [Matcher("__name__", MatchOp.EQ, "up"), Matcher("job", MatchOp.EQ, "prometheus")]

            def three_up_samples() -> bool:
                found = querier.select(up, 0, 2**62)
                return bool(found) and len(found[0].ts_ms) >= 3

            await wait_for(three_up_samples, timeout_s=90, what="up samples via remote write")
            (series,) = querier.select(up, 0, 2**62)
            assert dict(series.labels)["instance"] == f"127.0.0.1:{port}"
            assert set(series.values.tolist()) == {1.0}
            # The same points Prometheus has in its own TSDB.
            t0, t1 = int(series.ts_ms[0]), int(series.ts_ms[-1])
            async with httpx.AsyncClient() as client:
                r = await client.get(
                    f"http://127.0.0.1:{port}/api/v1/query",
                    params={"query": 'up{job="prometheus"}[1h]', "time": (t1 + 1) / 1000},
                )
            theirs = {
                round(float(t) * 1000): float(v) for t, v in r.json()["data"]["result"][0]["values"]
            }
            ours = dict(zip(series.ts_ms.tolist(), series.values.tolist(), strict=True))
            assert {t: v for t, v in theirs.items() if t0 <= t <= t1} == ours
            names = querier.label_values("__name__", [], 0, 2**62)
            assert "prometheus_build_info" in names
            assert "scrape_duration_seconds" in names

            # The "extra" target disappears: Prometheus writes staleness markers for its
            # series, and they arrive as such.
            extra_up = [Matcher("__name__", MatchOp.EQ, "up"), Matcher("job", MatchOp.EQ, "extra")]
            await wait_for(lambda: querier.select(extra_up, 0, 2**62), what="extra target up")
            sd_file.write_text("[]\n")

            def extra_stale() -> bool:
                (found,) = querier.select(extra_up, 0, 2**62)
                return bool(is_stale_nan(found.values)[-1])

            await wait_for(extra_stale, timeout_s=60, what="staleness marker via remote write")
        finally:
            prom.stop()
