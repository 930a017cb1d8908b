"""Loki API: push (protobuf + JSON), query_range/query shapes, labels, series, tail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.websockets import WebSocketDisconnect

from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.pipeline.log_pipeline import LogPipeline
from tests.ingest.test_loki_push import push_body
from tests.logs.webapp import TestClient, log_app

NOW_NS = time.time_ns() // 1_000_000_000 * 1_000_000_000 - 60 * 1_000_000_000


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, LogPipeline]]:
    with log_app(tmp_path) as (app, pipeline), TestClient(app) as client:
        yield client, pipeline


def _commit(client: TestClient, p: LogPipeline) -> None:
    assert client.portal is not None
    client.portal.call(p.writer.commit_pending)


def _push_sample(client: TestClient, p: LogPipeline) -> None:
    body = push_body(
        [
            (
                '{job="web", host="h1"}',
                [
                    (NOW_NS, b'{"status": 500, "msg": "fail"}', {}),
                    (NOW_NS + 1_000_000_000, b'{"status": 200, "msg": "ok"}', {}),
                ],
            ),
            ('{job="db", host="h2", level="error"}', [(NOW_NS + 2_000_000_000, b"conn lost", {})]),
        ]
    )
    r = client.post(
        "/loki/api/v1/push", content=body, headers={"content-type": "application/x-protobuf"}
    )
    assert r.status_code == 204, r.text
    r = client.post(
        "/loki/api/v1/push",
        json={
            "streams": [
                {
                    "stream": {"job": "web", "host": "h1"},
                    "values": [[str(NOW_NS + 3_000_000_000), "INFO started"]],
                }
            ]
        },
    )
    assert r.status_code == 204
    _commit(client, p)


def _range_params(query: str, **extra: str) -> dict[str, str]:
    return {"query": query, "start": str(NOW_NS - 10**9), "end": str(NOW_NS + 10 * 10**9), **extra}


def test_query_range_streams(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _push_sample(client, p)
    r = client.get("/loki/api/v1/query_range", params=_range_params('{job="web"}'))
    data = r.json()["data"]
    assert data["resultType"] == "streams"
    values = [v for s in data["result"] for v in s["values"]]
    assert [v[1] for v in values] == [
        "INFO started",
        '{"status": 200, "msg": "ok"}',
        '{"status": 500, "msg": "fail"}',
    ]
    assert values[0][0] == str(NOW_NS + 3_000_000_000)
    stream = data["result"][0]["stream"]
    assert stream["job"] == "web"
    assert stream["server_id"] == "h1"
    assert stream["host"] == "h1"
    r = client.get(
        "/loki/api/v1/query_range",
        params=_range_params('{job="web"} | json | status >= 500', direction="forward", limit="10"),
    )
    assert [v[1] for s in r.json()["data"]["result"] for v in s["values"]] == [
        '{"status": 500, "msg": "fail"}'
    ]
    r = client.post("/loki/api/v1/query_range", data=_range_params('{host="h2"} |= "conn"'))
    assert len(r.json()["data"]["result"]) == 1


def test_metric_queries(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _push_sample(client, p)
    params = _range_params('sum by (job) (count_over_time({job=~".+"}[1m]))', step="5")
    data = client.get("/loki/api/v1/query_range", params=params).json()["data"]
    assert data["resultType"] == "matrix"
    by_job = {s["metric"]["job"]: s["values"] for s in data["result"]}
    assert by_job["web"][-1][1] == "3"
    assert by_job["db"][-1][1] == "1"
    assert isinstance(by_job["web"][0][0], float | int)
    at = str((NOW_NS + 5 * 10**9) / 1e9)
    r = client.get("/loki/api/v1/query", params={"query": 'sum(rate({job="web"}[1m]))', "time": at})
    data = r.json()["data"]
    assert data["resultType"] == "vector"
    assert data["result"][0]["value"][1] == repr(3 / 60)
    r = client.get("/loki/api/v1/query", params={"query": "vector(1)+vector(1)"})
    assert r.json()["data"]["result"][0]["value"][1] == "2"
    r = client.get("/loki/api/v1/query_range", params=_range_params("vector(3)", step="5s"))
    assert r.json()["data"]["result"][0]["values"][0][1] == "3"
    r = client.get("/loki/api/v1/query", params={"query": '{job="db"}', "time": at})
    assert r.json()["data"]["resultType"] == "streams"
    r = client.get("/loki/api/v1/index/stats", params=_range_params('{job="web"}'))
    assert r.json()["entries"] == 3
    assert r.json()["bytes"] > 0


def test_labels_values_series(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _push_sample(client, p)
    names = client.get("/loki/api/v1/labels").json()["data"]
    assert {"job", "host", "server_id", "level", "source"} <= set(names)
    assert client.get("/loki/api/v1/label").json()["data"] == names
    vals = client.get("/loki/api/v1/label/job/values").json()["data"]
    assert vals == ["db", "web"]
    vals = client.get("/loki/api/v1/label/server_id/values", params={"query": '{job="db"}'}).json()
    assert vals["data"] == ["h2"]
    series = client.get(
        "/loki/api/v1/series", params={"match[]": ['{job="db"}', '{host="h1"}']}
    ).json()
    assert {s["server_id"] for s in series["data"]} == {"h1", "h2"}
    r = client.post("/loki/api/v1/series", data={"match[]": '{job="db"}'})
    assert len(r.json()["data"]) == 1
    assert client.get("/loki/api/v1/series").status_code == 400


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        ("/loki/api/v1/query_range", {"query": "{"}, 400),
        ("/loki/api/v1/query_range", {"query": '{a="b"}', "start": "10", "end": "5"}, 400),
        ("/loki/api/v1/query_range", {"query": '{a="b"}', "limit": "x"}, 400),
        ("/loki/api/v1/query_range", {"query": '{a="b"}', "limit": "0"}, 400),
        ("/loki/api/v1/query", {"query": "topk(1, x)"}, 400),
        ("/loki/api/v1/label/job/values", {"query": 'rate({a="b"}[1m])'}, 400),
        ("/loki/api/v1/labels", {"start": "soon"}, 400),
    ],
)
def test_bad_requests(
    env: tuple[TestClient, LogPipeline], path: str, params: dict[str, str], status: int
) -> None:
    client, _ = env
    r = client.get(path, params=params)
    assert r.status_code == status
    assert r.json()["errorType"] == "bad_data"


def test_push_errors(env: tuple[TestClient, LogPipeline]) -> None:
    client, _ = env
    assert client.get("/loki/api/v1/status/buildinfo").json()["version"] == "2.9.0"
    r = client.post(
        "/loki/api/v1/push", content=b"junk", headers={"content-type": "application/x-protobuf"}
    )
    assert r.status_code == 400
    r = client.post("/loki/api/v1/push", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_tail_filters_server_side_and_sends_history(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _push_sample(client, p)
    url = f'/loki/api/v1/tail?query={{job="web"}} |= "fail"&start={NOW_NS - 10**9}'
    with client.websocket_connect(url) as ws:
        history = ws.receive_json()
        assert [v[1] for s in history["streams"] for v in s["values"]] == [
            '{"status": 500, "msg": "fail"}'
        ]
        client.post(
            "/loki/api/v1/push",
            json={
                "streams": [
                    {"stream": {"job": "db"}, "values": [[str(NOW_NS), "fail elsewhere"]]},
                    {
                        "stream": {"job": "web"},
                        "values": [[str(NOW_NS), "quiet"], [str(NOW_NS + 1), "fail again"]],
                    },
                ]
            },
        )
        msg = ws.receive_json()
        assert [v[1] for s in msg["streams"] for v in s["values"]] == ["fail again"]


def test_tail_drops_slow_client_with_message(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    batch = LogBatch.from_records([LogRecord(1, "x", attrs={"job": "web"})])

    def flood() -> None:
        for _ in range(400):  # more than the subscriber queue, in one loop turn
            p.bus.publish(batch)

    with client.websocket_connect('/loki/api/v1/tail?query={job="web"}') as ws:
        assert client.portal is not None
        client.portal.call(flood)
        msg = ws.receive_json()
        assert "slow consumer" in msg["error"]
        with pytest.raises(WebSocketDisconnect) as exc:
            ws.receive_json()
        assert exc.value.code == 1013
    assert p.bus.stats().dropped_subscribers == 1


def test_tail_rejects_bad_query_and_auth(
    tmp_path: Path, env: tuple[TestClient, LogPipeline]
) -> None:
    client, _ = env
    with (
        pytest.raises(WebSocketDisconnect) as exc,
        client.websocket_connect("/loki/api/v1/tail?query={"),
    ):
        pass
    assert exc.value.code == 1008
    (tmp_path / "auth").mkdir()
    with log_app(tmp_path / "auth", auth=True) as (app, _), TestClient(app) as c2:
        with (
            pytest.raises(WebSocketDisconnect) as exc2,
            c2.websocket_connect('/loki/api/v1/tail?query={a="b"}'),
        ):
            pass
        assert exc2.value.code == 1008
        assert (
            c2.post(
                "/loki/api/v1/push", content=b"", headers={"Authorization": "Bearer r"}
            ).status_code
            == 403
        )
