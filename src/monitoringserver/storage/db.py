"""One DuckDB database file, one writer thread, per-thread read cursors.

DuckDB allows one writing process per file; inside the process we also funnel every
write through a single thread so transactions never conflict and the event loop never
blocks on disk. Reads open a cursor (a lightweight connection to the same database)
on the calling thread.

DuckDB 2.0 refuses further work on a connection whose last result was not fully
read, so every helper here fetches results completely before returning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from monitoringserver.errors import StorageError

__all__ = ["Database"]

T = TypeVar("T")


class Database:
    """Owns the DuckDB connection for one data directory.

    ``write`` runs a function on the writer thread inside a transaction (committed when
    it returns, rolled back when it raises). ``read`` runs a function with a fresh cursor
    on the calling thread. Both are safe from any thread.
    """

    def __init__(self, path: Path | str, *, memory_limit: str = "512MB", threads: int = 2) -> None:
        self.path = Path(path) if str(path) != ":memory:" else None
        try:
            self._con = duckdb.connect(
                str(path),
                config={
                    "memory_limit": memory_limit,
                    "threads": threads,
                    "preserve_insertion_order": False,
                },
            )
        except duckdb.Error as exc:
            raise StorageError(f"cannot open database {path}: {exc}") from exc
        self._writer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="duckdb-writer"
        )
        self._local = threading.local()
        self._closed = False
        self._commits = 0  # written by the writer thread only

    def _run_write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        con = self._con
        con.execute("BEGIN TRANSACTION")
        try:
            result = fn(con)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")
        self._commits += 1
        return result

    @property
    def commits(self) -> int:
        """Write transactions committed so far. Once a reader sees ``n`` here, every
        commit up to the ``n``-th is visible to its next query (readers key caches of
        table contents on it)."""
        return self._commits

    def submit_write(
        self, fn: Callable[[duckdb.DuckDBPyConnection], T]
    ) -> concurrent.futures.Future[T]:
        if self._closed:
            raise StorageError("cannot write to database: it is closed")
        return self._writer.submit(self._run_write, fn)

    def write(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn`` in a transaction on the writer thread and wait for it."""
        return self.submit_write(fn).result()

    async def awrite(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        return await asyncio.wrap_future(self.submit_write(fn))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor owned by the calling thread (created once per thread)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            if self._closed:
                raise StorageError("cannot read from database: it is closed")
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def read(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a query on this thread's cursor and fetch every row."""
        return self.cursor().execute(sql, params or []).fetchall()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self._con.close()
