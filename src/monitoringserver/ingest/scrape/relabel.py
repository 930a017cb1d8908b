"""Prometheus relabelling (``relabel_configs`` and ``metric_relabel_configs``).

Actions: ``replace`` (default), ``keep``, ``drop``, ``keepequal``, ``dropequal``,
``hashmod``, ``labelmap``, ``labeldrop``, ``labelkeep``, ``lowercase``, ``uppercase``.
Regexes are fully anchored (``^(?:regex)$``) as in Prometheus; ``$1``, ``${1}``,
``$name`` and ``${name}`` in ``replacement`` (and ``target_label``) refer to groups.
A label set to the empty string is removed. :func:`relabel` returns ``None`` when a
``keep``/``drop`` rule drops the whole set.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from monitoringserver.errors import ConfigError

__all__ = ["ACTIONS", "RelabelConfig", "parse_relabel_configs", "relabel"]

ACTIONS = frozenset(
    {
        "replace",
        "keep",
        "drop",
        "keepequal",
        "dropequal",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
    }
)
_GROUP_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _template(replacement: str) -> str:
    """Go-style ``$1``/``${name}`` → Python ``\\g<1>``/``\\g<name>`` for ``Match.expand``."""
    escaped = replacement.replace("\\", "\\\\")
    return _GROUP_REF.sub(lambda m: f"\\g<{m.group(1) or m.group(2)}>", escaped)


@dataclass(frozen=True, slots=True)
class RelabelConfig:
    action: str = "replace"
    source_labels: tuple[str, ...] = ()
    separator: str = ";"
    target_label: str = ""
    regex: re.Pattern[str] = re.compile(r"^(?:(.*))$")
    modulus: int = 0
    replacement: str = "$1"

    def expand(self, match: re.Match[str], text: str) -> str:
        try:
            return match.expand(_template(text))
        except (IndexError, re.error):
            # A reference to a group that does not exist expands to "" (as in Go).
            return _GROUP_REF.sub("", text)


def parse_relabel_configs(raw: Any, where: str) -> tuple[RelabelConfig, ...]:
    """Validate a YAML list of relabel rules; raises ``ConfigError`` naming ``where``."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"cannot load {where}: expected a list")
    out: list[RelabelConfig] = []
    for i, item in enumerate(raw):
        at = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"cannot load {at}: expected a mapping")
        action = str(item.get("action", "replace")).lower()
        if action not in ACTIONS:
            raise ConfigError(f"cannot load {at}: unknown action {action!r}")
        try:
            regex = re.compile(f"^(?:{item.get('regex', '(.*)')})$")
        except re.error as exc:
            raise ConfigError(f"cannot load {at}: invalid regex: {exc}") from exc
        sources = item.get("source_labels", []) or []
        if not isinstance(sources, list):
            raise ConfigError(f"cannot load {at}: source_labels must be a list")
        cfg = RelabelConfig(
            action=action,
            source_labels=tuple(str(s) for s in sources),
            separator=str(item.get("separator", ";")),
            target_label=str(item.get("target_label", "")),
            regex=regex,
            modulus=int(item.get("modulus", 0)),
            replacement=str(item.get("replacement", "$1")),
        )
        needs_target = {"replace", "hashmod", "lowercase", "uppercase", "keepequal", "dropequal"}
        if action in needs_target and not cfg.target_label:
            raise ConfigError(f"cannot load {at}: action {action} needs target_label")
        if action == "hashmod" and cfg.modulus <= 0:
            raise ConfigError(f"cannot load {at}: hashmod needs a positive modulus")
        out.append(cfg)
    return tuple(out)


def relabel(labels: Mapping[str, str], configs: Sequence[RelabelConfig]) -> dict[str, str] | None:
    """Apply ``configs`` in order to a copy of ``labels``; ``None`` when dropped."""
    out = dict(labels)
    for cfg in configs:
        value = cfg.separator.join(out.get(name, "") for name in cfg.source_labels)
        action = cfg.action
        if action == "replace":
            m = cfg.regex.match(value)
            if m is None:
                continue
            target = cfg.expand(m, cfg.target_label)
            if not _LABEL_NAME.fullmatch(target):
                continue
            new = cfg.expand(m, cfg.replacement)
            if new:
                out[target] = new
            else:
                out.pop(target, None)
        elif action == "keep":
            if not cfg.regex.match(value):
                return None
        elif action == "drop":
            if cfg.regex.match(value):
                return None
        elif action == "keepequal":
            if value != out.get(cfg.target_label, ""):
                return None
        elif action == "dropequal":
            if value == out.get(cfg.target_label, ""):
                return None
        elif action == "hashmod":
            digest = hashlib.md5(value.encode(), usedforsecurity=False).digest()
            out[cfg.target_label] = str(int.from_bytes(digest[8:], "big") % cfg.modulus)
        elif action == "lowercase":
            out[cfg.target_label] = value.lower()
        elif action == "uppercase":
            out[cfg.target_label] = value.upper()
        elif action == "labelmap":
            for name, val in list(out.items()):
                m = cfg.regex.match(name)
                if m is not None:
                    out[cfg.expand(m, cfg.replacement)] = val
        elif action == "labeldrop":
            for name in [n for n in out if cfg.regex.match(n)]:
                del out[name]
        elif action == "labelkeep":
            for name in [n for n in out if not cfg.regex.match(n)]:
                del out[name]
    return {k: v for k, v in out.items() if v != ""}
