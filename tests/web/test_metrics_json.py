"""Seed-002 JSON ingest and history over the app, with the fake store."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest

from tests.web.conftest import NOW_S, Web

T0 = int(NOW_S) - 600


async def post(web: Web, body: object, path: str = "/api/v1/metrics") -> httpx.Response:
    return await web.client.post(path, content=json.dumps(body), headers=web.write)


SEED = {
    "server_id": "web-1",
    "timestamp": T0,
    "metrics": {
        "cpu_usage": 70.5,
        "memory_usage": 10,
        "disk_io": {"read_iops": 120, "write_iops": 100},
    },
}


@pytest.mark.parametrize("path", ["/api/v1/metrics", "/metrics"])
async def test_post_seed_example_flattens_and_labels(web: Web, path: str) -> None:
    r = await web.client.post(path, json=SEED, headers=web.write)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["accepted"] == 4
    names = sorted(dict(lbl)["__name__"] for lbl in web.store.series([], 0, 2**62))
    assert names == ["cpu_usage", "disk_io_read_iops", "disk_io_write_iops", "memory_usage"]
    for lbl in web.store.series([], 0, 2**62):
        assert dict(lbl)["server_id"] == "web-1"
        assert set(dict(lbl)) == {"__name__", "server_id"}


async def test_list_with_labels_and_timestamp_forms(web: Web) -> None:
    body = [
        {"server_id": "a", "timestamp": T0, "metrics": {"x": 1}},
        {"server_id": "a", "timestamp": T0 * 1000 + 5000, "metrics": {"x": 2}},
        {
            "server_id": "b",
            "timestamp": "2025-06-15T15:00:00Z",
            "metrics": {"x": 3},
            "labels": {"dc": "eu"},
        },
        {"server_id": "b", "metrics": {"x": 4}},
    ]
    r = await web.client.post("/api/v1/metrics", json=body, headers=web.write)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {
        "items": 4,
        "accepted": 4,
        "rejected": 0,
        "rejected_by_reason": {},
        "errors": [],
    }
    data = {tuple(sorted(dict(s.labels).items())): s for s in web.store.select([], 0, 2**62)}
    a = data[(("__name__", "x"), ("server_id", "a"))]
    assert a.ts_ms.tolist() == [T0 * 1000, T0 * 1000 + 5000]
    b_eu = data[(("__name__", "x"), ("dc", "eu"), ("server_id", "b"))]
    assert b_eu.ts_ms.tolist() == [1_750_000_000_000 - 0] or b_eu.ts_ms.tolist()[0] > 0
    b = data[(("__name__", "x"), ("server_id", "b"))]
    assert b.ts_ms.tolist() == [int(NOW_S * 1000)]


async def test_gzip_body_accepted(web: Web) -> None:
    raw = json.dumps(SEED).encode()
    r = await web.client.post(
        "/api/v1/metrics",
        content=gzip.compress(raw),
        headers={**web.write, "Content-Encoding": "gzip"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["accepted"] == 4


BAD = [
    (b"{", 400, "$: "),
    (b"[1]", 400, "$[0]"),
    (b'{"metrics": {"a": 1}}', 400, "missing required field `server_id`"),
    (b'{"server_id": 5, "metrics": {"a": 1}}', 400, "$.server_id"),
    (b'{"server_id": "", "metrics": {"a": 1}}', 400, "$.server_id: must not be empty"),
    (b'{"server_id": "s", "metrics": {"a": "1"}}', 400, "$.metrics.a: expected a number"),
    (b'{"server_id": "s", "metrics": {"a": "NaN"}}', 400, "NaN and Inf are not accepted"),
    (b'{"server_id": "s", "metrics": {"a": true}}', 400, "got a boolean"),
    (b'{"server_id": "s", "metrics": {"a": null}}', 400, "got null"),
    (b'{"server_id": "s", "metrics": {"d": {"a": [1]}}}', 400, "$.metrics.d.a: expected"),
    (b'{"server_id": "s", "metrics": {"a": NaN}}', 400, "malformed"),
    (b'{"server_id": "s", "metrics": {"a": 1e999}}', 400, "out of range"),
    (b'{"server_id": "s", "timestamp": "yesterday", "metrics": {"a": 1}}', 400, "$.timestamp"),
    (b'{"server_id": "s", "timestamp": true, "metrics": {"a": 1}}', 400, "$.timestamp"),
    (b'{"server_id": "s", "labels": {"server_id": "x"}, "metrics": {"a": 1}}', 400, "reserved"),
    (b'{"server_id": "s", "labels": {"bad-name": "x"}, "metrics": {"a": 1}}', 400, "bad-name"),
    (b'{"server_id": "s", "labels": {"a": 1}, "metrics": {"a": 1}}', 400, "$.labels"),
    (
        b'[{"server_id": "s", "metrics": {"a": 1}}, {"server_id": "s", "metrics": 3}]',
        400,
        "$[1].metrics",
    ),
]


@pytest.mark.parametrize(("body", "status", "fragment"), BAD)
async def test_bad_bodies_are_refused_whole(
    web: Web, body: bytes, status: int, fragment: str
) -> None:
    r = await web.client.post("/api/v1/metrics", content=body, headers=web.write)
    assert r.status_code == status, r.text
    doc = r.json()
    assert doc["status"] == "error"
    assert doc["errorType"] == "bad_data"
    assert doc["error"].startswith("cannot parse metrics body: ")
    assert fragment in doc["error"]
    assert web.store.appends == 0


async def test_out_of_window_items_are_counted_rest_kept(web: Web) -> None:
    body = [
        {"server_id": "s", "timestamp": T0, "metrics": {"a": 1, "b": 2}},
        {"server_id": "s", "timestamp": int(NOW_S) + 86_400, "metrics": {"a": 1}},
        {"server_id": "s", "timestamp": 1_000_000, "metrics": {"a": 1}},
    ]
    r = await web.client.post("/api/v1/metrics", json=body, headers=web.write)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["accepted"] == 2
    assert data["rejected_by_reason"] == {"too_far_in_future": 1, "too_old": 1}
    assert any(e.startswith("$[1].timestamp") for e in data["errors"])
    assert any(e.startswith("$[2].timestamp") for e in data["errors"])


async def test_all_out_of_window_is_400(web: Web) -> None:
    r = await post(web, {"server_id": "s", "timestamp": int(NOW_S) + 86_400, "metrics": {"a": 1}})
    assert r.status_code == 400
    assert "every sample was refused" in r.json()["error"]


async def test_cardinality_limit_is_429_with_retry_after(web: Web) -> None:
    web.store.max_series = 2
    r = await post(web, {"server_id": "s", "timestamp": T0, "metrics": {"a": 1, "b": 2, "c": 3}})
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "60"
    assert r.json()["errorType"] == "too_many_series"


async def test_overloaded_is_429(web: Web) -> None:
    web.store.overloaded = True
    r = await post(web, SEED)
    assert r.status_code == 429
    assert r.headers["Retry-After"] == "2"


async def _ingest_series(web: Web) -> None:
    body = []
    for i in range(60):  # one sample per minute for an hour, two servers
        for server in ("a", "b"):
            body.append(
                {
                    "server_id": server,
                    "timestamp": T0 - 3000 + i * 60,
                    "metrics": {"cpu": float(i), "mem": {"used": 100.0 + i}},
                }
            )
    assert (await post(web, body)).status_code == 200


async def test_history_filters_by_server_and_metric(web: Web) -> None:
    await _ingest_series(web)
    r = await web.client.get(
        "/api/v1/metrics",
        params={
            "server_id": "a",
            "metric_type": "cpu,mem_used",
            "start_time": T0 - 3000,
            "end_time": T0,
        },
        headers=web.read,
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert [(d["server_id"], d["metric"]) for d in data] == [("a", "cpu"), ("a", "mem_used")]
    assert data[0]["labels"] == {}
    assert data[0]["points"][0] == [T0 - 3000, 0.0]
    assert len(data[0]["points"]) == 51


async def test_history_defaults_to_last_hour_and_every_metric(web: Web) -> None:
    await _ingest_series(web)
    r = await web.client.get("/metrics?server_id=a&server_id=b", headers=web.read)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert len(data) == 4
    assert all(len(d["points"]) == 60 for d in data)


@pytest.mark.parametrize("resolution", ["", "raw", "5m"])
async def test_history_step_averages(web: Web, resolution: str) -> None:
    await _ingest_series(web)
    params: dict[str, str | int] = {
        "server_id": "a",
        "metric_type": "cpu",
        "step": "10m",
        "start_time": T0 - 3600,
        "end_time": T0,
    }
    if resolution:
        params["resolution"] = resolution
    r = await web.client.get("/api/v1/metrics", params=params, headers=web.read)
    assert r.status_code == 200, r.text
    points = r.json()["data"][0]["points"]
    first_bucket = (T0 - 3000) // 600 * 600
    assert points[0][0] == first_bucket
    # samples 0..n in the first 10-minute bucket average to their mean
    in_first = [i for i in range(60) if (T0 - 3000 + i * 60) // 600 * 600 == first_bucket]
    assert points[0][1] == pytest.approx(sum(in_first) / len(in_first))


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"start_time": "tomorrow"}, "start_time"),
        ({"step": "fast"}, "duration"),
        ({"step": "0s"}, "positive"),
        ({"resolution": "2m"}, "resolution"),
        ({"start_time": T0, "end_time": T0 - 10}, "after end_time"),
        ({"serverid": "a"}, "unknown parameter 'serverid'"),
    ],
)
async def test_history_bad_params(web: Web, params: dict[str, object], fragment: str) -> None:
    query = {k: str(v) for k, v in params.items()}
    r = await web.client.get("/api/v1/metrics", params=query, headers=web.read)
    assert r.status_code == 400
    assert fragment in r.json()["error"]


async def test_history_point_limit_is_422() -> None:
    from monitoringserver.web.options import LimitsOptions
    from tests.web.conftest import build

    async for web in build(LimitsOptions(max_query_points=10)):
        await _ingest_series(web)
        r = await web.client.get("/api/v1/metrics", headers=web.read)
        assert r.status_code == 422
        assert r.json()["errorType"] == "execution"


async def test_self_metrics_exposition(web: Web) -> None:
    await post(web, SEED)
    await post(web, {"server_id": "s", "timestamp": int(NOW_S) + 86_400, "metrics": {"a": 1}})
    await post(web, {"metrics": {}})
    r = await web.client.get("/metrics", headers=web.read)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'monitoring_ingest_samples_total{format="json"} 4.0' in text
    assert 'monitoring_ingest_requests_total{format="json",outcome="rejected"} 1.0' in text
    assert 'monitoring_ingest_requests_total{format="json",outcome="bad_data"} 1.0' in text
    assert (
        'monitoring_ingest_rejected_samples_total{format="json",reason="too_far_in_future"} 1.0'
        in text
    )
    assert (
        'monitoring_http_request_duration_seconds_count{code="200",method="POST",route="/api/v1/metrics"}'
        in text
    )


async def test_latest_per_server(web: Web) -> None:
    await _ingest_series(web)
    r = await web.client.get("/api/v1/monitoring/metrics?lookback=2h", headers=web.read)
    assert r.status_code == 200, r.text
    servers = r.json()["data"]["servers"]
    assert [s["server_id"] for s in servers] == ["a", "b"]
    cpu = next(m for m in servers[0]["metrics"] if m["metric"] == "cpu")
    assert cpu["value"] == 59.0
    assert cpu["timestamp"] == T0 - 3000 + 59 * 60
    r = await web.client.get("/api/v1/monitoring/metrics?server_id=b", headers=web.read)
    assert [s["server_id"] for s in r.json()["data"]["servers"]] == ["b"]


async def test_stale_markers_are_not_points_and_nan_is_null(web: Web) -> None:
    from monitoringserver.model.labels import make_labels
    from monitoringserver.model.samples import STALE_NAN, SampleBatch

    lbl = make_labels({"__name__": "up", "server_id": "p"})
    nan_lbl = make_labels({"__name__": "odd", "server_id": "p"})
    t = T0 * 1000
    batch = SampleBatch.from_rows(
        [(lbl, t, 1.0), (lbl, t + 1000, STALE_NAN), (nan_lbl, t, float("nan"))]
    )
    await web.store.append(batch)
    r = await web.client.get(
        "/api/v1/metrics", params={"server_id": "p", "start_time": T0 - 10}, headers=web.read
    )
    data = {d["metric"]: d["points"] for d in r.json()["data"]}
    assert data == {"odd": [[T0, None]], "up": [[T0, 1.0]]}
    r = await web.client.get("/api/v1/monitoring/metrics?lookback=1h", headers=web.read)
    metrics = {m["metric"]: m["value"] for m in r.json()["data"]["servers"][0]["metrics"]}
    assert metrics == {"odd": None}  # "up" ended with a staleness marker


async def test_each_server_is_its_own_source_and_limit(web: Web) -> None:
    web.store.max_series = 2
    body = [
        {"server_id": "a", "timestamp": T0, "metrics": {"x": 1}},
        {"server_id": "b", "timestamp": T0, "metrics": {"x": 1, "y": 2, "z": 3}},
    ]
    r = await post(web, body)
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["accepted"] == 1
    assert data["rejected_by_reason"] == {"too_many_series": 3}
    assert data["errors"][0].startswith("server_id 'b': cannot append samples")
    assert web.store.sources == ["json:a"]


async def test_known_series_go_in_one_append(web: Web) -> None:
    body = [
        {"server_id": "a", "timestamp": T0, "metrics": {"x": 1}},
        {"server_id": "b", "timestamp": T0, "metrics": {"x": 1}},
    ]
    assert (await post(web, body)).status_code == 200
    assert web.store.sources == ["json:a", "json:b"]
    assert (await post(web, body)).status_code == 200
    assert web.store.sources[2:] == ["json"]
    body.append({"server_id": "c", "timestamp": T0, "metrics": {"x": 1}})
    assert (await post(web, body)).status_code == 200
    assert web.store.sources[3:] == ["json:a", "json:b", "json:c"]


def test_cache_generation_guards_stored_flags() -> None:
    import numpy as np

    from monitoringserver.ingest.json_metrics import SeriesCache

    cache = SeriesCache(max_series=1)
    names = cache.names_for("s", ())
    numbers = np.array([cache.add(names, "m", "s", ()), cache.add(names, "n", "s", ())])
    assert not cache.all_stored(numbers, 0)
    cache.mark_stored(numbers, 0)
    assert cache.all_stored(numbers, 0)
    cache.maybe_reset()
    assert cache.generation == 1
    cache.mark_stored(np.array([0]), 0)  # stale generation: ignored
    assert not cache.all_stored(np.array([0]), 1)
