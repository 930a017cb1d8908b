"""What collectors produce: self-described metrics and one cycle's samples.

Every metric describes itself (:class:`MetricDesc`: name, type, unit, help) so the
server can serve ``/api/v1/metadata`` and the local exposition can print ``# HELP``.
A collector writes samples into an :class:`Emitter`; every sample gets the node's base
labels (``server_id``, ``instance``, ``job="node"`` and configured extra labels).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from monitoringserver.model.labels import Labels

__all__ = ["Collector", "Emitter", "MetricDesc", "Sample", "counter", "gauge"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MetricDesc:
    """``type`` is ``gauge`` or ``counter``; ``unit`` a base unit (``bytes``, ``seconds``...)."""

    name: str
    type: str
    unit: str
    help: str


def gauge(name: str, unit: str, help_text: str) -> MetricDesc:
    return MetricDesc(name, "gauge", unit, help_text)


def counter(name: str, unit: str, help_text: str) -> MetricDesc:
    return MetricDesc(name, "counter", unit, help_text)


#: One sample: its metric, its full label set (``__name__`` included), its value.
Sample = tuple[MetricDesc, Labels, float]


@dataclass(slots=True)
class Emitter:
    """Collects the samples of one collection cycle."""

    base_labels: Mapping[str, str]
    samples: list[Sample] = field(default_factory=list)

    def add(self, desc: MetricDesc, value: float, labels: Mapping[str, str] | None = None) -> None:
        """Add one sample; empty label values are dropped, NaN/None values skipped."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return
        if math.isnan(v):  # a sensor that reported nothing
            return
        pairs = dict(self.base_labels)
        if labels:
            for k, val in labels.items():
                if val != "":
                    pairs[k] = str(val)
        pairs["__name__"] = desc.name
        self.samples.append((desc, tuple(sorted(pairs.items())), v))

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    def value(self, metric: str, /, **labels: str) -> float | None:
        """The first sample of ``metric`` whose labels include ``labels`` (tests, adaptive)."""
        for desc, lbls, v in self.samples:
            if desc.name == metric and all((k, val) in lbls for k, val in labels.items()):
                return v
        return None


class Collector(Protocol):
    """A source of metrics. ``collect`` runs in a worker thread, must not block for long
    (each does its own timeouts) and reports absent hardware by emitting nothing."""

    name: str

    def collect(self, out: Emitter) -> None: ...


def run_collectors(collectors: list[Collector], out: Emitter) -> dict[str, str]:
    """Run each collector; one failing collector does not stop the others.

    Returns ``{collector name: error}`` for those that raised.
    """
    failures: dict[str, str] = {}
    for c in collectors:
        try:
            c.collect(out)
        except Exception as exc:  # noqa: BLE001 (a broken collector must not stop the agent)
            failures[c.name] = f"{type(exc).__name__}: {exc}"
            _log.warning("cannot collect %s metrics: %s", c.name, exc)
    return failures
