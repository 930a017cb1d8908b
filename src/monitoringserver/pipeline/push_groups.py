"""Pushgateway groups held in memory, each with a time-to-live.

A group is identified by its grouping key (``job`` plus optional labels, as a canonical
label tuple) and holds the latest value of every series pushed to it (series labels
already include the grouping labels), with the families' ``# TYPE``/``# HELP``.

Every change returns the series that disappeared so the caller can write staleness
markers for them: a ``PUT`` drops the series not pushed again, a ``POST`` drops the
series of the pushed families that were not pushed again, ``DELETE`` and expiry drop all
of a group's series. A group not pushed to for ``ttl_s`` seconds expires
(:meth:`PushGroups.expire`).

:meth:`PushGroups.save` / :meth:`PushGroups.load` keep the groups across restarts (the
TTL keeps counting from the last push).

Thread/loop affinity: one event loop; only ``save``/``load`` touch the disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from monitoringserver.errors import OverloadedError, StorageError
from monitoringserver.model.labels import METRIC_NAME, Labels

__all__ = ["PushGroup", "PushGroups"]


@dataclass(slots=True)
class PushGroup:
    key: Labels
    series: dict[Labels, float] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)  # series name → family
    types: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)
    last_push_s: float = 0.0


def _name(labels: Labels) -> str:
    for k, v in labels:
        if k == METRIC_NAME:
            return v
    return ""


class PushGroups:
    """Groups by grouping key. ``clock`` returns seconds since the epoch."""

    def __init__(
        self, *, ttl_s: float, max_groups: int, clock: Callable[[], float] = time.time
    ) -> None:
        self.ttl_s = ttl_s
        self.max_groups = max_groups
        self.clock = clock
        self._groups: dict[Labels, PushGroup] = {}

    def __len__(self) -> int:
        return len(self._groups)

    def get(self, key: Labels) -> PushGroup | None:
        return self._groups.get(key)

    def groups(self) -> list[PushGroup]:
        return [self._groups[k] for k in sorted(self._groups)]

    def push(
        self,
        key: Labels,
        samples: Iterable[tuple[Labels, float, str]],
        *,
        replace_all: bool,
        types: Mapping[str, str],
        helps: Mapping[str, str],
    ) -> list[Labels]:
        """Store ``(series labels, value, family)`` samples; return the series dropped.

        ``replace_all`` (PUT) replaces the group; otherwise (POST) only the families
        present in ``samples`` are replaced. Raises ``OverloadedError`` when a new group
        would pass ``max_groups``.
        """
        group = self._groups.get(key)
        if group is None:
            if len(self._groups) >= self.max_groups:
                raise OverloadedError(
                    f"cannot create push group {dict(key)}: {len(self._groups)} groups is the "
                    f"limit (pushgateway_max_groups)",
                    retry_after_s=60.0,
                )
            group = PushGroup(key)
            self._groups[key] = group
        new: dict[Labels, float] = {}
        new_families: dict[str, str] = {}
        for labels, value, family in samples:
            new[labels] = value
            new_families[_name(labels)] = family
        if replace_all:
            dropped = [s for s in group.series if s not in new]
            group.series = new
            group.families = new_families
            group.types = dict(types)
            group.helps = dict(helps)
        else:
            pushed = set(new_families.values())
            dropped = [
                s for s in group.series if group.families.get(_name(s)) in pushed and s not in new
            ]
            for s in dropped:
                del group.series[s]
            group.series.update(new)
            group.families.update(new_families)
            group.types.update(types)
            group.helps.update(helps)
        group.last_push_s = self.clock()
        return dropped

    def delete(self, key: Labels) -> list[Labels]:
        """Remove a group; return its series (empty when there was no such group)."""
        group = self._groups.pop(key, None)
        return list(group.series) if group else []

    def expire(self) -> list[Labels]:
        """Remove groups older than the TTL; return their series."""
        cutoff = self.clock() - self.ttl_s
        old = [k for k, g in self._groups.items() if g.last_push_s <= cutoff]
        out: list[Labels] = []
        for key in old:
            out.extend(self._groups.pop(key).series)
        return out

    def save(self, path: Path) -> None:
        """Write every group to ``path`` (JSON, atomically: temporary file + rename)."""
        doc = [
            {
                "key": [list(p) for p in g.key],
                "series": [[[list(p) for p in s], v] for s, v in g.series.items()],
                "families": g.families,
                "types": g.types,
                "helps": g.helps,
                "last_push_s": g.last_push_s,
            }
            for g in self._groups.values()
        ]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)

    def load(self, path: Path) -> int:
        """Read groups saved by :meth:`save`; returns how many (0 when there is no file).

        Raises ``StorageError`` when the file exists but cannot be read.
        """
        try:
            doc = json.loads(path.read_text())
            for item in doc:
                key = tuple((str(k), str(v)) for k, v in item["key"])
                group = PushGroup(
                    key,
                    {tuple((str(k), str(v)) for k, v in s): float(v) for s, v in item["series"]},
                    dict(item["families"]),
                    dict(item["types"]),
                    dict(item["helps"]),
                    float(item["last_push_s"]),
                )
                self._groups[key] = group
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"cannot load push groups from {path}: {exc}") from exc
        return len(doc)

    def snapshot(self) -> list[tuple[Labels, float]]:
        """Every live series with its value (for the periodic refresh)."""
        return [(s, v) for g in self._groups.values() for s, v in g.series.items()]
