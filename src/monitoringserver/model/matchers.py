"""Label matchers (``=``, ``!=``, ``=~``, ``!~``) with Prometheus semantics.

Regular expressions are fully anchored. A matcher on a label the series does not
have sees the empty string, so ``{foo=""}`` selects series without ``foo``.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field

from monitoringserver.errors import BadDataError
from monitoringserver.model.labels import Labels, get

__all__ = ["MatchOp", "Matcher", "matches_all"]


class MatchOp(enum.Enum):
    EQ = "="
    NEQ = "!="
    RE = "=~"
    NRE = "!~"


@dataclass(frozen=True, slots=True)
class Matcher:
    name: str
    op: MatchOp
    value: str
    _regex: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.op in (MatchOp.RE, MatchOp.NRE):
            try:
                compiled = re.compile(f"(?s:{self.value})")
            except re.error as exc:
                raise BadDataError(f"cannot parse regex {self.value!r}: {exc}") from exc
            object.__setattr__(self, "_regex", compiled)

    @classmethod
    def eq(cls, name: str, value: str) -> Matcher:
        return cls(name, MatchOp.EQ, value)

    def matches(self, value: str) -> bool:
        if self.op is MatchOp.EQ:
            return value == self.value
        if self.op is MatchOp.NEQ:
            return value != self.value
        assert self._regex is not None
        hit = self._regex.fullmatch(value) is not None
        return hit if self.op is MatchOp.RE else not hit

    def matches_empty(self) -> bool:
        """Whether a series lacking this label is selected."""
        return self.matches("")

    def __str__(self) -> str:
        escaped = self.value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{self.name}{self.op.value}"{escaped}"'


def matches_all(matchers: tuple[Matcher, ...] | list[Matcher], labels: Labels) -> bool:
    return all(m.matches(get(labels, m.name)) for m in matchers)
