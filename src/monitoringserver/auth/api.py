"""Who is calling, and what they may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Authenticator", "Principal", "Scope"]


class Scope(enum.StrEnum):
    READ = "monitoring:read"
    WRITE = "monitoring:write"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller. ``admin`` implies every other scope."""

    name: str
    scopes: frozenset[Scope]
    kind: str = "token"  # "token", "session" or "anonymous" (auth disabled)

    def has(self, scope: Scope) -> bool:
        return Scope.ADMIN in self.scopes or scope in self.scopes


class Authenticator(Protocol):
    def authenticate(self, credential: str) -> Principal | None:
        """The principal for a bearer token or session value, or ``None`` if invalid.

        Called on the event loop for every request: it must be cheap and never block.
        """
        ...
