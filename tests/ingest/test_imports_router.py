"""/api/v1/import/prometheus, Influx /write and /api/v2/write over the in-memory store."""

from __future__ import annotations

import base64
import gzip

from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.web.routers.imports import import_router
from tests.ingest.promhelp import NOW_S, prom_web

NOW_MS = int(NOW_S * 1000)


async def test_import_prometheus_text_openmetrics_and_extra_labels() -> None:
    async with prom_web([import_router(object())]) as w:
        body = f'up{{job="a"}} 1\nup{{job="b"}} 0 {NOW_MS - 1000}\n'
        r = await w.client.post(
            "/api/v1/import/prometheus",
            content=body,
            params=[("extra_label", "env=prod"), ("extra_label", "job=z")],
            headers=w.write,
        )
        assert r.status_code == 204, r.text
        got = {
            lbl: (s.ts_ms.tolist(), s.values.tolist())
            for lbl in w.store.series([], 0, 2**62)
            for s in w.store.select([], 0, 2**62)
            if s.labels == lbl
        }
        assert got == {
            (("__name__", "up"), ("env", "prod"), ("job", "z")): (
                [NOW_MS - 1000, NOW_MS],
                [0.0, 1.0],
            )
        }
        om = "# TYPE c counter\nc_total 5 1750000000.5\n# EOF\n"
        r = await w.client.post(
            "/api/v1/import/prometheus",
            content=gzip.compress(om.encode()),
            headers={
                **w.write,
                "Content-Type": "application/openmetrics-text; version=1.0.0",
                "Content-Encoding": "gzip",
            },
        )
        assert r.status_code == 204
        (c,) = w.store.select([], 1_750_000_000_500, 1_750_000_000_500)
        assert c.values.tolist() == [5.0]
        r = await w.client.post(
            "/api/v1/import/prometheus",
            content="x 1\n",
            params={"timestamp": "1749999999"},
            headers=w.write,
        )
        assert r.status_code == 204
        x = w.store.select([Matcher("__name__", MatchOp.EQ, "x")], 0, 2**62)
        assert [s.ts_ms.tolist() for s in x] == [[1_749_999_999_000]]


async def test_import_errors() -> None:
    async with prom_web([import_router(object())]) as w:
        for kwargs in (
            {"content": "bad line here x\n"},
            {"content": b"\xff\xfe"},
            {"content": "x 1\n", "params": {"extra_label": "novalue"}},
            {"content": "x 1\n", "params": {"extra_label": "__name__=y"}},
            {"content": "x 1\n", "params": {"timestamp": "yesterday"}},
        ):
            r = await w.client.post("/api/v1/import/prometheus", headers=w.write, **kwargs)
            assert r.status_code == 400, kwargs
            assert r.json()["error"].startswith("cannot parse")
        r = await w.client.post("/api/v1/import/prometheus", content="x 1\n", headers=w.read)
        assert r.status_code == 403


async def test_influx_v1_v2_and_ping() -> None:
    async with prom_web([import_router(object())]) as w:
        line = f'cpu,host=h usage=1.5,note="s" {NOW_MS}'
        r = await w.client.post(
            "/write", content=line, params={"db": "telegraf", "precision": "ms"}, headers=w.write
        )
        assert r.status_code == 204, r.text
        r = await w.client.post(
            "/api/v2/write",
            content=f"mem used=3i {NOW_MS // 1000}",
            params={"precision": "s", "bucket": "b"},
            headers=w.write,
        )
        assert r.status_code == 204
        assert sorted(w.store.series([], 0, 2**62)) == [
            (("__name__", "cpu_usage"), ("db", "telegraf"), ("host", "h")),
            (("__name__", "mem_used"),),
        ]
        skipped = w.components.registry.get_sample_value(
            "monitoring_ingest_rejected_samples_total",
            {"format": "influx", "reason": "string_field"},
        )
        assert skipped == 1
        assert (await w.client.get("/ping")).status_code == 204
        r = await w.client.post("/write", content="cpu", headers=w.write)
        assert r.status_code == 400
        assert r.json()["error"].startswith("cannot parse influx line 1")


async def test_influx_client_credentials() -> None:
    async with prom_web([import_router(object())]) as w:
        token = w.write["Authorization"].split()[1]
        read_token = w.read["Authorization"].split()[1]
        basic = base64.b64encode(f"user:{token}".encode()).decode()
        line = f"m v=1 {NOW_MS}"
        ok = [
            {"headers": {"Authorization": f"Token {token}"}},
            {"headers": {"Authorization": f"Basic {basic}"}},
            {"params": {"u": "user", "p": token, "precision": "ms"}},
        ]
        for kwargs in ok:
            params = {"precision": "ms", **kwargs.get("params", {})}
            r = await w.client.post(
                "/write", content=line, params=params, headers=kwargs.get("headers", {})
            )
            assert r.status_code == 204, (kwargs, r.text)
        bad = [
            ({"Authorization": "Token nope"}, 401),
            ({"Authorization": f"Token {read_token}"}, 403),
            ({"Authorization": "Basic !!!"}, 401),
            ({}, 401),
        ]
        for headers, status in bad:
            r = await w.client.post("/api/v2/write", content=line, headers=headers)
            assert r.status_code == status, headers
