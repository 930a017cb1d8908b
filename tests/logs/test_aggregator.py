"""Window counts, patterns, rules and metric export."""

from __future__ import annotations

import asyncio

import pytest

from monitoringserver.errors import BadDataError
from monitoringserver.logs.aggregator import AggregationRules, LogAggregator
from monitoringserver.model.labels import labels_to_dict
from monitoringserver.model.logs import LEVELS, LogBatch, LogRecord
from monitoringserver.model.samples import SampleBatch


def _batch(*rows: tuple[str, str, str, str]) -> LogBatch:
    return LogBatch.from_records(
        LogRecord(1, msg, server_id=h, level=lv, logger=lg) for h, lv, lg, msg in rows
    )


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _samples(batch: SampleBatch) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(labels_to_dict(lbl).items())): v for lbl, _, v in batch.rows()}


def test_counts_and_patterns_export_as_cumulative_counters() -> None:
    clock = Clock()
    agg = LogAggregator(AggregationRules(pattern_levels=LEVELS), clock=clock)
    agg.aggregate(
        _batch(
            ("h1", "error", "db", "timeout after 30 ms"),
            ("h1", "error", "db", "timeout after 45 ms"),
            ("h2", "info", "", "started"),
        )
    )
    first = _samples(agg.snapshot(5))
    key = (
        ("__name__", "log_lines_total"),
        ("level", "error"),
        ("logger", "db"),
        ("server_id", "h1"),
    )
    assert first[key] == 2.0
    assert first[(("__name__", "log_lines_total"), ("level", "info"), ("server_id", "h2"))] == 1.0
    pats = agg.top_patterns(10)
    assert [(p.template, p.count) for p in pats] == [("timeout after <num> ms", 2), ("started", 1)]
    assert pats[0].samples == ["timeout after 30 ms", "timeout after 45 ms"]
    pkey = (
        ("__name__", "log_pattern_lines_total"),
        ("level", "error"),
        ("pattern_id", pats[0].pattern_id),
    )
    assert first[pkey] == 2.0
    agg.aggregate(_batch(("h1", "error", "db", "timeout after 1 ms")))
    assert agg.top_patterns(1, window=True)[0].window_count == 1
    second = _samples(agg.snapshot(6))
    assert second[key] == 3.0
    stats = agg.get_stats()
    assert (stats.lines_total, stats.window_lines, stats.patterns_tracked) == (4, 0, 2)
    assert agg.top_patterns(5, level="info")[0].template == "started"


def test_rules_select_what_is_aggregated() -> None:
    agg = LogAggregator()
    agg.set_rules(
        AggregationRules(
            group_by=("level",),
            pattern_levels=("error",),
            exclude_loggers=("noisy",),
            pattern_metric_top=0,
        )
    )
    agg.aggregate(
        _batch(
            ("h1", "error", "a", "x 1"),
            ("h2", "info", "a", "y 2"),
            ("h3", "error", "noisy", "z"),
        )
    )
    out = _samples(agg.snapshot(1))
    assert out == {
        (("__name__", "log_lines_total"), ("level", "error")): 1.0,
        (("__name__", "log_lines_total"), ("level", "info")): 1.0,
    }
    assert [p.template for p in agg.top_patterns()] == ["x <num>"]
    assert agg.rules.group_by == ("level",)
    assert agg.get_stats().rules.exclude_loggers == ("noisy",)


@pytest.mark.parametrize(
    "kwargs",
    [{"window_s": 0}, {"group_by": ("host",)}, {"max_patterns": 0}, {"pattern_metric_top": -1}],
)
def test_bad_rules(kwargs: dict[str, object]) -> None:
    with pytest.raises(BadDataError):
        AggregationRules(**kwargs)  # type: ignore[arg-type]


def test_patterns_are_bounded() -> None:
    agg = LogAggregator(AggregationRules(max_patterns=10, pattern_levels=LEVELS))
    for i in range(30):
        agg.aggregate(_batch(("h", "info", "", f"word{chr(97 + i % 26)}{i // 26} x")))
    assert agg.get_stats().patterns_tracked <= 10
    assert agg.get_stats().patterns_evicted >= 20


async def test_export_sends_to_sink_and_survives_sink_errors() -> None:
    got: list[SampleBatch] = []

    async def sink(batch: SampleBatch) -> None:
        got.append(batch)

    agg = LogAggregator(AggregationRules(window_s=0.01), sink=sink)
    assert await agg.export() == 0
    agg.aggregate(_batch(("h", "info", "", "m")))
    task = asyncio.create_task(agg.run())
    deadline = asyncio.get_running_loop().time() + 5
    while not got and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    await agg.aclose()
    await task
    assert got
    assert agg.get_stats().windows_exported >= 1

    async def bad(batch: SampleBatch) -> None:
        raise RuntimeError("down")

    agg2 = LogAggregator(sink=bad)
    agg2.aggregate(_batch(("h", "info", "", "m")))
    assert await agg2.export() == 0
    assert agg2.get_stats().export_errors == 1
    assert len(LogAggregator().snapshot()) == 0


_UUID1 = "3f2a9c1e-0b4d-4e5f-8a6b-7c8d9e0f1a2b"
_UUID2 = "00000000-aaaa-bbbb-cccc-dddddddddddd"


@pytest.mark.parametrize(
    ("first", "second", "shared"),
    [
        (f"req {_UUID1} failed", f"req {_UUID2} failed", True),
        ("t=4bf92f3577b34da6a3ce929d0e0e4736", "t=aaaabbbbccccdddd0000111122223333", True),
        ("pid 1234 killed (java)", "pid 98 killed (java)", True),
        ("GET /api/v1/items/17 500", "GET /api/v1/items/90210 500", True),
        ("cache miss for user", "cache hit for user", False),
        ("disk full on /var", "disk full on /tmp", False),
        ("héllo wörld 1", "héllo wörld 2", True),
    ],
)  # fmt: skip
def test_lines_differing_only_in_ids_and_numbers_share_a_pattern(
    first: str, second: str, shared: bool
) -> None:
    agg = LogAggregator()
    agg.aggregate(_batch(("h", "error", "app", first), ("h", "error", "app", second)))
    patterns = agg.top_patterns(10)
    assert (len(patterns) == 1) is shared
    assert sum(p.count for p in patterns) == 2


def test_shape_cache_keeps_templates_of_distinct_messages() -> None:
    agg = LogAggregator()
    lines = [("h", "warning", "app", f"user {i} logged in from 10.0.0.{i}") for i in range(50)]
    lines += [("h", "warning", "app", f"user {i} logged out") for i in range(50)]
    agg.aggregate(_batch(*lines))
    templates = sorted(p.template for p in agg.top_patterns(10))
    assert templates == ["user <num> logged in from <ip>", "user <num> logged out"]


def _state(agg: LogAggregator) -> tuple[object, ...]:
    patterns = sorted(
        (p.pattern_id, p.template, p.level, p.count, p.window_count, p.last_seen_ms, p.samples)
        for p in agg.top_patterns(10_000)
    )
    stats = agg.get_stats()
    return patterns, stats.lines_total, stats.patterns_evicted, _samples(agg.snapshot(5))


_MIXED = [
    ("a", "error", "app", "timeout after 5 ms talking to 10.0.0.1"),
    ("b", "error", "app", "timeout after 7 ms talking to 10.0.0.2"),
    ("a", "info", "web", "GET /x 200"),
    ("a", "warning", "noisy", "disk 91% full"),
    ("c", "warning", "app", "retry 3 of job 0x1f"),
    ("a", "error", "app", "timeout after 9 ms talking to 10.0.0.9"),
    ("c", "critical", "db", "lost 4 replicas"),
    ("b", "warning", "app", "retry 4 of job 0x2f"),
    ("b", "error", "app", "x" * 1500),
    ("b", "error", "app", "x" * 1500),
    ("b", "error", "app", "x" * 1500),
    ("a", "unknown", "", "something 1 happened"),
] + [("d", "error", "app", f"word{chr(97 + i % 26)}{i // 26} failed") for i in range(40)]


@pytest.mark.parametrize(
    "rules",
    [
        AggregationRules(),
        AggregationRules(samples_per_pattern=1, exclude_loggers=("noisy", "db")),
        AggregationRules(max_patterns=5, samples_per_pattern=2),  # evicts within a batch
        AggregationRules(max_patterns=3, group_by=("level",), pattern_levels=LEVELS),
        AggregationRules(patterns=False, exclude_loggers=("app",)),
    ],
)
def test_one_batch_counts_like_line_by_line(rules: AggregationRules) -> None:
    """Counting a whole batch (per-pattern sums, masks in C) leaves the same totals,
    patterns, samples and evictions as counting its lines one batch each."""
    whole, single = LogAggregator(rules, clock=Clock()), LogAggregator(rules, clock=Clock())
    whole.aggregate(_batch(*_MIXED))
    whole.aggregate(_batch(*reversed(_MIXED)))
    for row in [*_MIXED, *reversed(_MIXED)]:
        single.aggregate(_batch(row))
    assert _state(whole) == _state(single)
