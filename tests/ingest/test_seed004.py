"""Seed 004 endpoints: inserts, exposition pages, status, last scrape, User-Agent rules."""

from __future__ import annotations

import pytest

from monitoringserver.errors import BadDataError, ForbiddenError, OverloadedError
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.ingest.seed004 import (
    Client,
    PushedValues,
    check_user_agent,
    insert_labels,
    parse_value,
)
from monitoringserver.web.routers.seed004 import create_seed004_router, seed004_router
from tests.ingest.promhelp import NOW_S, prom_web

NOW_MS = int(NOW_S * 1000)


@pytest.mark.parametrize(
    ("ua", "client", "ok"),
    [
        ("Prometheus/2.42.0", Client.PROMETHEUS, True),
        ("Prometheus/0.00.0", Client.PROMETHEUS, True),
        ("curl/8", Client.PROMETHEUS, False),
        ("metrics_pusher", Client.PUSHER, True),
        ("metrics_pusher/1.0", Client.PUSHER, True),
        ("metrics_pusher2", Client.PUSHER, False),
        ("checker", Client.CHECKER, True),
        ("", Client.CHECKER, False),
    ],
)
def test_user_agent_rules(ua: str, client: Client, ok: bool) -> None:
    if ok:
        check_user_agent(ua, client)
    else:
        with pytest.raises(ForbiddenError, match="User-Agent"):
            check_user_agent(ua, client)


def test_values_labels_and_bound() -> None:
    assert parse_value("1.5") == 1.5
    assert parse_value("-Inf") == float("-inf")
    for bad in ("abc", "NaN"):
        with pytest.raises(BadDataError):
            parse_value(bad)
    with pytest.raises(BadDataError):
        insert_labels("bad-name", "j")
    with pytest.raises(BadDataError):
        insert_labels("m", "j", "")
    pushed = PushedValues(max_series=1)
    pushed.set(insert_labels("m", "j"), 1, 0)
    pushed.set(insert_labels("m", "j"), 2, 1)
    with pytest.raises(OverloadedError):
        pushed.set(insert_labels("n", "j"), 1, 0)


async def test_inserts_pages_status_and_last_scrape() -> None:
    now = [NOW_S]
    router = create_seed004_router(PromIngestOptions(), clock=lambda: now[0])
    async with prom_web([router]) as w:
        r = await w.client.post("/simple/insert/temperature/21.5", headers=w.write)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["series"] == {"__name__": "temperature", "job": "seed004"}
        r = await w.client.post("/complex/insert/disk_used/box-7/93", headers=w.write)
        assert r.status_code == 200
        assert (await w.client.get("/simple/insert/x/1", headers=w.write)).status_code == 405
        assert (await w.client.post("/simple/insert/x/abc", headers=w.write)).status_code == 400
        stored = {s.labels: s.values.tolist() for s in w.store.select([], 0, 2**62)}
        assert stored == {
            (("__name__", "temperature"), ("job", "seed004")): [21.5],
            (("__name__", "disk_used"), ("instance", "box-7"), ("job", "seed004")): [93.0],
        }
        text = (await w.client.get("/prom/deamon/metrics", headers=w.read)).text
        rows = list(ExpositionParser().parse(text, default_ts_ms=0).batch.rows())
        assert sorted(rows) == sorted((lbl, NOW_MS, v[0]) for lbl, v in stored.items())

        now[0] += 30
        assert (await w.client.get("/last/get/prometheus", headers=w.read)).text == "30.000\n"
        status = (await w.client.get("/prom/status", headers=w.read)).json()
        assert status["status"] == "ok"
        assert status["scraped"] is False
        assert status["pushed_series"] == 2
        page = await w.client.get("/prom/metrics", headers=w.read)
        assert page.status_code == 200
        assert "monitoring_ingest_samples_total" in page.text
        now[0] += 4.5
        assert (await w.client.get("/last/get/prometheus", headers=w.read)).text == "4.500\n"
        assert (await w.client.get("/prom/status")).status_code == 401


async def test_user_agents_enforced_when_configured() -> None:
    server = type(
        "S",
        (),
        {
            "config": type(
                "C",
                (),
                {
                    "prometheus_ingest": PromIngestOptions(
                        seed004_user_agents=True, seed004_job="citybox"
                    )
                },
            )()
        },
    )()
    async with prom_web([seed004_router(server)]) as w:
        r = await w.client.post("/simple/insert/m/1", headers={**w.write, "User-Agent": "curl"})
        assert r.status_code == 403
        r = await w.client.post(
            "/simple/insert/m/1", headers={**w.write, "User-Agent": "metrics_pusher"}
        )
        assert r.json()["data"]["series"]["job"] == "citybox"
        prom = {**w.read, "User-Agent": "Prometheus/2.42.0"}
        assert (await w.client.get("/prom/metrics", headers=prom)).status_code == 200
        assert (await w.client.get("/prom/status", headers=prom)).status_code == 403
        checker = {**w.read, "User-Agent": "checker"}
        assert (await w.client.get("/prom/status", headers=checker)).status_code == 200
        assert (await w.client.get("/last/get/prometheus", headers=checker)).status_code == 200
        assert (await w.client.get("/prom/deamon/metrics", headers=checker)).status_code == 403
