"""Auth (401/403), the error map, body limits, health and the token admin API."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

from monitoringserver.errors import (
    BadDataError,
    CanceledError,
    ExecutionError,
    MonitoringError,
    NotFoundError,
    QueryTimeoutError,
    StorageError,
    UnavailableError,
)
from monitoringserver.web.app import ComponentHealth, HealthStatus
from monitoringserver.web.errors import status_for
from monitoringserver.web.options import LimitsOptions
from tests.web.conftest import Web, bearer, build

PROTECTED = [
    ("GET", "/api/v1/metrics", "monitoring:read"),
    ("GET", "/metrics", "monitoring:read"),
    ("POST", "/api/v1/metrics", "monitoring:write"),
    ("POST", "/metrics", "monitoring:write"),
    ("GET", "/api/v1/monitoring/metrics", "monitoring:read"),
    ("GET", "/api/v1/status/storage", "monitoring:read"),
    ("GET", "/api/v1/admin/tokens", "admin"),
    ("DELETE", "/api/v1/admin/tokens/x", "admin"),
    ("GET", "/api/openapi.json", "monitoring:read"),
]


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
@pytest.mark.parametrize("auth", ["none", "bad", "basic"])
async def test_401_without_valid_token(
    web: Web, method: str, path: str, scope: str, auth: str
) -> None:
    headers = {
        "none": {},
        "bad": bearer("mst_not-a-token"),
        "basic": {"Authorization": "Basic dXNlcjpwYXNz"},
    }[auth]
    r = await web.client.request(method, path, headers=headers, content=b"{}")
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    assert r.json()["errorType"] == "unauthorized"
    assert r.json()["error"].startswith("cannot authenticate request")


@pytest.mark.parametrize(("method", "path", "scope"), PROTECTED)
async def test_403_missing_scope_and_admin_implies_all(
    web: Web, method: str, path: str, scope: str
) -> None:
    wrong = web.write if scope == "monitoring:read" else web.read
    r = await web.client.request(method, path, headers=wrong, content=b"{}")
    assert r.status_code == 403
    assert r.json() == {
        "status": "error",
        "errorType": "forbidden",
        "error": f"cannot authorize request: scope {scope!r} is required",
    }
    r = await web.client.request(method, path, headers=web.admin, content=b"{}")
    assert r.status_code not in (401, 403)


async def test_revoked_token_stops_working_at_once(web: Web) -> None:
    info, secret = web.tokens.create("short-lived", ["monitoring:read"])
    assert (
        await web.client.get("/api/v1/status/storage", headers=bearer(secret))
    ).status_code == 200
    r = await web.client.delete(f"/api/v1/admin/tokens/{info.id}", headers=web.admin)
    assert r.status_code == 200
    assert r.json()["data"]["revoked_ms"] is not None
    assert (
        await web.client.get("/api/v1/status/storage", headers=bearer(secret))
    ).status_code == 401


async def test_token_admin_api_roundtrip(web: Web) -> None:
    r = await web.client.post(
        "/api/v1/admin/tokens",
        json={"name": "ci", "scopes": ["monitoring:write"]},
        headers=web.admin,
    )
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["token"].startswith("mst_")
    assert data["scopes"] == ["monitoring:write"]
    listed = (await web.client.get("/api/v1/admin/tokens", headers=web.admin)).json()["data"]
    assert "ci" in [t["name"] for t in listed]
    assert all("token" not in t for t in listed)
    r = await web.client.post(
        "/api/v1/admin/tokens",
        json={"name": "ci", "scopes": ["monitoring:write"]},
        headers=web.admin,
    )
    assert r.status_code == 400
    r = await web.client.post(
        "/api/v1/admin/tokens", json={"name": "x", "scopes": ["root"]}, headers=web.admin
    )
    assert r.status_code == 400
    assert "cannot accept scope 'root'" in r.json()["error"]
    r = await web.client.post("/api/v1/admin/tokens", json={"name": "x"}, headers=web.admin)
    assert r.status_code == 400
    assert r.json()["error"].startswith("cannot parse request: body.scopes")
    r = await web.client.delete("/api/v1/admin/tokens/nope", headers=web.admin)
    assert r.status_code == 404
    assert r.json()["errorType"] == "not_found"
    r = await web.client.delete("/api/v1/admin/tokens/ci", headers=web.admin)
    assert r.status_code == 200
    everything = await web.client.get(
        "/api/v1/admin/tokens?include_revoked=true", headers=web.admin
    )
    assert any(t["name"] == "ci" and t["revoked_ms"] for t in everything.json()["data"])


async def test_unknown_route_and_method_have_the_error_shape(web: Web) -> None:
    r = await web.client.get("/nope", headers=web.admin)
    assert r.status_code == 404
    assert r.json() == {
        "status": "error",
        "errorType": "not_found",
        "error": "cannot find route: no such endpoint",
    }
    r = await web.client.put("/api/v1/metrics", headers=web.admin)
    assert r.status_code == 405
    assert r.json()["status"] == "error"


async def test_body_limit_and_gzip_limit() -> None:
    async for web in build(LimitsOptions(max_body_bytes=1000, max_decompressed_bytes=2000)):
        r = await web.client.post("/api/v1/metrics", content=b"x" * 1001, headers=web.write)
        assert r.status_code == 413
        assert r.json()["errorType"] == "bad_data"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"y" * 100

        r = await web.client.post("/api/v1/metrics", content=chunks(), headers=web.write)
        assert r.status_code == 413
        bomb = gzip.compress(b" " * 100_000)
        assert len(bomb) < 1000
        r = await web.client.post(
            "/api/v1/metrics", content=bomb, headers={**web.write, "Content-Encoding": "gzip"}
        )
        assert r.status_code == 413
        assert "decompress" in r.json()["error"]
        r = await web.client.post(
            "/api/v1/metrics",
            content=b"not gzip",
            headers={**web.write, "Content-Encoding": "gzip"},
        )
        assert r.status_code == 400
        r = await web.client.post(
            "/api/v1/admin/tokens",
            content=b"x" * 1500,
            headers={**web.admin, "Content-Type": "application/json"},
        )
        assert r.status_code == 413


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (BadDataError("x"), 400),
        (NotFoundError("x"), 404),
        (UnavailableError("x"), 503),
        (QueryTimeoutError("x"), 503),
        (CanceledError("x"), 503),
        (ExecutionError("x"), 422),
        (StorageError("x"), 500),
        (MonitoringError("x"), 500),
    ],
)
def test_status_table(exc: MonitoringError, status: int) -> None:
    assert status_for(exc) == status


async def test_internal_errors_are_generic(web: Web) -> None:
    def boom() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    web.store.stats = boom  # type: ignore[method-assign,assignment]
    r = await web.client.get("/api/v1/status/storage", headers=web.read)
    assert r.status_code == 500
    assert r.json()["errorType"] == "internal"
    assert "secret" not in r.text

    def unavailable() -> None:
        raise UnavailableError("cannot read store: closing", retry_after_s=3)

    web.store.stats = unavailable  # type: ignore[method-assign,assignment]
    r = await web.client.get("/api/v1/status/storage", headers=web.read)
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "3"


async def test_health_endpoints_need_no_token(web: Web) -> None:
    assert (await web.client.get("/healthz")).json() == {"status": "ok"}
    assert (await web.client.get("/readyz")).status_code == 200
    r = await web.client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "healthy"


def _check(status: HealthStatus):  # type: ignore[no-untyped-def]
    async def check() -> ComponentHealth:
        return ComponentHealth(status, status.value)

    return check


async def _failing() -> ComponentHealth:
    raise RuntimeError("probe broke")


@pytest.mark.parametrize(
    ("statuses", "overall", "code"),
    [
        (["healthy", "healthy"], "healthy", 200),
        (["healthy", "degraded"], "degraded", 200),
        (["healthy", "unknown"], "degraded", 200),
        (["degraded", "unhealthy"], "unhealthy", 503),
    ],
)
async def test_health_aggregation(statuses: list[str], overall: str, code: int) -> None:
    checks = {f"c{i}": _check(HealthStatus(s)) for i, s in enumerate(statuses)}
    async for web in build(health_checks=checks):
        r = await web.client.get("/api/v1/health")
        assert r.status_code == code
        assert r.json()["status"] == overall
        assert [c["status"] for c in r.json()["components"].values()] == statuses


async def test_health_failing_probe_is_unknown_and_not_ready_is_503() -> None:
    async for web in build(health_checks={"broken": _failing}, ready=lambda: False):
        r = await web.client.get("/api/v1/health")
        assert r.status_code == 503
        assert r.json()["components"]["broken"]["status"] == "unknown"
        assert r.json()["components"]["server"]["status"] == "unhealthy"
        r = await web.client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "1"


async def test_auth_disabled_admits_anonymous() -> None:
    async for web in build(auth_enabled=False):
        r = await web.client.get("/api/v1/status/storage")
        assert r.status_code == 200
        assert r.json()["data"]["series"] == 0
