"""The server's GC policy: thresholds, freezing, bounded retention of cyclic garbage,
and the collection recorder."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from monitoringserver.util.gcpolicy import GcPolicy, GcRecorder, apply_gc_policy


class Cycle:
    """A node that refers to itself: only the cyclic collector can free it."""

    alive = 0

    def __init__(self) -> None:
        self.me = self
        Cycle.alive += 1

    def __del__(self) -> None:
        Cycle.alive -= 1


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def clean_gc() -> Iterator[None]:
    """Each test starts and ends with CPython's thresholds and nothing frozen."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()


def test_apply_raises_threshold_freezes_and_remove_restores() -> None:
    before = gc.get_threshold()
    handle = apply_gc_policy(GcPolicy(threshold0=12_345))
    try:
        assert gc.get_threshold() == (12_345, before[1], before[2])
        assert gc.get_freeze_count() > 0
        assert handle._on_collect in gc.callbacks
    finally:
        handle.remove()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert handle._on_collect not in gc.callbacks
    handle.remove()  # idempotent


def test_disabled_policy_changes_nothing() -> None:
    before = gc.get_threshold()
    handle = apply_gc_policy(GcPolicy(enabled=False))
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert handle._on_collect not in gc.callbacks
    handle.remove()


@pytest.mark.parametrize(
    ("field", "value"), [("threshold0", 0), ("threshold0", -5), ("unfreeze_interval_s", -1.0)]
)
def test_invalid_policy_is_refused(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"cannot accept GC {field}"):
        GcPolicy(**{field: value})  # type: ignore[arg-type]


def test_full_collection_freezes_survivors_only() -> None:
    handle = apply_gc_policy(GcPolicy(freeze_at_start=False))
    try:
        assert gc.get_freeze_count() == 0
        survivor = [[i] for i in range(100)]
        garbage = Cycle()
        ref = weakref.ref(garbage)
        del garbage
        gc.collect()
        assert ref() is None  # collected by that full collection, not frozen
        assert handle.freezes == 1
        assert gc.get_freeze_count() >= len(survivor)
        assert all(gc.is_tracked(x) for x in survivor)
    finally:
        handle.remove()


def test_cyclic_garbage_made_after_a_freeze_is_collected() -> None:
    handle = apply_gc_policy(GcPolicy())
    try:
        refs = []
        for _ in range(50):
            c = Cycle()
            refs.append(weakref.ref(c))
        del c
        gc.collect(0)
        assert all(r() is None for r in refs)
    finally:
        handle.remove()


@pytest.mark.parametrize(
    ("interval_s", "advance_s", "freed"),
    [(0.0, 0.0, True), (60.0, 59.0, False), (60.0, 60.0, True), (3600.0, 4000.0, True)],
)
def test_frozen_cyclic_garbage_waits_at_most_the_unfreeze_interval(
    interval_s: float, advance_s: float, freed: bool
) -> None:
    clock = Clock()
    handle = apply_gc_policy(GcPolicy(unfreeze_interval_s=interval_s), clock=clock)
    try:
        c = Cycle()
        ref = weakref.ref(c)
        gc.collect()  # c is live: frozen with everything else
        assert gc.get_freeze_count() > 0
        del c
        clock.now += advance_s
        gc.collect()
        assert (ref() is None) is freed
        clock.now += interval_s
        gc.collect()  # past the interval at the latest: unfrozen and collected
        assert ref() is None
        assert handle.unfreezes >= 1
    finally:
        handle.remove()


@pytest.mark.parametrize("policy", [GcPolicy(), GcPolicy(threshold0=1000), GcPolicy(enabled=False)])
def test_memory_stays_bounded_while_making_cyclic_garbage(policy: GcPolicy) -> None:
    gc.collect()
    base = Cycle.alive
    handle = apply_gc_policy(policy)
    try:
        threshold0 = gc.get_threshold()[0]
        peak = 0
        for i in range(200_000):
            Cycle()
            if i % 1000 == 0:
                peak = max(peak, Cycle.alive - base)
        # gen-0 collections free dead cycles as they go: never more than a few thresholds.
        assert peak <= 3 * threshold0
    finally:
        handle.remove()
    gc.collect()
    assert Cycle.alive == base


def test_recorder_counts_collections_by_generation() -> None:
    ticks = iter(float(i) for i in range(100))
    recorder = GcRecorder(clock=lambda: next(ticks))
    recorder.install()
    try:
        gc.collect(0)
        gc.collect(2)
        gc.collect(2)
    finally:
        recorder.remove()
    snap = recorder.snapshot()
    assert snap["gen0"]["collections"] >= 1
    assert snap["gen2"]["collections"] == 2
    assert snap["gen2"]["seconds"] == 2.0  # each collection: one tick of the fake clock
    assert snap["gen2"]["max_seconds"] == 1.0
    assert recorder._on_collect not in gc.callbacks
    recorder.remove()
