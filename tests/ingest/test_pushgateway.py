"""Pushgateway API: grouping keys, PUT/POST/DELETE semantics, staleness, TTL, listing."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Gauge, delete_from_gateway, push_to_gateway
from prometheus_client.exposition import default_handler

from monitoringserver.errors import BadDataError, OverloadedError
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.ingest.pushgateway import parse_grouping_path, parse_push_body
from monitoringserver.model.matchers import Matcher, MatchOp
from monitoringserver.model.samples import is_stale_nan
from monitoringserver.pipeline.push_groups import PushGroups
from monitoringserver.server import Service
from monitoringserver.web.routers.pushgateway import Pushgateway
from tests.ingest.promhelp import NOW_S, prom_web, running_server, wait_for

B64 = base64.urlsafe_b64encode(b"a/b").decode().rstrip("=")


@pytest.mark.parametrize(
    ("path", "labels"),
    [
        ("job/j", {"job": "j"}),
        ("job/j/instance/i1/zone/z", {"job": "j", "instance": "i1", "zone": "z"}),
        (f"job@base64/{B64}", {"job": "a/b"}),
        (f"job/j/path@base64/{B64}=", {"job": "j", "path": "a/b"}),
        ("job/j/empty@base64/=", {"job": "j"}),
        ("job/j%20k/x/%2Fy", {"job": "j k", "x": "/y"}),
    ],
)
def test_grouping_path(path: str, labels: dict[str, str]) -> None:
    assert dict(parse_grouping_path(path)) == labels


@pytest.mark.parametrize(
    "path",
    [
        "job",
        "job/",
        "instance/x",
        "job/j/x",
        "job/j/__name__/x",
        "job/j/bad-name/x",
        "job/j/a/1/a/2",
        "job@base64/!!!",
    ],
)
def test_grouping_path_errors(path: str) -> None:
    with pytest.raises(BadDataError, match="cannot parse grouping key"):
        parse_grouping_path(path)


def test_push_body_grouping_conflict_and_protobuf() -> None:
    key = parse_grouping_path("job/j/instance/i")
    parser = ExpositionParser()
    body = parse_push_body('# TYPE h histogram\nh_bucket{le="1"} 2\nm{job="j"} 1\n', key, parser)
    assert [(dict(s)["__name__"], f) for s, _, f in body.samples] == [("h_bucket", "h"), ("m", "m")]
    assert all(dict(s)["instance"] == "i" for s, _, _ in body.samples)
    with pytest.raises(BadDataError, match="conflicts with the grouping key"):
        parse_push_body('m{job="other"} 1\n', key, parser)
    with pytest.raises(BadDataError, match="protobuf"):
        parse_push_body("", key, parser, content_type="application/vnd.google.protobuf")


def test_groups_put_post_delete_expire_limit() -> None:
    now = [0.0]
    groups = PushGroups(ttl_s=10, max_groups=1, clock=lambda: now[0])
    key = (("job", "j"),)
    a1 = (("__name__", "a"), ("job", "j"), ("x", "1"))
    a2 = (("__name__", "a"), ("job", "j"), ("x", "2"))
    b = (("__name__", "b"), ("job", "j"))
    assert (
        groups.push(
            key, [(a1, 1, "a"), (a2, 2, "a"), (b, 3, "b")], replace_all=True, types={}, helps={}
        )
        == []
    )
    assert groups.push(key, [(a1, 5, "a")], replace_all=False, types={}, helps={}) == [a2]
    assert dict(groups.snapshot()) == {a1: 5, b: 3}
    assert groups.push(key, [(a1, 6, "a")], replace_all=True, types={}, helps={}) == [b]
    with pytest.raises(OverloadedError):
        groups.push((("job", "k"),), [], replace_all=True, types={}, helps={})
    now[0] = 9.0
    assert groups.expire() == []
    now[0] = 10.0
    assert groups.expire() == [a1]
    assert len(groups) == 0
    assert groups.delete(key) == []


async def test_routes_put_post_delete_and_staleness() -> None:
    pg = Pushgateway(PromIngestOptions(pushgateway_ttl_s=60), clock=lambda: NOW_S)
    async with prom_web([pg.router(object())]) as w:
        url = "/metrics/job/backup/instance/db1"
        body = '# TYPE rows gauge\n# HELP rows Rows.\nrows{table="a"} 10\nrows{table="b"} 20\n'
        r = await w.client.put(url, content=body, headers=w.write)
        assert r.status_code == 200, r.text
        r = await w.client.post(url, content='rows{table="a"} 11\nother 1\n', headers=w.write)
        assert r.status_code == 200
        rows = w.store.select([Matcher("__name__", MatchOp.EQ, "rows")], 0, 2**62)
        by_table = {dict(s.labels)["table"]: s for s in rows}
        assert by_table["a"].values.tolist() == [11.0]  # same timestamp: last write wins
        assert is_stale_nan(np.asarray(by_table["b"].values)).tolist() == [True]
        assert dict(by_table["a"].labels)["instance"] == "db1"
        listed = (await w.client.get("/api/v1/pushgateway/groups", headers=w.read)).json()
        (group,) = listed["data"]
        assert group["labels"] == {"job": "backup", "instance": "db1"}
        assert group["metrics"] == ["other", "push_time_seconds", "rows"]
        assert group["expires_at"] == NOW_S + 60
        text = (await w.client.get("/api/v1/pushgateway/metrics", headers=w.read)).text
        assert "# TYPE rows gauge" in text
        assert 'rows{instance="db1",job="backup",table="a"} 11' in text
        r = await w.client.delete(url, headers=w.write)
        assert r.status_code == 202
        other = w.store.select([Matcher("__name__", MatchOp.EQ, "other")], 0, 2**62)
        assert is_stale_nan(np.asarray(other[0].values)).tolist() == [True]
        assert (await w.client.get("/api/v1/pushgateway/groups", headers=w.read)).json()[
            "data"
        ] == []
        for bad in ("/metrics/job/", "/metrics/job/x/onlyname"):
            assert (await w.client.put(bad, content="", headers=w.write)).status_code in (400, 404)
        assert (await w.client.put(url, content="x{", headers=w.write)).status_code == 400
        assert (await w.client.put(url, content=b"\xff", headers=w.write)).status_code == 400
        assert (await w.client.put(url, content="", headers=w.read)).status_code == 403


async def test_refresh_rewrites_then_expires_with_staleness() -> None:
    now = [NOW_S]
    pg = Pushgateway(PromIngestOptions(pushgateway_ttl_s=100), clock=lambda: now[0])
    async with prom_web([pg.router(object())]) as w:
        w.now[0] = NOW_S
        r = await w.client.put("/metrics/job/j", content="g 1\n", headers=w.write)
        assert r.status_code == 200
        now[0] += 50
        assert await pg.refresh_once(w.store) == 2  # g and push_time_seconds re-written
        now[0] += 60
        assert await pg.refresh_once(w.store) == 2  # expired: two staleness markers
        (g,) = w.store.select([Matcher("__name__", MatchOp.EQ, "g")], 0, 2**62)
        assert g.values[:2].tolist() == [1.0, 1.0]
        assert is_stale_nan(np.asarray(g.values)).tolist() == [False, False, True]
        assert await pg.refresh_once(w.store) == 0
    assert await Pushgateway().refresh_once(w.store) == 0


async def test_prometheus_client_push_to_real_server(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    pg = Pushgateway(PromIngestOptions(pushgateway_refresh_s=0.05))

    def service(server: object) -> Service:
        return Service(*pg.service(server))

    async with running_server(data_dir, routers=[pg.router], services=[service]) as (srv, hdr):
        assert srv.store is not None
        registry = CollectorRegistry()
        Gauge("job_last_success", "Last success.", registry=registry).set(1234)

        def handler(
            url: str,
            method: str,
            timeout: float | None,
            headers: list[tuple[str, str]],
            data: bytes,
        ) -> object:
            return default_handler(url, method, timeout, [*headers, *hdr.items()], data)

        await asyncio.to_thread(
            push_to_gateway,
            srv.http_address,
            job="batch",
            registry=registry,
            grouping_key={"path": "/var/x"},
            handler=handler,
        )
        sel = [Matcher("__name__", MatchOp.EQ, "job_last_success")]

        async def refreshed() -> bool:
            await srv.store.flush_now()  # type: ignore[union-attr]
            found = srv.store.querier.select(sel, 0, 2**62)  # type: ignore[union-attr]
            return bool(found) and len(found[0].ts_ms) >= 2

        await wait_for(refreshed, timeout_s=30, what="refreshed pushed series")
        (series,) = srv.store.querier.select(sel, 0, 2**62)
        assert dict(series.labels) == {
            "__name__": "job_last_success",
            "job": "batch",
            "path": "/var/x",
        }
        await asyncio.to_thread(
            delete_from_gateway,
            srv.http_address,
            job="batch",
            grouping_key={"path": "/var/x"},
            handler=handler,
        )
        assert pg.groups is not None
        assert len(pg.groups) == 0


def test_groups_save_and_load(tmp_path: Path) -> None:
    from monitoringserver.errors import StorageError

    now = [100.0]
    groups = PushGroups(ttl_s=10, max_groups=5, clock=lambda: now[0])
    key = (("instance", "i"), ("job", "j"))
    series = (("__name__", "a"), ("instance", "i"), ("job", "j"))
    groups.push(
        key, [(series, 1.5, "a")], replace_all=True, types={"a": "gauge"}, helps={"a": "A."}
    )
    path = tmp_path / "groups.json"
    groups.save(path)
    back = PushGroups(ttl_s=10, max_groups=5, clock=lambda: now[0])
    assert back.load(path) == 1
    (group,) = back.groups()
    assert group.key == key
    assert group.series == {series: 1.5}
    assert (group.types, group.helps, group.last_push_s) == ({"a": "gauge"}, {"a": "A."}, 100.0)
    assert back.load(tmp_path / "missing.json") == 0
    path.write_text("{broken")
    with pytest.raises(StorageError, match="cannot load push groups"):
        back.load(path)


async def test_groups_survive_a_server_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for run in range(2):
        pg = Pushgateway()

        def service(server: object, pg: Pushgateway = pg) -> Service:
            return Service(*pg.service(server))

        async with (
            running_server(data_dir, routers=[pg.router], services=[service]) as (
                srv,
                hdr,
            ),
            httpx.AsyncClient(base_url=f"http://{srv.http_address}") as client,
        ):
            if run == 0:
                r = await client.put("/metrics/job/nightly", content="done 1\n", headers=hdr)
                assert r.status_code == 200
            listed = (await client.get("/api/v1/pushgateway/groups", headers=hdr)).json()
            assert [g["labels"] for g in listed["data"]] == [{"job": "nightly"}]
    assert (data_dir / "pushgateway.json").exists()
