"""Runs Prometheus' promqltest scenario files against the engine.

The files live outside the repository (``../shared/conformance/promql``); the test
skips cleanly when they are absent. Each file is one test: it fails when the number of
passing cases drops below the checked-in floor (``conformance_floor.json``). The
per-file figures are attached to the report and printed at the end of the session.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.promql.promqltest import run_file

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE_DIR = REPO.parent / "shared" / "conformance" / "promql"
FLOOR_FILE = Path(__file__).with_name("conformance_floor.json")
FLOOR: dict[str, int] = json.loads(FLOOR_FILE.read_text())
FILES = sorted(p.name for p in CONFORMANCE_DIR.glob("*.test")) if CONFORMANCE_DIR.is_dir() else []


@pytest.mark.skipif(not FILES, reason=f"conformance files not found in {CONFORMANCE_DIR}")
@pytest.mark.parametrize("name", FILES or ["<none>"])
def test_conformance_file(name: str, record_property: Callable[[str, object], None]) -> None:
    results = run_file(CONFORMANCE_DIR / name)
    counts = collections.Counter(r.status for r in results)
    record_property(
        "conformance",
        {
            "file": name,
            "passed": counts["passed"],
            "failed": counts["failed"],
            "skipped": counts["skipped"],
        },
    )
    crashes = [r for r in results if r.reason.startswith("crash:")]
    assert not crashes, f"engine crashed: {crashes[:3]}"
    floor = FLOOR.get(name, 0)
    failed = [f"L{r.line} {r.query}: {r.reason}" for r in results if r.status == "failed"]
    assert counts["passed"] >= floor, (
        f"{name}: {counts['passed']} cases pass, floor is {floor}; failures:\n"
        + "\n".join(failed[:20])
    )


def test_floor_names_existing_files() -> None:
    if not FILES:
        pytest.skip("conformance files not present")
    assert set(FLOOR) <= set(FILES)
