"""Seed-002 /logs API, archives, rotate, stats, patterns, aggregation, dashboard stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import zstandard
from starlette.websockets import WebSocketDisconnect

from monitoringserver.pipeline.log_pipeline import LogPipeline
from tests.logs.webapp import TestClient, log_app


@pytest.fixture
def env(tmp_path: Path) -> Iterator[tuple[TestClient, LogPipeline]]:
    with log_app(tmp_path) as (app, pipeline), TestClient(app) as client:
        yield client, pipeline


def _commit(client: TestClient, p: LogPipeline) -> None:
    assert client.portal is not None
    client.portal.call(p.writer.commit_pending)


NOW_MS = int(time.time() * 1000)


def _post(client: TestClient, body: object, path: str = "/api/v1/logs") -> dict[str, object]:
    r = client.post(path, json=body)
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_post_one_or_list_and_get_filters(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    d = _post(
        client,
        {"server_id": "s1", "timestamp": NOW_MS - 3000, "message": "disk ok", "type": "info"},
    )
    assert d["accepted"] == 1
    d = _post(
        client,
        [
            {
                "server_id": "s1",
                "timestamp": (NOW_MS - 2000) / 1000,
                "message": "disk full",
                "type": "error",
                "logger": "fs",
            },
            {"server_id": "s2", "message": "ERROR cannot connect", "attrs": {"port": 5432}},
            {"server_id": "s2", "timestamp": "bogus", "message": "x", "level": "warn", "extra": 1},
        ],
        path="/logs",
    )
    assert d["accepted"] == 3
    assert d["repaired"] == {"bad_timestamp": 1}
    _commit(client, p)
    logs = client.get("/logs", params={"server_id": "s1"}).json()["data"]["logs"]
    assert [x["message"] for x in logs] == ["disk full", "disk ok"]
    assert logs[0]["type"] == "error"
    assert logs[0]["logger"] == "fs"
    r = client.get("/api/v1/logs", params={"log_type": "error"}).json()["data"]["logs"]
    assert {x["message"] for x in r} == {"disk full", "ERROR cannot connect"}
    assert [x["attrs"] for x in r if x["server_id"] == "s2"] == [{"port": "5432"}]
    r = client.get("/api/v1/logs", params={"level": "warning,info"}).json()["data"]["logs"]
    assert len(r) == 2
    r = client.get("/api/v1/logs", params={"q": "disk", "direction": "forward"}).json()["data"]
    assert [x["message"] for x in r["logs"]] == ["disk ok", "disk full"]
    r = client.get("/api/v1/logs", params={"regex": "^disk f"}).json()["data"]["logs"]
    assert len(r) == 1
    r = client.get("/api/v1/logs", params={"start_time": NOW_MS - 2500, "end_time": NOW_MS - 1500})
    assert [x["message"] for x in r.json()["data"]["logs"]] == ["disk full"]
    src = client.get("/api/v1/logs/sources").json()["data"]
    assert src == {
        "nodes": ["s1", "s2"],
        "loggers": ["fs"],
        "log_levels": ["error", "info", "warning"],
    }
    page = client.get("/api/v1/logs", params={"limit": 2}).json()["data"]
    assert page["next_cursor"]
    rest = client.get("/api/v1/logs", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert len(page["logs"]) + len(rest["data"]["logs"]) == 4


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": "0"}, 400),
        ({"limit": "x"}, 400),
        ({"direction": "up"}, 400),
        ({"start_time": "yesterday"}, 400),
        ({"regex": "(unclosed"}, 400),
        ({"cursor": "***"}, 400),
    ],
)
def test_bad_queries(
    env: tuple[TestClient, LogPipeline], params: dict[str, str], status: int
) -> None:
    client, _ = env
    r = client.get("/api/v1/logs", params=params)
    assert r.status_code == status
    assert r.json()["status"] == "error"


@pytest.mark.parametrize("body", [b"{", b'{"server_id": "x"}', b"[1, 2]", b'{"message": 5}'])
def test_bad_bodies(env: tuple[TestClient, LogPipeline], body: bytes) -> None:
    client, _ = env
    r = client.post("/api/v1/logs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.json()["error"].startswith("cannot ")


def test_invalid_utf8_and_old_lines(env: tuple[TestClient, LogPipeline]) -> None:
    client, _ = env
    body = b'{"server_id": "s", "message": "bad \xff byte", "type": "info"}'
    r = client.post("/api/v1/logs", content=body, headers={"content-type": "application/json"})
    assert r.json()["data"]["repaired"] == {"invalid_utf8": 1}
    r = client.post("/api/v1/logs", json={"message": "m", "timestamp": NOW_MS + 86_400_000})
    assert r.status_code == 400
    assert "too_far_in_future" in r.json()["error"]


def test_archives_download_delete_rotate_stats(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _post(
        client,
        [{"server_id": f"h{i % 2}", "message": f"line {i}", "type": "info"} for i in range(20)],
    )
    _commit(client, p)
    r = client.post("/api/v1/logs/rotate", params={"flush": "true"}).json()["data"]
    assert r == {"deleted": [], "freed_bytes": 0, "compacted_into": []}
    archives = client.get("/api/v1/logs/archives").json()["data"]
    assert len(archives) == 1
    a = archives[0]
    assert (a["lines"], sorted(a["hosts"])) == (20, ["h0", "h1"])
    assert client.get("/api/v1/logs/archives", params={"server_id": "zz"}).json()["data"] == []
    got = client.get(f"/api/v1/logs/archives/{a['id']}", params={"format": "stored"})
    assert got.headers["content-type"] == "application/zstd"
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(got.content)
    assert raw[:4] == b"PAR1"
    assert len(raw) == a["stored_bytes"]
    stats = client.get("/api/v1/logs/stats").json()["data"]
    assert stats["store"]["archived_lines"] == 20
    assert stats["compression"]["calls"] == 1
    assert stats["aggregation"]["lines_total"] == 20
    assert "bus" in stats
    assert "parser" in stats
    assert client.delete(f"/api/v1/logs/archives/{a['id']}").status_code == 200
    assert client.delete(f"/api/v1/logs/archives/{a['id']}").status_code == 404
    assert client.get(f"/api/v1/logs/archives/{a['id']}").status_code == 404
    r = client.post("/api/v1/logs/rotate", params={"max_age_s": "x"})
    assert r.status_code == 400
    for k in range(2):
        _post(client, [{"server_id": "c", "message": f"m{k}", "type": "info"}])
        _commit(client, p)
        client.post("/api/v1/logs/rotate", params={"flush": "true"})
    r = client.post("/api/v1/logs/rotate", params={"compact": "true"}).json()["data"]
    assert len(r["compacted_into"]) == 1
    assert [a["lines"] for a in client.get("/api/v1/logs/archives").json()["data"]] == [2]


def test_patterns_and_aggregation_rules(env: tuple[TestClient, LogPipeline]) -> None:
    client, p = env
    _post(
        client,
        [{"server_id": "h", "message": f"user {i} logged in", "type": "warning"} for i in range(5)],
    )
    assert client.get("/api/v1/logs/patterns").json()["data"] == []  # counted once committed
    _commit(client, p)
    pats = client.get("/api/v1/logs/patterns", params={"limit": 5}).json()["data"]
    assert pats[0]["template"] == "user <num> logged in"
    assert pats[0]["count"] == 5
    assert len(pats[0]["samples"]) == 3
    assert client.get("/api/v1/logs/patterns", params={"level": "error"}).json()["data"] == []
    _post(client, {"server_id": "h", "message": "fine", "type": "info"})
    assert len(client.get("/api/v1/logs/patterns").json()["data"]) == 1
    r = client.put("/api/v1/logs/aggregation", json={"window_s": 30, "group_by": ["level"]})
    assert r.json()["data"]["rules"]["window_s"] == 30
    assert client.get("/api/v1/logs/aggregation").json()["data"]["rules"]["group_by"] == ["level"]
    assert client.put("/api/v1/logs/aggregation", json={"window_s": 0}).status_code == 400
    assert client.put("/api/v1/logs/aggregation", content=b"{").status_code == 400


def test_scopes(tmp_path: Path) -> None:
    with log_app(tmp_path, auth=True) as (app, _), TestClient(app) as client:
        assert client.get("/api/v1/logs").status_code == 401
        w = {"Authorization": "Bearer w"}
        r = {"Authorization": "Bearer r"}
        a = {"Authorization": "Bearer a"}
        assert client.post("/logs", json={"message": "m"}, headers=r).status_code == 403
        assert client.post("/logs", json={"message": "m"}, headers=w).status_code == 200
        assert client.get("/logs", headers=w).status_code == 403
        assert client.get("/logs", headers=r).status_code == 200
        assert client.post("/api/v1/logs/rotate", headers=r).status_code == 403
        assert client.post("/api/v1/logs/rotate", headers=a).status_code == 200
        assert client.delete("/api/v1/logs/archives/x", headers=w).status_code == 403
        with (
            pytest.raises(WebSocketDisconnect),
            client.websocket_connect("/api/v1/logs/stream") as ws,
        ):
            ws.receive_json()


def test_rate_limit_answers_429(tmp_path: Path) -> None:
    with log_app(tmp_path, rate=1.0) as (app, _), TestClient(app) as client:
        lines = [{"message": f"m{i}"} for i in range(8)]
        assert client.post("/logs", json=lines).status_code == 200
        r = client.post("/logs", json=lines)
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) >= 1


def test_dashboard_stream_delivers_new_logs(env: tuple[TestClient, LogPipeline]) -> None:
    client, _ = env
    with client.websocket_connect("/api/v1/logs/stream?server_id=w1&level=error") as ws:
        _post(
            client,
            [
                {"server_id": "w2", "message": "other", "type": "error"},
                {"server_id": "w1", "message": "quiet", "type": "info"},
                {"server_id": "w1", "message": "boom", "type": "error", "logger": "svc"},
            ],
        )
        msg = ws.receive_json()
        assert msg["type"] == "new_logs"
        assert msg["node_id"] == "w1"
        assert [(x["message"], x["level"], x["logger_name"]) for x in msg["logs"]] == [
            ("boom", "ERROR", "svc")
        ]


def test_archive_download_rebuilds_lines_in_every_layout(
    env: tuple[TestClient, LogPipeline], tmp_path: Path
) -> None:
    client, p = env
    uid = "0f8fad5b-d9cb-469f-a165-70867728950e"
    messages = [
        f'10.0.0.{k} - - "GET /api/items/{k} HTTP/1.1" 200 {512 + k} req={uid} trace={"ab" * 16}'
        for k in range(30)
    ]
    for half in (messages[:15], messages[15:]):  # two fresh archives, then one compacted
        _post(client, [{"server_id": "h", "message": m, "type": "info"} for m in half])
        _commit(client, p)
        client.post("/api/v1/logs/rotate", params={"flush": "true"})
    archives = client.get("/api/v1/logs/archives").json()["data"]
    fresh = [_downloaded(client, a["id"], tmp_path, "parquet", k) for k, a in enumerate(archives)]
    assert sorted(m for part in fresh for m in part) == sorted(messages)
    client.post("/api/v1/logs/rotate", params={"compact": "true"})
    (merged,) = client.get("/api/v1/logs/archives").json()["data"]
    assert sorted(_downloaded(client, merged["id"], tmp_path, "parquet", 9)) == sorted(messages)
    assert sorted(_downloaded(client, merged["id"], tmp_path, "jsonl", 10)) == sorted(messages)
    stored = client.get(f"/api/v1/logs/archives/{merged['id']}", params={"format": "stored"})
    (tmp_path / "stored.parquet").write_bytes(
        zstandard.ZstdDecompressor().decompressobj().decompress(stored.content)
    )
    with duckdb.connect() as con:  # the compacted file really is the template layout
        names = [r[0] for r in con.execute(f"DESCRIBE '{tmp_path / 'stored.parquet'}'").fetchall()]
    assert "tmpl" in names
    assert "message" not in names
    bad = client.get(f"/api/v1/logs/archives/{merged['id']}", params={"format": "csv"})
    assert bad.status_code == 400
    assert "cannot export log archive" in bad.text
    assert client.get("/api/v1/logs/archives/nope").status_code == 404


def _downloaded(client: TestClient, archive_id: str, tmp: Path, fmt: str, k: int) -> list[str]:
    got = client.get(f"/api/v1/logs/archives/{archive_id}", params={"format": fmt})
    assert got.status_code == 200, got.text
    raw = zstandard.ZstdDecompressor().decompressobj().decompress(got.content)
    if fmt == "jsonl":
        return [json.loads(line)["message"] for line in raw.decode().splitlines()]
    path = tmp / f"dl{k}.parquet"
    path.write_bytes(raw)
    with duckdb.connect() as con:
        return [str(r[0]) for r in con.execute(f"SELECT message FROM '{path}'").fetchall()]
