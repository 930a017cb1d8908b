"""TokenStore: SHA-256 only at rest, scopes, revoke, last-used, persistence."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from monitoringserver.auth.api import Scope
from monitoringserver.auth.tokens import TokenStore, hash_token, parse_scopes
from monitoringserver.errors import BadDataError, NotFoundError
from monitoringserver.storage.db import Database


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_secret_is_never_stored_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.duckdb"
    db = Database(path)
    store = TokenStore(db)
    store.open()
    info, secret = store.create("ops", ["monitoring:read", "monitoring:write"])
    assert info.scopes == ("monitoring:read", "monitoring:write")
    rows = db.read("SELECT * FROM auth_tokens")
    assert secret not in repr(rows)
    assert hash_token(secret) in repr(rows)
    db.close()
    db = Database(path)
    store = TokenStore(db)
    store.open()
    principal = store.authenticate(secret)
    assert principal is not None
    assert principal.name == "ops"
    assert principal.has(Scope.WRITE)
    assert not principal.has(Scope.ADMIN)
    assert store.authenticate(secret + "x") is None
    db.close()


def test_revoke_by_name_or_id_and_unknown() -> None:
    db = Database(":memory:")
    store = TokenStore(db)
    store.open()
    _, sa = store.create("a", ["admin"])
    b, sb = store.create("b", ["read"])
    assert store.revoke("a").revoked_ms is not None
    assert store.revoke(b.id).name == "b"
    assert store.authenticate(sa) is None
    assert store.authenticate(sb) is None
    with pytest.raises(NotFoundError):
        store.revoke("a")
    assert store.list() == []
    assert {t.name for t in store.list(include_revoked=True)} == {"a", "b"}
    # a revoked name can be reused
    store.create("a", ["admin"])
    assert store.count() == 3
    assert store.count(include_revoked=False) == 1
    db.close()


@pytest.mark.parametrize(
    ("name", "scopes", "fragment"),
    [
        ("", ["admin"], "names are"),
        ("has space", ["admin"], "names are"),
        ("x" * 65, ["admin"], "names are"),
        ("ok", [], "at least one scope"),
        ("ok", ["superuser"], "cannot accept scope 'superuser'"),
    ],
)
def test_create_validation(name: str, scopes: list[str], fragment: str) -> None:
    db = Database(":memory:")
    store = TokenStore(db)
    store.open()
    with pytest.raises(BadDataError, match=fragment):
        store.create(name, scopes)
    db.close()


def test_parse_scopes_aliases_and_commas() -> None:
    assert parse_scopes(["read,write"]) == frozenset({Scope.READ, Scope.WRITE})
    assert parse_scopes(["admin"]) == frozenset({Scope.ADMIN})


async def test_last_used_is_tracked_and_flushed() -> None:
    db = Database(":memory:")
    clock = Clock()
    store = TokenStore(db, clock=clock)
    store.open()
    _, secret = store.create("u", ["read"])
    assert store.list()[0].last_used_ms is None
    clock.now = 2000.0
    assert store.authenticate(secret) is not None
    assert store.list()[0].last_used_ms == 2_000_000  # visible before the flush
    task = asyncio.create_task(store.run(interval_s=0.01))
    deadline = asyncio.get_running_loop().time() + 5
    while not db.read("SELECT last_used_ms FROM auth_tokens")[0][0]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert db.read("SELECT last_used_ms FROM auth_tokens")[0][0] == 2_000_000
    assert store.flush_last_used() == 0
    db.close()


def test_a_secret_that_authenticated_stops_working_once_revoked() -> None:
    """Secrets are remembered after their first success; revoke forgets them at once,
    and a revoked secret's name can carry a new token that works."""
    db = Database(":memory:")
    store = TokenStore(db)
    store.open()
    _, old = store.create("ci", ["write"])
    _, other = store.create("ops", ["read"])
    for _ in range(3):
        principal = store.authenticate(old)
        assert principal is not None
        assert principal.name == "ci"
    assert store.authenticate(other) is not None
    store.revoke("ci")
    assert store.authenticate(old) is None
    assert store.authenticate(old) is None
    ops = store.authenticate(other)
    assert ops is not None
    assert ops.name == "ops"
    _, new = store.create("ci", ["read"])
    renewed = store.authenticate(new)
    assert renewed is not None
    assert renewed.has(Scope.READ)
    assert not renewed.has(Scope.WRITE)
    db.close()


def test_reopening_forgets_remembered_secrets(tmp_path: Path) -> None:
    """``open`` reloads the active tokens: a token revoked in the file meanwhile (by
    another store on the same database) is refused even if it authenticated before."""
    db = Database(tmp_path / "t.duckdb")
    store = TokenStore(db)
    store.open()
    _, secret = store.create("x", ["read"])
    assert store.authenticate(secret) is not None
    writer = TokenStore(db)
    writer.open()
    writer.revoke("x")
    store.open()
    assert store.authenticate(secret) is None
    db.close()


def test_wrong_secrets_are_refused_every_time() -> None:
    db = Database(":memory:")
    store = TokenStore(db)
    store.open()
    _, secret = store.create("x", ["read"])
    for wrong in ["", secret[:-1], secret + "x", secret.upper(), "mst_nope"]:
        assert store.authenticate(wrong) is None
        assert store.authenticate(wrong) is None
    assert store.authenticate(secret) is not None
    db.close()
