"""Runs promqltest scenario files against the engine.

``run_file(path)`` executes every ``eval`` of one file against :class:`Engine` over a
:class:`MemoryQuerier` and returns one :class:`CaseResult` per case (passed, failed
with a reason, or skipped with a reason).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from monitoringserver.errors import MonitoringError
from monitoringserver.promql import Engine, EngineOptions, Result
from tests.promql.memory_querier import MemoryQuerier
from tests.promql.promqltest_format import (
    EPSILON,
    SERIES_LINE,
    Case,
    CaseResult,
    LoadCmd,
    Skip,
    expand_points,
    expanded_tokens,
    parse_file,
    parse_series,
)

__all__ = ["CaseResult", "run_case", "run_file"]


def _close(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if a == b:
        return True
    if math.isinf(a) or math.isinf(b):
        return False
    return abs(a - b) <= EPSILON * max(abs(a), abs(b)) or abs(a - b) < 1e-12


def _load(querier: MemoryQuerier, interval_ms: int, lines: list[str], nhcb: bool) -> None:
    for text in lines:
        m = SERIES_LINE.match(text)
        if not m:
            continue
        head, spec = m.group(1), m.group(2)
        start_ts = spec.startswith("@st") or head.endswith("@st")
        if start_ts:
            head = head.removesuffix("@st")
        try:
            labels = parse_series(head)
        except Skip:
            continue
        if start_ts:
            querier.flag(labels, "start timestamps (not supported)")
            continue
        name = dict(labels).get("__name__", "")
        if nhcb and name.endswith("_bucket"):
            base = tuple(
                (k, name[: -len("_bucket")] if k == "__name__" else v)
                for k, v in labels
                if k != "le"
            )
            querier.flag(base, "native histogram series")
        try:
            points = expand_points(spec)
        except Skip:
            querier.flag(labels, "native histogram series")
            for i, tok in enumerate(expanded_tokens(spec)):
                if tok is not None:
                    querier.add(labels, i * interval_ms, tok)
            continue
        for i, v in enumerate(points):
            if v is not None:
                querier.add(labels, i * interval_ms, v)


def _check(case: Case, result: Result, querier: MemoryQuerier) -> str | None:
    """None when ``result`` matches ``case``, else a reason."""
    for kind, notes, expects, none in (
        ("warn", result.warnings, case.warn, case.no_warn),
        ("info", result.infos, case.info, case.no_info),
    ):
        if none and notes:
            return f"unexpected {kind}: {notes}"
        for mtype, val in expects:
            if not notes:
                return f"expected a {kind} annotation, got none"
            if mtype == "msg" and val is not None and val.strip() not in notes:
                return f"expected {kind} {val!r}, got {notes}"
            if (
                mtype == "regex"
                and val is not None
                and not any(re.search(val.strip(), g) for g in notes)
            ):
                return f"expected {kind} matching {val!r}, got {notes}"
    if case.expect_string is not None:
        if result.result_type != "string" or result.string != case.expect_string:
            got_s = f"{result.result_type} {result.string!r}"
            return f"expected string {case.expect_string!r}, got {got_s}"
        return None
    if result.result_type == "scalar":
        if len(case.expected) != 1 or case.expected[0][0] is not None:
            return f"got scalar {result.scalar}, expected {case.expected}"
        exp = case.expected[0][1]
        if len(exp) != 1 or exp[0] is None or not _close(exp[0], result.scalar):
            return f"got scalar {result.scalar}, expected {exp}"
        return None
    expected = [(lbl if lbl is not None else (), pts) for lbl, pts in case.expected]
    got = {s.labels: s for s in result.series}
    if len(got) != len(result.series):
        return "duplicate series in result"
    exp_map = dict(expected)
    if set(got) != set(exp_map):
        missing = [k for k in exp_map if k not in got][:3]
        extra = [k for k in got if k not in exp_map][:3]
        return f"series differ: missing {missing}, unexpected {extra}"
    if case.ordered and [s.labels for s in result.series] != [lbl for lbl, _ in expected]:
        return "order differs"
    if case.step_ms == 0 and result.result_type == "vector":
        for lbl, pts in expected:
            vals = [p for p in pts if p is not None]
            if len(vals) != 1:
                return f"bad expectation for {lbl}"
            if not _close(vals[0], float(got[lbl].values[0])):
                return f"{lbl}: expected {vals[0]}, got {got[lbl].values[0]}"
        return None
    if case.step_ms == 0:
        if case.range_vector is None:
            start, step = None, None
        else:
            start, _end, step = case.range_vector
        for lbl, pts in expected:
            s = got[lbl]
            exp_vals = [p for p in pts if p is not None]
            if len(exp_vals) != len(s.values) or not all(
                _close(a, float(b)) for a, b in zip(exp_vals, s.values, strict=True)
            ):
                return f"{lbl}: expected {exp_vals}, got {s.values.tolist()}"
            if start is not None and step is not None:
                exp_ts = [start + k * step for k, p in enumerate(pts) if p is not None]
                if exp_ts != s.ts_ms.tolist():
                    return f"{lbl}: expected timestamps {exp_ts}, got {s.ts_ms.tolist()}"
        return None
    steps = np.arange(case.start_ms, case.end_ms + 1, case.step_ms)
    for lbl, pts in expected:
        s = got[lbl]
        exp_pts = {int(steps[k]): p for k, p in enumerate(pts) if p is not None and k < len(steps)}
        got_pts = dict(zip(s.ts_ms.tolist(), s.values.tolist(), strict=True))
        if set(exp_pts) != set(got_pts):
            return f"{lbl}: expected steps {sorted(exp_pts)}, got {sorted(got_pts)}"
        for t, v in exp_pts.items():
            if not _close(v, got_pts[t]):
                return f"{lbl} at {t}: expected {v}, got {got_pts[t]}"
    return None


def run_case(engine: Engine, querier: MemoryQuerier, case: Case) -> tuple[str, str]:
    if case.skip:
        return "skipped", case.skip
    if "start_timestamp(" in case.query:
        return "skipped", "start_timestamp() needs start (created) timestamps, not stored"
    if re.search(r"[<>]/", case.query):
        return "skipped", "native histogram trim operator (</, >/)"
    querier.touched = set()
    try:
        if case.step_ms:
            result = engine.range(case.query, case.start_ms, case.end_ms, case.step_ms)
        else:
            result = engine.instant(case.query, case.start_ms)
    except MonitoringError as exc:
        if not case.expect_fail:
            if querier.touched:
                return "skipped", f"touches {', '.join(sorted(querier.touched))}"
            return "failed", f"error: {exc}"
        msg = str(exc)
        if case.fail_msg is not None and case.fail_msg not in msg:
            return "failed", f"error {msg!r} does not contain {case.fail_msg!r}"
        if case.fail_regex is not None and not re.search(case.fail_regex, msg):
            return "failed", f"error {msg!r} does not match {case.fail_regex!r}"
        return "passed", ""
    if case.expect_fail:
        if querier.touched:
            return "skipped", f"touches {', '.join(sorted(querier.touched))}"
        return "failed", "expected failure, query succeeded"
    reason = _check(case, result, querier)
    if reason and querier.touched:
        return "skipped", f"touches {', '.join(sorted(querier.touched))} ({reason})"
    return ("failed", reason) if reason else ("passed", "")


def run_file(path: Path) -> list[CaseResult]:
    querier = MemoryQuerier()
    engine = Engine(querier, EngineOptions(timeout_s=30.0))
    out: list[CaseResult] = []
    for kind, payload in parse_file(path):
        if kind == "clear":
            querier.clear()
        elif kind == "load":
            assert isinstance(payload, LoadCmd)
            _load(querier, payload.interval_ms, payload.lines, payload.nhcb)
        else:
            assert isinstance(payload, Case)
            try:
                status, reason = run_case(engine, querier, payload)
            except Exception as exc:  # a crash is a failed case, not a broken runner
                status, reason = "failed", f"crash: {type(exc).__name__}: {exc}"
            out.append(CaseResult(path.name, payload.line, payload.query, status, reason))
    return out
