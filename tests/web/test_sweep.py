"""A schemathesis-like sweep: junk at every foundation route never yields a 500 or a bad shape."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.web.conftest import Web, build

ROUTES = [
    ("GET", "/api/v1/metrics"),
    ("POST", "/api/v1/metrics"),
    ("GET", "/metrics"),
    ("POST", "/metrics"),
    ("GET", "/api/v1/monitoring/metrics"),
    ("GET", "/api/v1/status/storage"),
    ("GET", "/api/v1/admin/tokens"),
    ("POST", "/api/v1/admin/tokens"),
    ("DELETE", "/api/v1/admin/tokens/{x}"),
    ("GET", "/api/v1/health"),
    ("GET", "/readyz"),
]
PARAM_NAMES = ["server_id", "metric_type", "start_time", "end_time", "step", "resolution",
               "lookback", "include_revoked", "x"]  # fmt: skip

junk_text = st.text(max_size=12)
segment = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    min_size=1,
    max_size=12,
)
params = st.dictionaries(st.sampled_from(PARAM_NAMES), junk_text, max_size=4)
bodies = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | junk_text,
        lambda c: st.lists(c, max_size=3) | st.dictionaries(junk_text, c, max_size=3),
        max_leaves=8,
    ).map(lambda v: __import__("json").dumps(v).encode()),
)


@pytest.fixture
async def web() -> AsyncIterator[Web]:
    async for w in build():
        yield w


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_swept_route_exists(web: Web, method: str, path: str) -> None:
    r = await web.client.request(method, path.replace("{x}", "x"), headers=web.admin)
    assert r.status_code != 405
    assert "cannot find route" not in r.text


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from(ROUTES), query=params, body=bodies, seg=segment)
async def test_junk_never_breaks_a_route(
    web: Web, route: tuple[str, str], query: dict[str, str], body: bytes, seg: str
) -> None:
    method, path = route
    path = path.replace("{x}", seg)
    r = await web.client.request(method, path, params=query, content=body, headers=web.admin)
    assert r.status_code < 500, (method, path, query, body, r.text)
    if r.status_code >= 400:
        doc = r.json()
        assert doc["status"] == "error"
        assert doc["error"].startswith("cannot ")
