"""Service discovery: static target groups and file-based groups (``file_sd_configs``),
and the turning of target groups into scrape targets through ``relabel_configs``.

File SD reads YAML or JSON files (glob patterns allowed) holding lists of
``{"targets": [...], "labels": {...}}``; each group gets ``__meta_filepath``. A file is
re-read when its modification time or size changes (:meth:`FileSD.poll`); a file that
cannot be read or parsed keeps its previous groups (and the error is logged once).
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import yaml  # type: ignore[import-untyped]  # PyYAML ships with uvicorn[standard]

from monitoringserver.ingest.scrape.config import FileSDConfig, ScrapeConfig
from monitoringserver.ingest.scrape.relabel import relabel
from monitoringserver.model.labels import Labels

__all__ = ["FileSD", "Target", "TargetGroup", "build_targets", "static_groups"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TargetGroup:
    targets: tuple[str, ...]
    labels: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Target:
    """One scrape target: its URL and its final labels (``job``, ``instance``, ...)."""

    job: str
    url: str
    labels: Labels


def static_groups(cfg: ScrapeConfig) -> list[TargetGroup]:
    return [TargetGroup(s.targets, s.labels) for s in cfg.static_configs]


def _groups_of(doc: Any, path: str) -> list[TargetGroup]:
    if not isinstance(doc, list):
        raise TypeError("expected a list of target groups")
    out = []
    for item in doc:
        if not isinstance(item, dict) or not isinstance(item.get("targets", []), list):
            raise TypeError("each group needs a 'targets' list")
        labels = {str(k): str(v) for k, v in (item.get("labels") or {}).items()}
        labels["__meta_filepath"] = path
        out.append(
            TargetGroup(tuple(str(t) for t in item["targets"]), tuple(sorted(labels.items())))
        )
    return out


class FileSD:
    """Target groups from the files of one ``file_sd_configs`` entry."""

    def __init__(self, cfg: FileSDConfig) -> None:
        self.cfg = cfg
        self._signature: dict[str, tuple[int, int]] = {}
        self._groups: dict[str, list[TargetGroup]] = {}
        self._failed: set[str] = set()

    def paths(self) -> list[str]:
        found: set[str] = set()
        for pattern in self.cfg.files:
            found.update(glob.glob(pattern))
        return sorted(found)

    def current(self) -> list[TargetGroup]:
        """The groups read so far (as of the last :meth:`poll`)."""
        return [g for path in sorted(self._groups) for g in self._groups[path]]

    def poll(self) -> list[TargetGroup] | None:
        """The current groups when any file changed since the last call, else ``None``."""
        signature: dict[str, tuple[int, int]] = {}
        for path in self.paths():
            try:
                st = os.stat(path)
            except OSError:
                continue
            signature[path] = (st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return None
        for path in list(self._groups):
            if path not in signature:
                del self._groups[path]
        for path, sig in signature.items():
            if self._signature.get(path) == sig:
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    self._groups[path] = _groups_of(yaml.safe_load(f), path)
                self._failed.discard(path)
            except (OSError, TypeError, ValueError, yaml.YAMLError) as exc:
                if path not in self._failed:
                    log.warning(
                        "cannot load file_sd file %s: %s (keeping its old targets)", path, exc
                    )
                self._failed.add(path)
        self._signature = signature
        return self.current()


def build_targets(cfg: ScrapeConfig, groups: list[TargetGroup]) -> list[Target]:
    """Apply the job's ``relabel_configs`` to every target of ``groups``; dedup targets."""
    out: dict[tuple[str, Labels], Target] = {}
    base = {
        "job": cfg.job_name,
        "__scheme__": cfg.scheme,
        "__metrics_path__": cfg.metrics_path,
        "__scrape_interval__": f"{cfg.scrape_interval_s:g}s",
        "__scrape_timeout__": f"{cfg.scrape_timeout_s:g}s",
    }
    for name, values in cfg.params:
        if values:
            base[f"__param_{name}"] = values[0]
    for group in groups:
        for address in group.targets:
            labels = {**base, **dict(group.labels), "__address__": address}
            final = relabel(labels, cfg.relabel_configs) if cfg.relabel_configs else labels
            if final is None or not final.get("__address__"):
                continue
            params = dict(cfg.params)
            for key, value in final.items():
                if key.startswith("__param_"):
                    params[key[len("__param_") :]] = (value,)
            query = urlencode([(k, v) for k, vs in params.items() for v in vs])
            url = (
                f"{final.get('__scheme__', cfg.scheme)}://{final['__address__']}"
                f"{final.get('__metrics_path__', cfg.metrics_path)}"
                + (f"?{query}" if query else "")
            )
            visible = {k: v for k, v in final.items() if not k.startswith("__")}
            visible.setdefault("instance", final["__address__"])
            target_labels = tuple(sorted(visible.items()))
            out[(url, target_labels)] = Target(cfg.job_name, url, target_labels)
    return list(out.values())
