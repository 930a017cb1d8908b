"""Pushgateway wire format: the grouping key in the URL path, and the pushed body.

Path (after ``/metrics/``): ``job/<job>{/<label>/<value>}``. A name ending in ``@base64``
takes a URL-safe base64 value (padding optional; ``=`` alone is the empty string), so
values may contain ``/``. Segments are percent-decoded. The job must not be empty;
label names must be valid and not repeat; ``__name__`` is refused.

Body: the text exposition format. Every pushed series gets the grouping labels; a pushed
series that carries a grouping label with a *different* value is refused (as the
Pushgateway does). Timestamps in the body are ignored: pushed samples are stored at the
server's push time. Protobuf bodies are refused with a clear error.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from dataclasses import dataclass

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.prom_text import ExpositionParser, family_of
from monitoringserver.model.labels import METRIC_NAME, Labels, validate_label_name

__all__ = ["PushBody", "parse_grouping_path", "parse_push_body"]

_B64 = "@base64"


def _decode_b64(text: str, where: str) -> str:
    if text == "=":
        return ""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        return raw.decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise BadDataError(f"cannot parse grouping key: {where}: invalid base64: {exc}") from exc


def parse_grouping_path(raw_path: str) -> Labels:
    """``job/<job>/<name>/<value>...`` (raw, still percent-encoded) → grouping labels."""
    parts = raw_path.strip("/").split("/")
    if len(parts) < 2 or len(parts) % 2:
        raise BadDataError(
            f"cannot parse grouping key {raw_path!r}: expected job/<job>{{/<label>/<value>}}"
        )
    pairs: dict[str, str] = {}
    for i in range(0, len(parts), 2):
        name = urllib.parse.unquote(parts[i])
        value = urllib.parse.unquote(parts[i + 1])
        if name.endswith(_B64):
            name = name[: -len(_B64)]
            value = _decode_b64(value, name)
        if i == 0 and name != "job":
            raise BadDataError(f"cannot parse grouping key {raw_path!r}: must start with job/")
        if name == METRIC_NAME:
            raise BadDataError("cannot parse grouping key: label __name__ is not allowed")
        try:
            validate_label_name(name)
        except BadDataError as exc:
            raise BadDataError(f"cannot parse grouping key: {exc}") from exc
        if name in pairs:
            raise BadDataError(f"cannot parse grouping key: label {name!r} repeats")
        pairs[name] = value
    if not pairs["job"]:
        raise BadDataError("cannot parse grouping key: job must not be empty")
    return tuple(sorted((k, v) for k, v in pairs.items() if v != ""))


@dataclass(frozen=True, slots=True)
class PushBody:
    """Pushed series ``(labels incl. grouping labels, value, family)`` and metadata."""

    samples: list[tuple[Labels, float, str]]
    types: dict[str, str]
    helps: dict[str, str]


def parse_push_body(
    text: str, grouping: Labels, parser: ExpositionParser, *, content_type: str = ""
) -> PushBody:
    """Parse a pushed body (see the module docstring); raises ``BadDataError``."""
    if "protobuf" in content_type.lower():
        raise BadDataError(
            "cannot parse push body: the protobuf format is not supported; push the text "
            "format (Content-Type: text/plain; version=0.0.4)"
        )
    exp = parser.parse(text, default_ts_ms=0)
    group = dict(grouping)
    samples: list[tuple[Labels, float, str]] = []
    for labels, _ts, value in exp.batch.rows():
        merged = dict(labels)
        for name, want in group.items():
            have = merged.get(name)
            if have is not None and have != want:
                raise BadDataError(
                    f"cannot accept pushed series {merged.get(METRIC_NAME)}: label {name}="
                    f"{have!r} conflicts with the grouping key ({name}={want!r})"
                )
            merged[name] = want
        final = tuple(sorted((k, v) for k, v in merged.items() if v != ""))
        samples.append((final, value, family_of(merged[METRIC_NAME], exp.types)))
    return PushBody(samples, dict(exp.types), dict(exp.helps))
