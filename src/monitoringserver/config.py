"""Configuration: one TOML file, ``MONITORING_*`` environment overrides, CLI flags.

Precedence, lowest first: defaults < file (``--config``) < environment < flags.

* The file has one table per section (``[server]``, ``[storage]``, ``[auth]``, ``[limits]``,
  ``[logging]``, ``[agent]``); each section is an options dataclass owned by its package.
  Unknown sections and keys are errors.
* Environment: ``MONITORING_<SECTION>__<KEY>`` (double underscore between section and key,
  case-insensitive), e.g. ``MONITORING_STORAGE__WAL_FSYNC=always``. Keys of ``[server]`` may
  drop the section: ``MONITORING_HTTP_LISTEN=0.0.0.0:9940``. Values are TOML literals
  (``true``, ``10``, ``1.5``, ``["a", "b"]``) except for string options, which take the raw
  text. ``MONITORING_<X>`` without ``__`` that is not a ``[server]`` key is ignored (e.g.
  ``MONITORING_TOKEN`` used by the CLI).
* Flags: ``--data-dir``, ``--http-listen``, ``--grpc-listen`` (``[server]``).

:func:`load_config` collects every error (with ``file:line``, ``env NAME`` or ``flag``) and
raises one :class:`ConfigError` listing them all; ``check-config`` prints them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from monitoringserver.auth.options import AuthOptions
from monitoringserver.errors import BadDataError, ConfigError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.ingest.scrape.config import ScrapeOptions
from monitoringserver.ingest.syslog import SyslogOptions
from monitoringserver.logs.archive import LogStoreOptions
from monitoringserver.logs.parser import ParserOptions
from monitoringserver.nodes.types import NodesOptions
from monitoringserver.pipeline.forwarder import ForwardOptions
from monitoringserver.pipeline.log_writer import LogWriterOptions
from monitoringserver.promql.engine import EngineOptions
from monitoringserver.storage.options import StorageOptions
from monitoringserver.util.logging import LoggingOptions
from monitoringserver.web.options import LimitsOptions

__all__ = [
    "SECTIONS",
    "AgentOptions",
    "Config",
    "ConfigListError",
    "ServerOptions",
    "load_config",
    "parse_listen",
]

ENV_PREFIX = "MONITORING_"
_LISTEN_RE = re.compile(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9940`` for IPv6; port 0 picks a free port) → ``(host, port)``."""
    m = _LISTEN_RE.fullmatch(text.strip())
    if m is None or int(m.group("port")) > 65535:
        raise ConfigError(f"cannot parse listen address {text!r}: expected HOST:PORT")
    host = m.group("v6") or m.group("host") or "0.0.0.0"  # an empty host means every address
    return host, int(m.group("port"))


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """Where the server keeps data and listens."""

    #: Data directory: DuckDB file, WAL, Parquet blocks, ``admin.token``, ``http.addr``.
    data_dir: str = "./data"
    #: HTTP listen address ``HOST:PORT``; port 0 picks a free port (written to ``http.addr``).
    http_listen: str = "127.0.0.1:9940"
    #: gRPC listen address ``HOST:PORT`` (node agents).
    grpc_listen: str = "127.0.0.1:9941"
    #: SIGTERM/SIGINT: everything must be flushed and closed within this many seconds.
    shutdown_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise ConfigError("cannot accept server option data_dir='': must not be empty")
        for name in ("http_listen", "grpc_listen"):
            try:
                parse_listen(getattr(self, name))
            except ConfigError as exc:
                raise ConfigError(f"cannot accept server option {name}: {exc}") from None
        if not 0 < self.shutdown_timeout_s <= 300:
            raise ConfigError(
                f"cannot accept server option shutdown_timeout_s={self.shutdown_timeout_s!r}: "
                "must be in (0, 300]"
            )


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """The node agent the server runs for its own host."""

    #: Run a local agent in the server process (``--no-local-agent`` turns it off).
    local: bool = True
    #: Node id of the server's own host; empty = the hostname.
    node_id: str = ""
    #: Seconds between collections of the local agent.
    interval_s: float = 10.0
    #: systemd services the local agent reports on and may start/stop/restart on command.
    service_allowlist: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.interval_s < 1:
            raise ConfigError("cannot accept agent option interval_s: must be at least 1 second")


#: Section name → options dataclass. Other packages add their sections here.
SECTIONS: dict[str, type[Any]] = {
    "server": ServerOptions,
    "storage": StorageOptions,
    "auth": AuthOptions,
    "limits": LimitsOptions,
    "logging": LoggingOptions,
    "agent": AgentOptions,
    "grpc": GrpcOptions,
    "nodes": NodesOptions,
    "promql": EngineOptions,
    "prometheus_ingest": PromIngestOptions,
    "scrape": ScrapeOptions,
    "forward": ForwardOptions,
    "logs": LogStoreOptions,
    "log_ingest": LogWriterOptions,
    "log_parser": ParserOptions,
    "syslog": SyslogOptions,
}


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerOptions = field(default_factory=ServerOptions)
    storage: StorageOptions = field(default_factory=StorageOptions)
    auth: AuthOptions = field(default_factory=AuthOptions)
    limits: LimitsOptions = field(default_factory=LimitsOptions)
    logging: LoggingOptions = field(default_factory=LoggingOptions)
    agent: AgentOptions = field(default_factory=AgentOptions)
    grpc: GrpcOptions = field(default_factory=GrpcOptions)
    nodes: NodesOptions = field(default_factory=NodesOptions)
    promql: EngineOptions = field(default_factory=EngineOptions)
    prometheus_ingest: PromIngestOptions = field(default_factory=PromIngestOptions)
    scrape: ScrapeOptions = field(default_factory=ScrapeOptions)
    forward: ForwardOptions = field(default_factory=ForwardOptions)
    logs: LogStoreOptions = field(default_factory=LogStoreOptions)
    log_ingest: LogWriterOptions = field(default_factory=LogWriterOptions)
    log_parser: ParserOptions = field(default_factory=ParserOptions)
    syslog: SyslogOptions = field(default_factory=SyslogOptions)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)


class ConfigListError(ConfigError):
    """Every problem found, each as ``<location>: <message>``."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("cannot load configuration:\n  " + "\n  ".join(errors))
        self.errors = errors


def fields_of(cls: type[Any]) -> dict[str, Any]:
    """Init fields of an options dataclass → resolved type."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "none"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """Check ``value`` (a TOML value) against ``tp``; ints are accepted for floats."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
    elif isinstance(tp, types.UnionType) or origin is typing.Union:
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg)
            except TypeError:
                continue
    elif origin in (list, tuple):
        (item, *_rest) = typing.get_args(tp) or (Any,)
        if isinstance(value, list):
            items = [coerce(v, item) for v in value]
            return tuple(items) if origin is tuple else items
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif tp is Any:
        return value
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is Path:
        if isinstance(value, str | Path):
            return Path(value)
    elif tp is type(None):
        if value is None:
            return None
    elif isinstance(tp, type) and isinstance(value, tp):
        return value
    raise TypeError(f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _env_value(raw: str, tp: Any) -> Any:
    if tp is str or (typing.get_origin(tp) is Literal and raw in typing.get_args(tp)):
        return raw
    if raw.strip().lower() in ("", "none", "null") and type(None) in typing.get_args(tp):
        return None
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _toml_lines(text: str) -> dict[str, int]:
    """``section.key`` → 1-based line of its definition (best effort, for error messages)."""
    lines: dict[str, int] = {}
    table = ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        header = re.match(r"\[\s*([^\[\]]+?)\s*\]", stripped)
        if header:
            table = header.group(1).replace('"', "").replace(" ", "")
            lines.setdefault(table, number)
            continue
        key = re.match(r"([A-Za-z0-9_.\-\"' ]+?)\s*=", stripped)
        if key:
            name = key.group(1).replace('"', "").replace("'", "").replace(" ", "")
            lines.setdefault(f"{table}.{name}" if table else name, number)
    return lines


@dataclass
class _Source:
    """Raw values per section with where each came from."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    where: dict[tuple[str, str], str] = field(default_factory=dict)

    def put(self, section: str, key: str, value: Any, where: str) -> None:
        self.values.setdefault(section, {})[key] = value
        self.where[(section, key)] = where


def _read_file(path: Path, source: _Source, errors: list[str]) -> None:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        errors.append(f"{path}: cannot read configuration file: {exc.strerror or exc}")
        return
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        errors.append(f"{path}: cannot parse TOML: {exc}")
        return
    lines = _toml_lines(text)
    for section, table in doc.items():
        where = f"{path}:{lines.get(section, 1)}"
        if section not in SECTIONS:
            errors.append(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            continue
        if not isinstance(table, dict):
            errors.append(f"{where}: {section} must be a table ([{section}])")
            continue
        for key, value in table.items():
            line = lines.get(f"{section}.{key}", lines.get(section, 1))
            source.put(section, key, value, f"{path}:{line}: {section}.{key}")


def _read_env(env: Mapping[str, str], source: _Source, errors: list[str]) -> None:
    server_keys = fields_of(ServerOptions)
    for name in sorted(env):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        if "__" in rest:
            section, _, key = rest.partition("__")
        elif rest in server_keys:
            section, key = "server", rest
        else:
            continue
        where = f"env {name}"
        if section not in SECTIONS:
            errors.append(f"{where}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
            continue
        types_ = fields_of(SECTIONS[section])
        if key not in types_:
            errors.append(f"{where}: unknown key {section}.{key}")
            continue
        source.put(section, key, _env_value(env[name], types_[key]), f"{where}: {section}.{key}")


def _build_section(name: str, raw: dict[str, Any], source: _Source, errors: list[str]) -> Any:
    cls = SECTIONS[name]
    types_ = fields_of(cls)
    good: dict[str, Any] = {}
    for key, value in raw.items():
        where = source.where[(name, key)]
        if key not in types_:
            close = [k for k in types_ if k.startswith(key[:3])]
            hint = f" (did you mean {close[0]}?)" if close else ""
            errors.append(f"{where}: unknown key{hint}")
            continue
        try:
            good[key] = coerce(value, types_[key])
        except TypeError as exc:
            errors.append(f"{where}: {exc}")
    try:
        return cls(**good)
    except (ConfigError, BadDataError) as whole:
        # Find every bad key: each alone over the defaults, then the combination.
        blamed = False
        for key, value in good.items():
            try:
                cls(**{key: value})
            except (ConfigError, BadDataError) as exc:
                errors.append(f"{source.where[(name, key)]}: {exc}")
                blamed = True
        if not blamed:
            errors.append(f"[{name}]: {whole}")
        return cls()


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Build the configuration; raises :class:`ConfigListError` listing every problem.

    ``flags`` maps ``[server]`` keys (``data_dir``, ``http_listen``, ``grpc_listen``) and
    ``agent.local`` to values given on the command line; ``None`` values are ignored.
    """
    source = _Source()
    errors: list[str] = []
    if path is not None:
        _read_file(path, source, errors)
    _read_env(os.environ if env is None else env, source, errors)
    for key, value in (flags or {}).items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        section = section or "server"
        source.put(section, name, value, f"flag --{name.replace('_', '-')}")
    sections = {
        name: _build_section(name, source.values.get(name, {}), source, errors) for name in SECTIONS
    }
    if errors:
        raise ConfigListError(errors)
    return Config(**{k: v for k, v in sections.items() if k in fields_of(Config)})
