"""A small app around the log routers, on a real log pipeline in a temporary directory."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import FastAPI

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.logs.store import LogStoreOptions
from monitoringserver.pipeline.log_pipeline import LogPipeline, open_log_pipeline
from monitoringserver.pipeline.log_writer import LogWriterOptions
from monitoringserver.storage.db import Database
from monitoringserver.web.errors import install_error_handlers
from monitoringserver.web.routers.logs import LogsWeb, logs_router
from monitoringserver.web.routers.loki import loki_router

with warnings.catch_warnings():
    # starlette 1.10 prefers httpx2 for its TestClient; httpx works the same for these tests
    warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
    from starlette.testclient import TestClient

__all__ = ["TestClient", "log_app"]

TOKENS = {
    "r": Principal("reader", frozenset({Scope.READ})),
    "w": Principal("writer", frozenset({Scope.WRITE})),
    "a": Principal("admin", frozenset({Scope.ADMIN})),
}


class FakeAuth:
    def authenticate(self, credential: str) -> Principal | None:
        return TOKENS.get(credential)


@contextmanager
def log_app(
    tmp_path: Path, *, auth: bool = False, rate: float | None = None
) -> Iterator[tuple[FastAPI, LogPipeline]]:
    db = Database(tmp_path / "db.duckdb", threads=1)
    pipeline = open_log_pipeline(
        db,
        tmp_path / "logs",
        store_options=LogStoreOptions(retention_s=None),
        writer_options=LogWriterOptions(rate_lines_per_s=rate, rate_burst_lines=10),
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
    app = FastAPI()
    install_error_handlers(app)
    app.state.auth_enabled = auth
    app.state.authenticator = FakeAuth()
    app.include_router(logs_router(web))
    app.include_router(loki_router(web))
    try:
        yield app, pipeline
    finally:
        pipeline.wal.close()
        db.close()
