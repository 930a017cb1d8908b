"""Scrape options and the Prometheus-style ``scrape_configs`` file.

:class:`ScrapeOptions` is the ``[scrape]`` section of the server configuration; its
``config_file`` names a YAML file in Prometheus' format, of which ``global``
(``scrape_interval``, ``scrape_timeout``, ``external_labels`` ignored) and
``scrape_configs`` are read. Per job: ``job_name``, ``scrape_interval``,
``scrape_timeout``, ``metrics_path``, ``scheme``, ``params``, ``honor_labels``,
``honor_timestamps``, ``sample_limit``, ``basic_auth`` (``username``, ``password`` or
``password_file``), ``bearer_token``/``bearer_token_file``, ``authorization``
(``type``, ``credentials``/``credentials_file``), ``tls_config.insecure_skip_verify``,
``static_configs``, ``file_sd_configs`` (``files``), ``relabel_configs`` and
``metric_relabel_configs``. Unknown keys are refused so typos do not pass silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML ships with uvicorn[standard]

from monitoringserver.errors import ConfigError
from monitoringserver.ingest.scrape.relabel import RelabelConfig, parse_relabel_configs

__all__ = [
    "FileSDConfig",
    "ScrapeConfig",
    "ScrapeOptions",
    "StaticConfig",
    "load_scrape_file",
    "parse_duration_s",
    "parse_scrape_configs",
]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_JOB_KEYS = {
    "job_name", "scrape_interval", "scrape_timeout", "metrics_path", "scheme", "params",
    "honor_labels", "honor_timestamps", "sample_limit", "basic_auth", "bearer_token",
    "bearer_token_file", "authorization", "tls_config", "static_configs", "file_sd_configs",
    "relabel_configs", "metric_relabel_configs", "follow_redirects", "enable_http2",
    "scrape_protocols", "body_size_limit",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class ScrapeOptions:
    """The ``[scrape]`` section. Durations are seconds, sizes bytes."""

    #: Prometheus-style YAML with ``scrape_configs``; empty = no scraping.
    config_file: str = ""
    #: How often file_sd files are checked for changes (mtime and size).
    file_sd_check_interval_s: float = 2.0
    #: Largest scrape response accepted (uncompressed); bigger scrapes fail (``up`` 0).
    max_scrape_bytes: int = 64 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.file_sd_check_interval_s <= 0:
            raise ConfigError("cannot accept scrape option file_sd_check_interval_s: must be > 0")
        if self.max_scrape_bytes < 1:
            raise ConfigError("cannot accept scrape option max_scrape_bytes: must be positive")


@dataclass(frozen=True, slots=True)
class StaticConfig:
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class FileSDConfig:
    files: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ScrapeConfig:
    job_name: str
    scrape_interval_s: float = 60.0
    scrape_timeout_s: float = 10.0
    metrics_path: str = "/metrics"
    scheme: str = "http"
    params: tuple[tuple[str, tuple[str, ...]], ...] = ()
    honor_labels: bool = False
    honor_timestamps: bool = True
    sample_limit: int = 0
    basic_auth: tuple[str, str] | None = None
    bearer_token: str = ""
    insecure_skip_verify: bool = False
    static_configs: tuple[StaticConfig, ...] = ()
    file_sd_configs: tuple[FileSDConfig, ...] = ()
    relabel_configs: tuple[RelabelConfig, ...] = ()
    metric_relabel_configs: tuple[RelabelConfig, ...] = field(default=())


def parse_duration_s(value: Any, where: str) -> float:
    """Prometheus duration (``15s``, ``1m30s``, ``500ms``) or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text or total <= 0:
        raise ConfigError(f"cannot load {where}: invalid duration {value!r}")
    return total


def _read_secret(item: dict[str, Any], key: str, file_key: str, where: str) -> str:
    if item.get(file_key):
        try:
            return Path(str(item[file_key])).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot load {where}.{file_key}: {exc}") from exc
    return str(item.get(key) or "")


def _job(raw: dict[str, Any], gl: dict[str, Any], where: str) -> ScrapeConfig:
    unknown = set(raw) - _JOB_KEYS
    if unknown:
        raise ConfigError(f"cannot load {where}: unknown keys {sorted(unknown)}")
    name = raw.get("job_name")
    if not name or not isinstance(name, str):
        raise ConfigError(f"cannot load {where}: job_name is required")
    interval = parse_duration_s(
        raw.get("scrape_interval", gl.get("scrape_interval", "1m")), f"{where}.scrape_interval"
    )
    timeout = parse_duration_s(
        raw.get("scrape_timeout", gl.get("scrape_timeout", min(10.0, interval))),
        f"{where}.scrape_timeout",
    )
    if timeout > interval:
        raise ConfigError(f"cannot load {where}: scrape_timeout is longer than scrape_interval")
    scheme = str(raw.get("scheme", "http"))
    if scheme not in ("http", "https"):
        raise ConfigError(f"cannot load {where}.scheme: expected http or https")
    basic = None
    if raw.get("basic_auth"):
        b = raw["basic_auth"]
        basic = (str(b.get("username", "")), _read_secret(b, "password", "password_file", where))
    bearer = _read_secret(raw, "bearer_token", "bearer_token_file", where)
    if raw.get("authorization"):
        a = raw["authorization"]
        if str(a.get("type", "Bearer")).lower() != "bearer":
            raise ConfigError(f"cannot load {where}.authorization: only type Bearer is supported")
        bearer = _read_secret(a, "credentials", "credentials_file", f"{where}.authorization")
    statics = []
    for i, s in enumerate(raw.get("static_configs") or []):
        targets = s.get("targets") or []
        if not isinstance(targets, list):
            raise ConfigError(f"cannot load {where}.static_configs[{i}].targets: expected a list")
        labels = tuple(sorted((str(k), str(v)) for k, v in (s.get("labels") or {}).items()))
        statics.append(StaticConfig(tuple(str(t) for t in targets), labels))
    files = []
    for i, f in enumerate(raw.get("file_sd_configs") or []):
        names = f.get("files") or []
        if not isinstance(names, list) or not names:
            raise ConfigError(f"cannot load {where}.file_sd_configs[{i}].files: expected a list")
        files.append(FileSDConfig(tuple(str(n) for n in names)))
    params = tuple(
        (str(k), tuple(str(x) for x in (v if isinstance(v, list) else [v])))
        for k, v in (raw.get("params") or {}).items()
    )
    return ScrapeConfig(
        job_name=name,
        scrape_interval_s=interval,
        scrape_timeout_s=timeout,
        metrics_path=str(raw.get("metrics_path", "/metrics")),
        scheme=scheme,
        params=params,
        honor_labels=bool(raw.get("honor_labels", False)),
        honor_timestamps=bool(raw.get("honor_timestamps", True)),
        sample_limit=int(raw.get("sample_limit", 0)),
        basic_auth=basic,
        bearer_token=bearer,
        insecure_skip_verify=bool((raw.get("tls_config") or {}).get("insecure_skip_verify")),
        static_configs=tuple(statics),
        file_sd_configs=tuple(files),
        relabel_configs=parse_relabel_configs(raw.get("relabel_configs"), f"{where}.relabel"),
        metric_relabel_configs=parse_relabel_configs(
            raw.get("metric_relabel_configs"), f"{where}.metric_relabel_configs"
        ),
    )


def parse_scrape_configs(doc: Any, where: str = "scrape config") -> tuple[ScrapeConfig, ...]:
    """A parsed YAML document (``{"global": ..., "scrape_configs": [...]}``) → jobs."""
    if doc is None:
        return ()
    if not isinstance(doc, dict):
        raise ConfigError(f"cannot load {where}: expected a mapping at the top")
    gl = doc.get("global") or {}
    jobs = doc.get("scrape_configs") or []
    if not isinstance(jobs, list):
        raise ConfigError(f"cannot load {where}: scrape_configs must be a list")
    out = []
    for i, raw in enumerate(jobs):
        if not isinstance(raw, dict):
            raise ConfigError(f"cannot load {where}: scrape_configs[{i}]: expected a mapping")
        out.append(_job(raw, gl, f"{where}: scrape_configs[{i}]"))
    names = [j.job_name for j in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"cannot load {where}: duplicate job_name {sorted(dup)}")
    return tuple(out)


def load_scrape_file(path: str | Path) -> tuple[ScrapeConfig, ...]:
    try:
        text = Path(path).read_text()
        doc = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot load scrape config {path}: {exc}") from exc
    return parse_scrape_configs(doc, str(path))
