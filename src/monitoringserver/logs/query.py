"""Log search over the head table and the archives, inside DuckDB.

Archives are pruned before any file is opened: by time range, by host (manifest
``hosts`` against ``server_id`` matchers), by attrs keys, and for substring needles
by the per-archive token index (bloom filter or key set). Conditions become one SQL ``WHERE`` over
``log_head UNION ALL read_parquet([...])``; no Python runs per line.

Paging: results are ordered by ``ts`` (desc for ``backward``) then by host, source,
logger and message. The cursor holds the last ``ts`` returned and how many lines
with that ``ts`` were returned, so the next page resumes exactly after them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import duckdb
import msgspec
import numpy as np

from monitoringserver.errors import BadDataError, StorageError
from monitoringserver.logs.api import (
    COLUMN_LABELS,
    ArchiveFilter,
    ArchiveInfo,
    LineOp,
    LogPage,
    LogQuery,
    LogStoreStats,
    SeriesCounts,
)
from monitoringserver.logs.archive import NO_PREFILTER, PREFILTER_COLUMNS, files_source
from monitoringserver.logs.patterns import needle_id_tokens, needle_tokens
from monitoringserver.logs.query_sql import (
    Sql,
    conditions,
    decode_cursor,
    encode_cursor,
    label_expr,
)
from monitoringserver.logs.store import ArchiveEntry, LogStore
from monitoringserver.logs.tokenkeys import key_hashes, uuid_group_tokens
from monitoringserver.model.logs import LogBatch

__all__ = ["LogQueryEngine", "WriterCounters"]

#: (wal_bytes, rejected, repaired) from the writer, for stats.
WriterCounters = Callable[[], tuple[int, dict[str, int], dict[str, int]]]

_SELECT = "ts, server_id, level, logger, source, message, attrs"
_MAX_LIMIT = 10_000

_RETRIES = 4


class LogQueryEngine:
    """Implements :class:`~monitoringserver.logs.api.LogQuerier` over a :class:`LogStore`.

    Thread-safe; each call uses the calling thread's DuckDB cursor."""

    def __init__(self, store: LogStore, *, counters: WriterCounters | None = None) -> None:
        self._store = store
        self._counters = counters
        self.last_pruning: tuple[int, int] = (0, 0)

    # -- helpers ---------------------------------------------------------------------

    def _hashes(self, tokens: list[str], numpy_keys: bool) -> np.ndarray[Any, np.dtype[np.uint64]]:
        if not tokens:
            return np.empty(0, dtype=np.uint64)
        if numpy_keys:
            return key_hashes(tokens)
        rows = self._store.db.read("SELECT hash(t) FROM unnest(?::VARCHAR[]) AS u(t)", [tokens])
        return np.array([r[0] for r in rows], dtype=np.uint64)

    def _candidates(self, q: LogQuery) -> tuple[list[ArchiveEntry], int]:
        needles = any(f.op is LineOp.CONTAINS for f in q.filters)
        entries = self._store.entries(ArchiveFilter(q.start_ms, q.end_ms), blooms=needles)
        singles: list[str] = []
        pairs: list[str] = []
        ids: list[str] = []
        for f in q.filters:
            if f.op is LineOp.CONTAINS:
                one, two = needle_tokens(f.value)
                # Possible UUID groups are not probed: newer indexes leave them out
                # (the UUID's own key prunes instead); skipping a key is always safe.
                groups = uuid_group_tokens(f.value)
                singles += [t for t in one if t not in groups]
                pairs += two
                ids += needle_id_tokens(f.value)
        # Keys to probe per kind of filter: (pairs indexed, ids indexed, numpy keys).
        key_sets: dict[tuple[bool, bool, bool], np.ndarray[Any, np.dtype[np.uint64]]] = {}
        keep: list[ArchiveEntry] = []
        for e in entries:
            if not self._store.host_may_match(e, q.matchers):
                continue
            if not q.parsers and any(
                m.name not in COLUMN_LABELS and m.name not in e.attr_keys and not m.matches_empty()
                for m in q.matchers
            ):
                continue
            kind = (
                e.pairs_indexed and bool(pairs),
                e.ids_indexed and bool(ids),
                e.numpy_keys,
            )
            keys = key_sets.get(kind)
            if keys is None:
                tokens = singles + (pairs if kind[0] else []) + (ids if kind[1] else [])
                keys = key_sets[kind] = self._hashes(tokens, e.numpy_keys)
            if len(keys) and e.bloom is not None and not e.bloom.might_contain_all(keys):
                continue
            keep.append(e)
        total = self._store.archive_count()
        return keep, total - len(keep)

    def _source(self, entries: Sequence[ArchiveEntry]) -> str:
        """The head and the archives as one relation: ``_SELECT`` plus the
        ``PREFILTER_COLUMNS`` the needle conditions use."""
        head = f"SELECT {_SELECT}, {NO_PREFILTER} FROM log_head"  # noqa: S608
        if not entries:
            return f"({head})"
        files = files_source([(e.path, e.layout) for e in entries], prefilter=True)
        more = ", ".join(PREFILTER_COLUMNS)
        return f"({head} UNION ALL SELECT {_SELECT}, {more} FROM {files})"  # noqa: S608

    def _execute(self, text: str, params: list[Any]) -> list[tuple[Any, ...]] | None:
        """Rows of one statement; None when an archive went away under it."""
        try:
            return self._store.db.cursor().execute(text, params).fetchall()
        except duckdb.IOException:
            return None
        except (duckdb.InvalidInputException, duckdb.BinderException) as exc:
            raise BadDataError(f"cannot run log query: {exc}") from exc
        except duckdb.Error as exc:
            raise StorageError(f"cannot run log query: {exc}") from exc

    def _narrowed(self, q: LogQuery, n: int, backward: bool) -> LogQuery | None:
        """``q`` with its time range cut at the ``n``-th matching line in ``direction``
        order (every one of the first ``n`` lines has a ``ts`` at least that far), so
        the full query opens fewer archives. Reads only ``ts`` and the columns of the
        conditions, never rebuilds a message: only for queries without line filters or
        parsers, and only when more than one archive is a candidate. None when an
        archive went away."""
        entries, _ = self._candidates(q)
        if len(entries) < 2:
            return q  # nothing to leave out: the full query alone is cheaper
        sql = Sql()
        conditions(q, sql)
        text = (
            f"SELECT ts FROM {self._source(entries)} WHERE {sql.where()} "  # noqa: S608
            f"ORDER BY ts {'DESC' if backward else 'ASC'} LIMIT 1 OFFSET ?"
        )
        rows = self._execute(text, [*sql.params, n - 1])
        if rows is None:
            return None
        if not rows:
            return q
        t = int(rows[0][0])
        if backward:
            return dataclasses.replace(q, start_ms=t if q.start_ms is None else max(q.start_ms, t))
        return dataclasses.replace(q, end_ms=t if q.end_ms is None else min(q.end_ms, t))

    def _run(
        self,
        q: LogQuery,
        build: Callable[[str, Sql], tuple[str, list[Any]]],
        *,
        first: tuple[int, bool] | None = None,
    ) -> tuple[list[tuple[Any, ...]], int, int]:
        """Run a query over a consistent head + archive set; retries when it changed.
        ``first``: (n, backward) when only the first ``n`` lines in that order are
        wanted (see :meth:`_narrowed`)."""
        for _ in range(_RETRIES):
            token = self._store.generation()
            eff: LogQuery | None = q
            if first is not None:
                eff = self._narrowed(q, *first)
            rows = None
            if eff is not None:
                entries, pruned = self._candidates(eff)
                sql = Sql()
                conditions(eff, sql)
                text, params = build(self._source(entries), sql)
                rows = self._execute(text, params)
            if rows is not None and token is not None and token == self._store.generation():
                self.last_pruning = (len(entries), pruned)
                return rows, len(entries), pruned
            time.sleep(0.005)
        raise StorageError("cannot run log query: archives kept changing, try again")

    # -- LogQuerier -------------------------------------------------------------------

    def query(self, query: LogQuery) -> LogPage:
        limit = max(1, min(query.limit, _MAX_LIMIT))
        backward = query.direction != "forward"
        if query.direction not in ("forward", "backward"):
            raise BadDataError(f"cannot query logs: direction {query.direction!r} is unknown")
        skip = 0
        cursor_ts: int | None = None
        if query.cursor:
            cursor_ts, skip = decode_cursor(query.cursor)
            # Resuming at the cursor is a bound on the time range.
            if backward:
                end = cursor_ts if query.end_ms is None else min(query.end_ms, cursor_ts)
                query = dataclasses.replace(query, end_ms=end)
            else:
                start = cursor_ts if query.start_ms is None else max(query.start_ms, cursor_ts)
                query = dataclasses.replace(query, start_ms=start)
        order = "ts DESC" if backward else "ts ASC"

        def build(src: str, sql: Sql) -> tuple[str, list[Any]]:
            text = (
                f"SELECT {_SELECT} FROM {src} WHERE {sql.where()} "  # noqa: S608
                f"ORDER BY {order}, server_id, source, logger, message LIMIT ?"
            )
            return text, [*sql.params, limit + skip]

        # Without message conditions the time bound is found on a few small columns;
        # then only the archives (and row groups) holding the page are rebuilt.
        cheap = not query.filters and not query.parsers
        first = (limit + skip, backward) if cheap else None
        rows, scanned, pruned = self._run(query, build, first=first)
        rows = rows[skip:]
        next_cursor = None
        if len(rows) == limit:
            last = rows[-1][0]
            same = sum(1 for r in rows if r[0] == last)
            next_cursor = encode_cursor(last, same + (skip if last == cursor_ts else 0))
        dec = msgspec.json.Decoder(dict[str, str])
        batch = LogBatch(
            ts_ms=np.array([r[0] for r in rows], dtype=np.int64),
            server_id=[r[1] for r in rows],
            level=[r[2] for r in rows],
            logger=[r[3] for r in rows],
            source=[r[4] for r in rows],
            message=[r[5] for r in rows],
            attrs=[dec.decode(r[6]) if r[6] else {} for r in rows],
        )
        return LogPage(batch, next_cursor, scanned, pruned)

    def count_series(
        self, query: LogQuery, step_ms: int, by: Sequence[str] | None
    ) -> list[SeriesCounts]:
        if step_ms <= 0 or query.start_ms is None or query.end_ms is None:
            raise BadDataError("cannot count log lines: need start, end and a positive step")
        names = list(COLUMN_LABELS if by is None else by)
        exprs = [label_expr(n, query.parsers) for n in names]
        start = query.start_ms

        def build(src: str, sql: Sql) -> tuple[str, list[Any]]:
            cols = "".join(f", {e} AS g{i}" for i, e in enumerate(exprs))
            grp = "".join(f", g{i}" for i in range(len(exprs)))
            text = (
                f"SELECT (ts - ?) // ? AS b{cols}, count(*), "  # noqa: S608
                f"sum(strlen(message)) FROM {src} WHERE {sql.where()} "
                f"GROUP BY b{grp} ORDER BY {grp.lstrip(', ') or 'b'}, b"
            )
            return text, [start, step_ms, *sql.params]

        rows, _, _ = self._run(query, build)
        groups: dict[tuple[str, ...], SeriesCounts] = {}
        for r in rows:
            key = tuple(r[1 : 1 + len(names)])
            sc = groups.get(key)
            if sc is None:
                labels = {n: v for n, v in zip(names, key, strict=True) if v}
                sc = groups[key] = SeriesCounts(labels, [], [], [])
            sc.ts_ms.append(start + int(r[0]) * step_ms)
            sc.lines.append(int(r[-2]))
            sc.bytes.append(int(r[-1]))
        return list(groups.values())

    def label_names(self, start_ms: int | None, end_ms: int | None) -> list[str]:
        q = LogQuery(start_ms=start_ms, end_ms=end_ms)
        names: set[str] = set()
        for e in self._store.entries(ArchiveFilter(start_ms, end_ms)):
            names.update(e.attr_keys)

        def build(src: str, sql: Sql) -> tuple[str, list[Any]]:
            cols = ", ".join(f"bool_or({c} <> '')" for c in COLUMN_LABELS)
            return f"SELECT {cols} FROM {src} WHERE {sql.where()}", sql.params  # noqa: S608

        rows, _, _ = self._run(q, build)
        names.update(c for c, present in zip(COLUMN_LABELS, rows[0], strict=True) if present)
        head = self._store.db.read(
            "SELECT DISTINCT unnest(json_keys(attrs)) FROM log_head WHERE attrs <> ''"
            " AND ts BETWEEN ? AND ?",
            [
                start_ms if start_ms is not None else -(2**62),
                end_ms if end_ms is not None else 2**62,
            ],
        )
        names.update(r[0] for r in head)
        return sorted(names)

    def label_values(self, name: str, start_ms: int | None, end_ms: int | None) -> list[str]:
        expr = label_expr(name, ())
        q = LogQuery(start_ms=start_ms, end_ms=end_ms)

        def build(src: str, sql: Sql) -> tuple[str, list[Any]]:
            return (
                f"SELECT DISTINCT {expr} AS v FROM {src} WHERE {sql.where()} AND v <> '' "  # noqa: S608
                "ORDER BY v LIMIT 10000",
                sql.params,
            )

        rows, _, _ = self._run(q, build)
        return [r[0] for r in rows]

    def series(self, query: LogQuery) -> list[dict[str, str]]:
        def build(src: str, sql: Sql) -> tuple[str, list[Any]]:
            cols = ", ".join(COLUMN_LABELS)
            return (
                f"SELECT DISTINCT {cols} FROM {src} WHERE {sql.where()} LIMIT 10000",  # noqa: S608
                sql.params,
            )

        rows, _, _ = self._run(query, build)
        out = [{n: v for n, v in zip(COLUMN_LABELS, r, strict=True) if v} for r in rows]
        out.sort(key=lambda d: sorted(d.items()))
        return out

    def archives(self, flt: ArchiveFilter | None = None) -> list[ArchiveInfo]:
        return self._store.archives(flt)

    def stats(self) -> LogStoreStats:
        archives = self._store.archives()
        head = self._store.db.read("SELECT count(*), min(ts), max(ts) FROM log_head")[0]
        wal, rejected, repaired = self._counters() if self._counters else (0, {}, {})
        lows = [a.min_ts_ms for a in archives] + ([int(head[1])] if head[1] is not None else [])
        highs = [a.max_ts_ms for a in archives] + ([int(head[2])] if head[2] is not None else [])
        return LogStoreStats(
            head_lines=int(head[0]),
            archives=len(archives),
            archived_lines=sum(a.lines for a in archives),
            raw_bytes=sum(a.raw_bytes for a in archives),
            stored_bytes=sum(a.stored_bytes for a in archives),
            wal_bytes=wal,
            oldest_ms=min(lows) if lows else None,
            newest_ms=max(highs) if highs else None,
            rejected=rejected,
            repaired=repaired,
            index_bytes=sum(a.index_bytes for a in archives),
        )
