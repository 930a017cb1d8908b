"""The log routers inside the foundation app (create_app), as server.py wires them:
one database for tokens and logs, real scopes, gzip bodies, log counts into the
metric appender."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.logs.store import LogStoreOptions
from monitoringserver.model.labels import labels_to_dict
from monitoringserver.pipeline.log_pipeline import open_log_pipeline
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, create_app
from monitoringserver.web.routers.logs import LogsWeb, logs_router
from monitoringserver.web.routers.loki import loki_router
from tests.fakes import FakeStore


async def test_wired_like_server_py(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.duckdb", threads=1)
    tokens = TokenStore(db)
    tokens.open()
    metrics = FakeStore()
    pipeline = open_log_pipeline(
        db,
        tmp_path / "logs",
        store_options=LogStoreOptions(retention_s=None),
        metrics_sink=metrics.append,
        wal_fsync="never",
    )
    web = LogsWeb(
        appender=pipeline.writer,
        querier=pipeline.querier,
        store=pipeline.store,
        compressor=pipeline.compressor,
        aggregator=pipeline.aggregator,
        bus=pipeline.bus,
        parser_stats=pipeline.parser.stats,
    )
    comps = WebComponents(
        appender=metrics, querier=metrics, tokens=tokens, registry=CollectorRegistry()
    )
    app = create_app(comps, extra_routers=[logs_router(web), loki_router(web)])
    write = {"Authorization": f"Bearer {tokens.create('w', ['monitoring:write'])[1]}"}
    read = {"Authorization": f"Bearer {tokens.create('r', ['monitoring:read'])[1]}"}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.post(
            "/logs", json={"server_id": "a", "message": "boom", "type": "error"}, headers=write
        )
        assert r.status_code == 200, r.text
        ns = str(time.time_ns())
        body = gzip.compress(
            json.dumps(
                {"streams": [{"stream": {"host": "b", "job": "j"}, "values": [[ns, "ERROR x"]]}]}
            ).encode()
        )
        r = await client.post(
            "/loki/api/v1/push",
            content=body,
            headers={**write, "content-type": "application/json", "content-encoding": "gzip"},
        )
        assert r.status_code == 204, r.text
        assert (await client.get("/logs", headers=write)).status_code == 403
        # Ingest runs as a direct route: its own auth check and project errors.
        for path in ("/logs", "/api/v1/logs", "/loki/api/v1/push"):
            assert (await client.post(path, content=b"{}")).status_code == 401
            assert (await client.post(path, content=b"{}", headers=read)).status_code == 403
            r = await client.post(path, content=b"{", headers=write)
            assert r.status_code == 400, r.text
            assert r.json()["errorType"] == "bad_data"
        await pipeline.writer.commit_pending()
        logs = (await client.get("/logs", headers=read)).json()["data"]["logs"]
        assert sorted(x["server_id"] for x in logs) == ["a", "b"]
        r = await client.get("/loki/api/v1/label/job/values", headers=read)
        assert r.json()["data"] == ["j"]
    assert await pipeline.aggregator.export() > 0
    await pipeline.aclose()
    names = {labels_to_dict(s).get("__name__") for s in metrics.series([], 0, 2**62)}
    assert {"log_lines_total", "log_pattern_lines_total"} <= names
    db.close()
