"""Label sets: the identity of a series.

A :data:`Labels` value is a tuple of ``(name, value)`` pairs sorted by name, with no
empty values and no duplicate names. The metric name is the ``__name__`` label. Tuples
are hashable and cheap, so they serve as dictionary keys in the series index.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Mapping

from monitoringserver.errors import BadDataError

__all__ = [
    "METRIC_NAME",
    "Labels",
    "canonical",
    "get",
    "labels_to_dict",
    "make_labels",
    "metric_name",
    "sanitize_metric_name",
    "sorted_within",
    "validate_label_name",
    "validate_metric_name",
    "with_label",
    "without",
]

METRIC_NAME = "__name__"

Labels = tuple[tuple[str, str], ...]

_METRIC_NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_INVALID_METRIC_CHARS = re.compile(r"[^a-zA-Z0-9_:]")
_TOP = "\U0010ffff"  # above every valid label name


def make_labels(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Build a canonical label set; empty values are dropped (Prometheus semantics)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out: dict[str, str] = {}
    for name, value in items:
        if value != "":
            out[name] = value
    return tuple(sorted(out.items()))


def labels_to_dict(labels: Labels) -> dict[str, str]:
    return dict(labels)


def get(labels: Labels, name: str) -> str:
    """The value of ``name``, or ``""`` when absent."""
    for key, value in labels:
        if key == name:
            return value
    return ""


def metric_name(labels: Labels) -> str:
    return get(labels, METRIC_NAME)


def with_label(labels: Labels, name: str, value: str) -> Labels:
    """A copy with ``name`` set to ``value`` (or removed when ``value`` is empty)."""
    d = dict(labels)
    d[name] = value
    return make_labels(d)


def without(labels: Labels, names: Iterable[str]) -> Labels:
    drop = set(names)
    return tuple(p for p in labels if p[0] not in drop)


def canonical(labels: Labels) -> str:
    """Prometheus text form, ``name{a="b",c="d"}``: stable, used as the series key on disk."""
    name = metric_name(labels)
    rest = ",".join(f'{k}="{_escape(v)}"' for k, v in labels if k != METRIC_NAME)
    return f"{name}{{{rest}}}" if rest or not name else name


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def validate_metric_name(name: str) -> None:
    if not _METRIC_NAME_RE.fullmatch(name):
        raise BadDataError(
            f"cannot accept metric name {name!r}: must match [a-zA-Z_:][a-zA-Z0-9_:]*"
        )


def validate_label_name(name: str) -> None:
    if name != METRIC_NAME and not _LABEL_NAME_RE.fullmatch(name):
        raise BadDataError(f"cannot accept label name {name!r}: must match [a-zA-Z_][a-zA-Z0-9_]*")


def sanitize_metric_name(name: str) -> str:
    """Map any string to a valid metric name (``disk-io.read`` → ``disk_io_read``)."""
    cleaned = _INVALID_METRIC_CHARS.sub("_", name)
    if not cleaned or cleaned[0].isdigit():
        cleaned = "_" + cleaned
    return cleaned


def sorted_within(names: list[str], stops: list[int]) -> bool:
    """Whether the label names of each of several label sets, laid end to end in
    ``names`` (set ``i`` ending before ``stops[i]``), strictly ascend: sorted and
    without repeats. One C-level pass over all names."""
    following = names[1:]
    following.append(_TOP)
    for stop in stops:
        if stop:
            following[stop - 1] = _TOP  # a set's last name is compared with nothing
    return all(map(operator.lt, names, following))
