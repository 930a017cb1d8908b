"""The audit log: who did what to which node, and what came of it.

One DuckDB table (``audit_log``); each remote command is one row, written when it is
sent and completed with its outcome. Methods are coroutines running the SQL on the
database's writer thread or, for reads, in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import duckdb

from monitoringserver.storage.db import Database

__all__ = ["AuditEntry", "AuditLog"]

_SCHEMA = (
    "CREATE SEQUENCE IF NOT EXISTS audit_log_seq",
    """CREATE TABLE IF NOT EXISTS audit_log (
        id BIGINT PRIMARY KEY DEFAULT nextval('audit_log_seq'),
        ts_ms BIGINT NOT NULL,
        actor VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        details VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        result VARCHAR NOT NULL,
        finished_ms BIGINT
    )""",
)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row. ``status``: ``pending``, ``ok``, ``failed`` or ``done`` (no result)."""

    id: int
    ts_ms: int
    actor: str
    action: str
    target: str
    details: dict[str, Any]
    status: str
    result: dict[str, Any]
    finished_ms: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts_ms": self.ts_ms,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "details": self.details,
            "status": self.status,
            "result": self.result,
            "finished_ms": self.finished_ms,
        }


class AuditLog:
    """Append-only record of administrative actions, persisted in ``db``."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        db.write(_create)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def record(
        self,
        *,
        actor: str,
        action: str,
        target: str,
        details: Mapping[str, Any] | None = None,
        status: str = "done",
        result: Mapping[str, Any] | None = None,
    ) -> int:
        """Insert one entry and return its id."""
        row = [
            self._now_ms(),
            actor,
            action,
            target,
            json.dumps(dict(details or {}), sort_keys=True),
            status,
            json.dumps(dict(result or {}), sort_keys=True),
            None if status == "pending" else self._now_ms(),
        ]

        def insert(con: duckdb.DuckDBPyConnection) -> int:
            got = con.execute(
                "INSERT INTO audit_log (ts_ms, actor, action, target, details, status, result,"
                " finished_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                row,
            ).fetchall()
            return int(got[0][0])

        return await self._db.awrite(insert)

    async def finish(self, entry_id: int, *, status: str, result: Mapping[str, Any]) -> None:
        """Complete a ``pending`` entry with its outcome."""
        params = [status, json.dumps(dict(result), sort_keys=True), self._now_ms(), entry_id]

        def update(con: duckdb.DuckDBPyConnection) -> None:
            con.execute(
                "UPDATE audit_log SET status = ?, result = ?, finished_ms = ? WHERE id = ?",
                params,
            ).fetchall()

        await self._db.awrite(update)

    async def entries(
        self, *, limit: int = 100, target: str | None = None, since_ms: int | None = None
    ) -> list[AuditEntry]:
        """Newest first, at most ``limit`` entries."""
        sql = "SELECT id, ts_ms, actor, action, target, details, status, result, finished_ms"
        sql += " FROM audit_log WHERE 1 = 1"
        params: list[Any] = []
        if target is not None:
            sql += " AND target = ?"
            params.append(target)
        if since_ms is not None:
            sql += " AND ts_ms >= ?"
            params.append(since_ms)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, int(limit)))
        rows = await asyncio.to_thread(self._db.read, sql, params)
        return [
            AuditEntry(
                id=int(r[0]),
                ts_ms=int(r[1]),
                actor=str(r[2]),
                action=str(r[3]),
                target=str(r[4]),
                details=json.loads(r[5]),
                status=str(r[6]),
                result=json.loads(r[7]),
                finished_ms=None if r[8] is None else int(r[8]),
            )
            for r in rows
        ]


def _create(con: duckdb.DuckDBPyConnection) -> None:
    for stmt in _SCHEMA:
        con.execute(stmt)
