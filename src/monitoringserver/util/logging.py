"""Structured logging: one JSON object per line, or a readable console format.

Secrets never reach the log: the formatter masks anything that looks like an API token
(``mst_...``) or a bearer credential, whatever logged it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from monitoringserver.errors import ConfigError

__all__ = ["LoggingOptions", "configure_logging", "redact"]

_SECRET_RE = re.compile(r"(mst_[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9_\-.~+/=]{8,})")
_LEVELS = ("debug", "info", "warning", "error", "critical")
# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}


@dataclass(frozen=True, slots=True)
class LoggingOptions:
    #: ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
    level: str = "info"
    #: ``console`` (human-readable) or ``json`` (one object per line, for collectors).
    format: Literal["console", "json"] = "console"

    def __post_init__(self) -> None:
        if self.level.lower() not in _LEVELS:
            raise ConfigError(
                f"cannot accept logging option level={self.level!r}: must be one of "
                + ", ".join(_LEVELS)
            )
        if self.format not in ("console", "json"):
            raise ConfigError(
                f"cannot accept logging option format={self.format!r}: must be console or json"
            )


def redact(text: str) -> str:
    """Mask token-like substrings."""
    return _SECRET_RE.sub("[REDACTED]", text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _extras(record).items():
            doc[key] = (
                value
                if isinstance(value, int | float | bool) or value is None
                else redact(str(value))
            )
        if record.exc_info:
            doc["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(doc, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return redact(text)


def configure_logging(options: LoggingOptions, stream: TextIO | None = None) -> None:
    """Route the root logger (and uvicorn's) to ``stream`` (stderr) in the chosen format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if options.format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(options.level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
