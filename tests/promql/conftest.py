"""Prints the PromQL conformance figures per file at the end of the session."""

from __future__ import annotations

import pytest


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
