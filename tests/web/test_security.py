"""``authenticate_request``: where the credential comes from (header first, then cookie)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from starlette.requests import Request

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import AuthError
from monitoringserver.web.security import ANONYMOUS, authenticate_request

GOOD = Principal(name="good", scopes=frozenset({Scope.READ}))
OTHER = Principal(name="other", scopes=frozenset({Scope.WRITE}))


class _Authenticator:
    def __init__(self) -> None:
        self.principals = {"good": GOOD, "other": OTHER}

    def authenticate(self, credential: str) -> Principal | None:
        return self.principals.get(credential)


def _request(headers: list[tuple[bytes, bytes]], *, enabled: bool = True) -> Request:
    state = SimpleNamespace(auth_enabled=enabled, authenticator=_Authenticator())
    app = SimpleNamespace(state=state)
    return Request({"type": "http", "headers": headers, "app": app})


@pytest.mark.parametrize(
    ("headers", "expect"),
    [
        ([(b"authorization", b"Bearer good")], "good"),
        ([(b"authorization", b"bearer   good  ")], "good"),
        ([(b"authorization", b"Bearer good"), (b"authorization", b"Bearer other")], "good"),
        ([(b"cookie", b"ms_session=other")], "other"),
        ([(b"cookie", b"ms_session=other"), (b"authorization", b"Bearer good")], "good"),
        ([(b"authorization", b"Basic good"), (b"cookie", b"ms_session=other")], None),
        ([(b"authorization", b"Bearer  ")], None),
        ([(b"authorization", b"Bearer nope")], None),
        ([], None),
    ],
    ids=["bearer", "case-space", "first-header", "cookie", "header-wins", "basic", "empty",
         "unknown", "none"],
)  # fmt: skip
def test_the_credential_is_the_first_bearer_header_else_the_session_cookie(
    headers: list[tuple[bytes, bytes]], expect: str | None
) -> None:
    request = _request(headers)
    if expect is None:
        with pytest.raises(AuthError, match="cannot authenticate request"):
            authenticate_request(request)
    else:
        assert authenticate_request(request).name == expect


def test_auth_disabled_is_anonymous() -> None:
    assert authenticate_request(_request([], enabled=False)) is ANONYMOUS
