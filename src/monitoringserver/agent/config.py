"""Agent configuration: ``agent.toml``, overridden by command-line flags.

See ``deploy/agent.toml`` for an annotated example. Durations in seconds, sizes in bytes.
"""

from __future__ import annotations

import os
import socket
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["AgentConfig", "ConfigError", "default_state_dir", "load_config", "parse_interval"]


class ConfigError(ValueError):
    """The agent configuration is invalid (the message says which key and why)."""


def default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/node-agent")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local/state")
    return Path(base) / "node-agent"


def parse_interval(value: str | float | int) -> float | None:
    """``"adaptive"`` -> None; otherwise seconds >= 1."""
    if isinstance(value, str) and value.strip().lower() == "adaptive":
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot parse interval {value!r}: seconds or 'adaptive'") from exc
    if not seconds >= 1.0:
        raise ConfigError(f"cannot use interval {seconds:g}: at least 1 second")
    return seconds


@dataclass(frozen=True, slots=True)
class AgentConfig:
    server: str = "127.0.0.1:9941"
    token_file: Path | None = None
    token: str = ""
    node_id: str = field(default_factory=socket.gethostname)
    interval_s: float | None = None  # None = adaptive
    spool_dir: Path = field(default_factory=default_state_dir)
    spool_max_bytes: int = 512 * 1024 * 1024
    labels: dict[str, str] = field(default_factory=dict)
    tls: bool = False
    ca_file: Path | None = None
    call_timeout_s: float = 15.0
    # collectors
    system: bool = True
    hardware: bool = True
    containers: bool = True
    container_socket: Path | None = None
    services: bool = True
    processes: bool = True
    top_processes: int = 5
    gpu: bool = True
    # services monitored and controllable (systemd unit names)
    service_allowlist: tuple[str, ...] = ()
    control: bool = True
    # local exposition: "host:port", "unix:/path" or "" (off)
    exporter_listen: str = ""
    # logs
    log_files: tuple[str, ...] = ()
    journald: bool = False
    journald_units: tuple[str, ...] = ()

    @property
    def state_dir(self) -> Path:
        return self.spool_dir

    def read_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file is None:
            return ""
        try:
            return self.token_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read token file {self.token_file}: {exc}") from exc


def _get(d: dict[str, Any], key: str, typ: type, default: Any) -> Any:
    if key not in d:
        return default
    value = d[key]
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, typ):
        raise ConfigError(f"cannot use {key}={value!r}: expected {typ.__name__}")
    return value


def load_config(path: Path | None, **overrides: Any) -> AgentConfig:
    """Read ``path`` (when given) and apply non-None ``overrides`` (CLI flags)."""
    cfg = AgentConfig()
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc}") from exc
        col = _get(data, "collectors", dict, {})
        svc = _get(data, "services", dict, {})
        exp = _get(data, "exporter", dict, {})
        logs = _get(data, "logs", dict, {})
        interval = data.get("interval", "adaptive")
        token_file = _get(data, "token_file", str, "")
        ca_file = _get(data, "ca_file", str, "")
        sock = _get(col, "container_socket", str, "")
        cfg = replace(
            cfg,
            server=_get(data, "server", str, cfg.server),
            token_file=Path(token_file) if token_file else None,
            node_id=_get(data, "node_id", str, "") or cfg.node_id,
            interval_s=parse_interval(interval),
            spool_dir=Path(_get(data, "spool_dir", str, str(cfg.spool_dir))),
            spool_max_bytes=_get(data, "spool_max_bytes", int, cfg.spool_max_bytes),
            labels={str(k): str(v) for k, v in _get(data, "labels", dict, {}).items()},
            tls=_get(data, "tls", bool, False),
            ca_file=Path(ca_file) if ca_file else None,
            system=_get(col, "system", bool, True),
            hardware=_get(col, "hardware", bool, True),
            containers=_get(col, "containers", bool, True),
            container_socket=Path(sock) if sock else None,
            services=_get(col, "services", bool, True),
            processes=_get(col, "processes", bool, True),
            top_processes=_get(col, "top_processes", int, 5),
            gpu=_get(col, "gpu", bool, True),
            service_allowlist=tuple(str(s) for s in _get(svc, "allowlist", list, [])),
            control=_get(svc, "control", bool, True),
            exporter_listen=_get(exp, "listen", str, ""),
            log_files=tuple(str(s) for s in _get(logs, "files", list, [])),
            journald=_get(logs, "journald", bool, False),
            journald_units=tuple(str(s) for s in _get(logs, "units", list, [])),
        )
    clean = {k: v for k, v in overrides.items() if v is not None}
    if "interval" in clean:
        clean["interval_s"] = parse_interval(clean.pop("interval"))
    cfg = replace(cfg, **clean)
    if cfg.spool_max_bytes < 1024 * 1024:
        raise ConfigError("cannot use spool_max_bytes below 1 MiB")
    if not cfg.node_id:
        raise ConfigError("cannot run without a node id")
    return cfg
