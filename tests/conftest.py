"""Shared fixtures (temporary data directories, free ports) and the PromQL conformance
summary, which must live here: under xdist only the root conftest reaches the controller."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for programs that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    rows = []
    for reports in terminalreporter.stats.values():
        for report in reports:
            for key, value in getattr(report, "user_properties", []):
                if key == "conformance" and getattr(report, "when", "") == "call":
                    rows.append(value)
    if not rows:
        return
    terminalreporter.section("PromQL conformance (passed / failed / skipped)")
    total = [0, 0, 0]
    for row in sorted(rows, key=lambda r: r["file"]):
        terminalreporter.write_line(
            f"{row['file']:28s} {row['passed']:5d} {row['failed']:5d} {row['skipped']:5d}"
        )
        total = [total[0] + row["passed"], total[1] + row["failed"], total[2] + row["skipped"]]
    terminalreporter.write_line(f"{'total':28s} {total[0]:5d} {total[1]:5d} {total[2]:5d}")
