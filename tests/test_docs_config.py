"""docs/configuration.md documents every option of every section with its real default."""

from __future__ import annotations

import re
from pathlib import Path

from monitoringserver.config import SECTIONS, fields_of

DOC = Path(__file__).parent.parent / "docs" / "configuration.md"


def _render(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "(unset)"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def _documented() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current = ""
    for line in DOC.read_text().splitlines():
        header = re.fullmatch(r"## \[(\w+)\]", line.strip())
        if header:
            current = header.group(1)
            sections[current] = {}
            continue
        row = re.match(r"\| `(\w+)` \| `([^`]*)` \|", line)
        if row and current:
            sections[current][row.group(1)] = row.group(2)
    return sections


def test_every_option_is_documented_with_its_default() -> None:
    documented = _documented()
    assert set(documented) == set(SECTIONS)
    for name, cls in SECTIONS.items():
        defaults = cls()
        expected = {key: _render(getattr(defaults, key)) for key in fields_of(cls)}
        rows = "\n".join(f"| `{k}` | `{v}` | ... |" for k, v in expected.items())
        assert documented[name] == expected, (
            f"docs/configuration.md [{name}] is out of date; its rows should be:\n{rows}"
        )
