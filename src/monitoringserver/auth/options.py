"""Options of authentication (the ``[auth]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from monitoringserver.errors import ConfigError

__all__ = ["AuthOptions"]


@dataclass(frozen=True, slots=True)
class AuthOptions:
    #: Require ``Authorization: Bearer <token>`` on every endpoint except health and static
    #: files. ``false`` makes every caller an anonymous admin: local experiments only.
    enabled: bool = True
    #: Create an admin token, print it once and write ``<data-dir>/admin.token`` (0600)
    #: when the data directory has no token yet.
    bootstrap_admin_token: bool = True
    #: How often last-used times of tokens are written to the database, in seconds.
    last_used_flush_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if self.last_used_flush_interval_s <= 0:
            raise ConfigError(
                "cannot accept auth option last_used_flush_interval_s="
                f"{self.last_used_flush_interval_s!r}: must be positive"
            )
