"""API tokens: created once, stored as SHA-256 only, checked from an in-memory map.

The table lives in the shared DuckDB file (:class:`~monitoringserver.storage.db.Database`).
A token is ``mst_`` followed by 43 URL-safe characters (256 random bits); only its
SHA-256 hex digest is stored, so a stolen database does not yield usable tokens.

Threading: every method is safe from any thread. :meth:`TokenStore.authenticate` never
touches the database: it hashes the credential and looks it up in a map loaded at
:meth:`open` and updated by :meth:`create` / :meth:`revoke` (so a revoked token stops
working at once). A secret that authenticated is remembered in memory (process memory
only, never written) so its later requests skip the hash; :meth:`revoke` forgets them
all. Last-used times are kept in memory and written by :meth:`flush_last_used`
(periodically from :meth:`run`, and at close).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import duckdb

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import BadDataError, NotFoundError
from monitoringserver.storage.db import Database

__all__ = ["TOKEN_PREFIX", "TokenInfo", "TokenStore", "hash_token", "parse_scopes"]

TOKEN_PREFIX = "mst_"  # noqa: S105 (a prefix, not a secret)
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS auth_tokens (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    token_sha256 VARCHAR NOT NULL,
    scopes VARCHAR NOT NULL,
    created_ms BIGINT NOT NULL,
    last_used_ms BIGINT,
    revoked_ms BIGINT
)
"""
_COLUMNS = "id, name, scopes, created_ms, last_used_ms, revoked_ms"
#: Secrets kept verified at most (one per active token in use; a bound all the same).
_MAX_VERIFIED = 10_000


def hash_token(secret: str) -> str:
    """The stored form of a token: lowercase SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def parse_scopes(values: Iterable[str]) -> frozenset[Scope]:
    """Scope names: ``monitoring:read``, ``monitoring:write``, ``admin`` (``read``/``write`` too).

    Raises ``BadDataError`` for an unknown name or an empty set.
    """
    out: set[Scope] = set()
    aliases = {"read": Scope.READ, "write": Scope.WRITE}
    for raw in values:
        for part in raw.replace(",", " ").split():
            try:
                out.add(aliases.get(part) or Scope(part))
            except ValueError:
                allowed = ", ".join(s.value for s in Scope)
                raise BadDataError(
                    f"cannot accept scope {part!r}: must be one of {allowed}"
                ) from None
    if not out:
        raise BadDataError("cannot create token: at least one scope is required")
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """A token's public record (never the secret). Times are ms since the epoch."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_ms: int
    last_used_ms: int | None
    revoked_ms: int | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_ms": self.created_ms,
            "last_used_ms": self.last_used_ms,
            "revoked_ms": self.revoked_ms,
        }


def _info(row: tuple[object, ...]) -> TokenInfo:
    tid, name, scopes, created, last_used, revoked = row
    return TokenInfo(
        id=str(tid),
        name=str(name),
        scopes=tuple(str(scopes).split()),
        created_ms=int(created),  # type: ignore[call-overload]
        last_used_ms=None if last_used is None else int(last_used),  # type: ignore[call-overload]
        revoked_ms=None if revoked is None else int(revoked),  # type: ignore[call-overload]
    )


class TokenStore:
    """Creates, lists, revokes and authenticates API tokens (implements ``Authenticator``)."""

    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._lock = threading.Lock()
        # Guarded by _lock: token hash -> (token id, principal) of every active token.
        self._active: dict[str, tuple[str, Principal]] = {}
        # Written under _lock, read without it: secret -> its entry in _active, for
        # secrets that authenticated (skips the SHA-256 of every later request). An
        # entry is only added while its token is active, and the map is dropped whole
        # under _lock by revoke() and open(), so a revoked secret never hits.
        self._verified: dict[str, tuple[str, Principal]] = {}
        # Token id -> last-used ms, not yet written; swapped out whole by flush_last_used.
        self._used: dict[str, int] = {}

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def open(self) -> None:
        """Create the table if needed and load the active tokens."""
        self._db.write(lambda con: con.execute(_SCHEMA).fetchall())
        rows = self._db.read(
            "SELECT id, name, scopes, token_sha256 FROM auth_tokens WHERE revoked_ms IS NULL"
        )
        active = {
            str(digest): (str(tid), _principal(str(name), str(scopes)))
            for tid, name, scopes, digest in rows
        }
        with self._lock:
            self._active = active
            self._verified = {}

    def count(self, *, include_revoked: bool = True) -> int:
        where = "" if include_revoked else " WHERE revoked_ms IS NULL"
        row = self._db.read(f"SELECT count(*) FROM auth_tokens{where}")  # noqa: S608
        return int(row[0][0])

    def create(self, name: str, scopes: Iterable[str]) -> tuple[TokenInfo, str]:
        """A new token; returns its record and the secret (shown once, never stored)."""
        if not _NAME_RE.fullmatch(name):
            raise BadDataError(
                f"cannot create token {name!r}: names are 1-64 characters of "
                "letters, digits, '_', '.', '@', '-' and start with a letter or digit"
            )
        scope_set = parse_scopes(scopes)
        scope_text = " ".join(sorted(s.value for s in scope_set))
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        digest = hash_token(secret)
        tid = secrets.token_hex(6)
        now = self._now_ms()

        def insert(con: duckdb.DuckDBPyConnection) -> None:
            taken = con.execute(
                "SELECT count(*) FROM auth_tokens WHERE name = ? AND revoked_ms IS NULL", [name]
            ).fetchall()
            if taken[0][0]:
                raise BadDataError(f"cannot create token {name!r}: an active token has that name")
            con.execute(
                "INSERT INTO auth_tokens VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                [tid, name, digest, scope_text, now],
            ).fetchall()

        self._db.write(insert)
        with self._lock:
            self._active[digest] = (tid, _principal(name, scope_text))
        return TokenInfo(tid, name, tuple(scope_text.split()), now, None, None), secret

    def list(self, *, include_revoked: bool = False) -> list[TokenInfo]:
        """Token records ordered by creation time; last-used times include unflushed uses."""
        where = "" if include_revoked else " WHERE revoked_ms IS NULL"
        rows = self._db.read(
            f"SELECT {_COLUMNS} FROM auth_tokens{where} ORDER BY created_ms, name"  # noqa: S608
        )
        pending = dict(self._used)
        out = []
        for row in rows:
            info = _info(row)
            used = pending.get(info.id)
            if used is not None and (info.last_used_ms is None or used > info.last_used_ms):
                info = TokenInfo(
                    info.id, info.name, info.scopes, info.created_ms, used, info.revoked_ms
                )
            out.append(info)
        return out

    def revoke(self, name_or_id: str) -> TokenInfo:
        """Revoke the active token with that name or id; ``NotFoundError`` when none."""
        now = self._now_ms()

        def update(con: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
            rows = con.execute(
                f"SELECT {_COLUMNS}, token_sha256 FROM auth_tokens "  # noqa: S608
                "WHERE revoked_ms IS NULL AND (name = ? OR id = ?)",
                [name_or_id, name_or_id],
            ).fetchall()
            if rows:
                con.execute(
                    "UPDATE auth_tokens SET revoked_ms = ? WHERE id = ?", [now, rows[0][0]]
                ).fetchall()
            return rows

        rows = self._db.write(update)
        if not rows:
            raise NotFoundError(
                f"cannot revoke token {name_or_id!r}: no active token has that name or id"
            )
        digest = str(rows[0][-1])
        with self._lock:
            self._active.pop(digest, None)
            self._verified = {}
        info = _info(rows[0][:-1])
        return TokenInfo(info.id, info.name, info.scopes, info.created_ms, info.last_used_ms, now)

    def authenticate(self, credential: str) -> Principal | None:
        """The principal of an active token, or ``None``. Cheap: a dict lookup for a secret
        that authenticated before, else one SHA-256 and a dict lookup."""
        entry = self._verified.get(credential)
        if entry is None:
            digest = hash_token(credential)
            with self._lock:
                entry = self._active.get(digest)
                if entry is None:
                    return None
                if len(self._verified) < _MAX_VERIFIED:
                    self._verified[credential] = entry
        self._used[entry[0]] = self._now_ms()
        return entry[1]

    def flush_last_used(self) -> int:
        """Write pending last-used times; returns how many tokens were updated."""
        pending, self._used = self._used, {}
        if not pending:
            return 0

        def update(con: duckdb.DuckDBPyConnection) -> None:
            con.executemany(
                "UPDATE auth_tokens SET last_used_ms = ? WHERE id = ?",
                [[ms, tid] for tid, ms in pending.items()],
            )

        self._db.write(update)
        return len(pending)

    async def run(self, interval_s: float = 60.0) -> None:
        """Flush last-used times every ``interval_s`` seconds until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await asyncio.to_thread(self.flush_last_used)
        finally:
            await asyncio.to_thread(self.flush_last_used)


def _principal(name: str, scopes: str) -> Principal:
    return Principal(name=name, scopes=frozenset(Scope(s) for s in scopes.split()), kind="token")
