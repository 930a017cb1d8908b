"""A foundation app over the in-memory FakeStore and a real in-memory token table."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import pytest
from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from monitoringserver.auth.tokens import TokenStore
from monitoringserver.storage.db import Database
from monitoringserver.web.app import WebComponents, create_app
from monitoringserver.web.options import LimitsOptions
from tests.fakes import FakeStore

NOW_S = 1_750_000_000.0


@dataclass
class Web:
    client: httpx.AsyncClient
    store: FakeStore
    tokens: TokenStore
    components: WebComponents
    admin: dict[str, str]
    read: dict[str, str]
    write: dict[str, str]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def build(
    limits: LimitsOptions | None = None, routers: Sequence[APIRouter] = (), **kw: object
) -> AsyncIterator[Web]:
    db = Database(":memory:")
    tokens = TokenStore(db, clock=lambda: NOW_S)
    tokens.open()
    store = FakeStore()
    comps = WebComponents(
        appender=store,
        querier=store,
        tokens=tokens,
        registry=CollectorRegistry(),
        limits=limits or LimitsOptions(),
        clock=lambda: NOW_S,
        **kw,  # type: ignore[arg-type]
    )
    app = create_app(comps, routers)
    secrets = {
        scope: tokens.create(f"t-{scope.replace(':', '-')}", [scope])[1]
        for scope in ("admin", "monitoring:read", "monitoring:write")
    }
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield Web(
            client=client,
            store=store,
            tokens=tokens,
            components=comps,
            admin=bearer(secrets["admin"]),
            read=bearer(secrets["monitoring:read"]),
            write=bearer(secrets["monitoring:write"]),
        )
    db.close()


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    async for w in build():
        yield w
