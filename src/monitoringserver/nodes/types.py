"""Value types of the node registry and remote control (no I/O)."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from monitoringserver.errors import BadDataError, ConfigError

__all__ = [
    "COMMAND_KINDS",
    "SERVICE_ACTIONS",
    "Command",
    "CommandOutcome",
    "NodeInfo",
    "NodeStatus",
    "NodeView",
    "NodesOptions",
    "validate_command",
]

SERVICE_ACTIONS: frozenset[str] = frozenset({"start", "stop", "restart"})
COMMAND_KINDS: frozenset[str] = frozenset({"service", "report_now", "set_interval", "get_stats"})

#: systemd unit names and plain service names; no shell metacharacters, no paths.
_SERVICE_NAME_RE = re.compile(r"[A-Za-z0-9@._:-]{1,200}")
#: Remote ``set_interval`` bounds in seconds (seed 003); finer fixed intervals are local config.
MIN_REMOTE_INTERVAL_S = 30.0
MAX_REMOTE_INTERVAL_S = 300.0


@dataclass(frozen=True, slots=True)
class NodesOptions:
    """The ``[nodes]`` section: ``stale_after_s`` without data before a node is stale
    (it leaves the live view, its history stays); ``flush_interval_s`` between writes of
    last-seen times to the database."""

    stale_after_s: float = 600.0
    flush_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.stale_after_s <= 0 or self.flush_interval_s <= 0:
            raise ConfigError("cannot accept nodes options: durations must be positive")


class NodeStatus(enum.StrEnum):
    """``online``: data within ``stale_after``; ``offline``: its Control stream closed;
    ``stale``: no data for ``stale_after`` (left out of the live view, history kept)."""

    ONLINE = "online"
    OFFLINE = "offline"
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What an agent says about its host when it registers. Sizes in bytes."""

    hostname: str = ""
    os: str = ""
    os_version: str = ""
    kernel: str = ""
    arch: str = ""
    cpu_count: int = 0
    memory_bytes: int = 0
    agent_version: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    boot_time_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "os": self.os,
            "os_version": self.os_version,
            "kernel": self.kernel,
            "arch": self.arch,
            "cpu_count": self.cpu_count,
            "memory_bytes": self.memory_bytes,
            "agent_version": self.agent_version,
            "labels": dict(self.labels),
            "boot_time_s": self.boot_time_s,
        }


@dataclass(frozen=True, slots=True)
class NodeView:
    """A snapshot of one registered node. Times in ms since the Unix epoch."""

    node_id: str
    info: NodeInfo
    status: NodeStatus
    registered_ms: int
    last_seen_ms: int
    connected: bool
    stats: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "status": self.status.value,
            "connected": self.connected,
            "registered_ms": self.registered_ms,
            "last_seen_ms": self.last_seen_ms,
            **self.info.to_json(),
            "stats": dict(self.stats),
        }


@dataclass(frozen=True, slots=True)
class Command:
    """One remote command for an agent. ``timeout_s``: how long the caller waits."""

    command_id: str
    kind: str
    args: Mapping[str, str]
    timeout_s: float


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """The agent's answer. ``output`` is the tail of the command output (or JSON)."""

    command_id: str
    node_id: str
    ok: bool
    exit_status: int = 0
    output: str = ""
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "command_id": self.command_id,
            "node_id": self.node_id,
            "success": self.ok,
            "exit_status": self.exit_status,
            "output": self.output,
            "error": self.error or None,
        }


def validate_command(kind: str, args: Mapping[str, str]) -> dict[str, str]:
    """Check a command before it is sent; returns the normalised arguments.

    Raises ``BadDataError`` for an unknown kind, service action or interval.
    """
    if kind not in COMMAND_KINDS:
        raise BadDataError(
            f"cannot send command {kind!r}: kind must be one of {sorted(COMMAND_KINDS)}"
        )
    if kind == "service":
        action = args.get("action", "")
        name = args.get("name", "")
        if action not in SERVICE_ACTIONS:
            raise BadDataError(
                f"cannot send service command: action {action!r} is not start, stop or restart"
            )
        if not _SERVICE_NAME_RE.fullmatch(name):
            raise BadDataError(f"cannot send service command: invalid service name {name!r}")
        return {"action": action, "name": name}
    if kind == "set_interval":
        raw = str(args.get("interval", "")).strip()
        if raw == "adaptive":
            return {"interval": raw}
        try:
            seconds = float(raw)
        except ValueError as exc:
            raise BadDataError(
                f"cannot send set_interval: {raw!r} is neither seconds nor 'adaptive'"
            ) from exc
        if not MIN_REMOTE_INTERVAL_S <= seconds <= MAX_REMOTE_INTERVAL_S:
            raise BadDataError(
                f"cannot send set_interval: {seconds:g} s is outside "
                f"{MIN_REMOTE_INTERVAL_S:g}-{MAX_REMOTE_INTERVAL_S:g} s"
            )
        return {"interval": f"{seconds:g}"}
    return {}
