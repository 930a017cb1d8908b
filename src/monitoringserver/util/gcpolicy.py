"""The server process's policy for Python's cyclic garbage collector, and a recorder of
what the collector costs.

Why: the server keeps large, long-lived, GC-tracked structures (the series index's label
tuples and postings, queued log lines, the FastAPI app) and CPython's full (generation 2)
collection walks every tracked object each time the old generation has grown by 25 %.
While the series index grows from 0 to a million series that is a geometric sequence of
ever longer pauses of the event loop, and during log ingest every queued line is walked.

The policy (:func:`apply_gc_policy`), applied once at process start-up:

* ``gc.collect()`` then ``gc.freeze()``: what exists after start-up (modules, the app,
  the series index loaded at start) moves to the permanent generation.
* *Freeze after full collection*: right after each generation-2 collection every tracked
  object is live (the collection just examined all of them), so ``gc.freeze()`` there
  moves only live objects out of the collector's sight; the next full collection walks
  only what survived since. CPython then also sizes its 25 % growth rule on that small
  remainder, so full collections become frequent and short: each object is walked by
  one full collection instead of by every one of a geometric series. Frozen objects are
  still freed by reference counting; only *cyclic* garbage among them waits, and at most
  ``unfreeze_interval_s``: the first full collection after that interval starts with
  ``gc.unfreeze()`` and so examines everything again.
* CPython's thresholds stay (700, 10, 10) by default. Measured (docs/architecture.md):
  a generation-0 threshold of 10,000 or 50,000 made log ingest's few collections rarer
  (0.4 s less GC per million lines) but made each young collection walk more while the
  series index grows (a 151 ms generation-1 pause at 50,000, against 17 ms at most with 700).

Nothing here touches the agent's own policy (:mod:`monitoringserver.agent.memory`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "GcGenerationStats",
    "GcPolicy",
    "GcPolicyHandle",
    "GcRecorder",
    "apply_gc_policy",
]

_GC_CALLBACK_INFO = dict[str, int]


@dataclass(frozen=True, slots=True)
class GcPolicy:
    """How the server process tunes the cyclic garbage collector.

    ``threshold0``: allocations minus deallocations of tracked objects between
    generation-0 collections (CPython's default, 700, is kept: see the module
    docstring). ``freeze_at_start``: collect and freeze everything alive when the
    policy is applied. ``freeze_after_full``: freeze
    after every generation-2 collection. ``unfreeze_interval_s``: seconds after which
    the next generation-2 collection first unfreezes everything (bounds how long cyclic
    garbage among frozen objects is kept); 0 unfreezes before every full collection.
    """

    enabled: bool = True
    threshold0: int = 700
    freeze_at_start: bool = True
    freeze_after_full: bool = True
    unfreeze_interval_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.threshold0 < 1:
            raise ValueError(f"cannot accept GC threshold0={self.threshold0}: must be >= 1")
        if self.unfreeze_interval_s < 0:
            raise ValueError(
                f"cannot accept GC unfreeze_interval_s={self.unfreeze_interval_s}: must be >= 0"
            )


class GcPolicyHandle:
    """The applied policy; :meth:`remove` restores the thresholds and callback it changed
    (frozen objects are unfrozen). Counters are updated from the collecting thread."""

    def __init__(self, policy: GcPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._previous_thresholds = gc.get_threshold()
        self._last_unfreeze = clock()
        self._installed = False
        #: Full collections followed by a freeze, and how many started with an unfreeze.
        self.freezes = 0
        self.unfreezes = 0

    def _install(self) -> None:
        p = self.policy
        _, t1, t2 = self._previous_thresholds
        gc.set_threshold(p.threshold0, t1, t2)
        if p.freeze_at_start:
            gc.collect()
            gc.freeze()
        if p.freeze_after_full:
            gc.callbacks.append(self._on_collect)
        self._installed = True

    def _on_collect(self, phase: str, info: _GC_CALLBACK_INFO) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            now = self._clock()
            if now - self._last_unfreeze >= self.policy.unfreeze_interval_s:
                # Before the collection starts: it then examines the frozen objects too.
                gc.unfreeze()
                self._last_unfreeze = now
                self.unfreezes += 1
        else:
            # Every tracked object just survived a full collection, so all are live.
            gc.freeze()
            self.freezes += 1

    def remove(self) -> None:
        """Undo :func:`apply_gc_policy` (tests; the server keeps it for its lifetime)."""
        if not self._installed:
            return
        if self._on_collect in gc.callbacks:
            gc.callbacks.remove(self._on_collect)
        gc.unfreeze()
        gc.set_threshold(*self._previous_thresholds)
        self._installed = False


def apply_gc_policy(
    policy: GcPolicy, *, clock: Callable[[], float] = time.monotonic
) -> GcPolicyHandle:
    """Apply ``policy`` to this process (call once, after start-up objects exist).

    With ``policy.enabled`` false nothing changes and the returned handle is inert.
    """
    handle = GcPolicyHandle(policy, clock)
    if policy.enabled:
        handle._install()
    return handle


@dataclass(slots=True)
class GcGenerationStats:
    """Collections of one generation: count, seconds spent, objects collected."""

    collections: int = 0
    seconds: float = 0.0
    max_seconds: float = 0.0
    collected: int = 0


@dataclass
class GcRecorder:
    """Records every collection's generation, duration and result via ``gc.callbacks``.

    Durations are wall seconds of the collecting thread (it holds the GIL meanwhile, so
    this is time no other Python thread ran). Install with :meth:`install`; read with
    :meth:`snapshot`; :meth:`remove` when done. Callbacks run with the GIL held and
    take no lock (a lock here could deadlock with a collection triggered under it).
    """

    clock: Callable[[], float] = time.perf_counter
    generations: list[GcGenerationStats] = field(
        default_factory=lambda: [GcGenerationStats() for _ in range(3)]
    )
    _started: float = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._on_collect)

    def remove(self) -> None:
        if self._on_collect in gc.callbacks:
            gc.callbacks.remove(self._on_collect)

    def _on_collect(self, phase: str, info: _GC_CALLBACK_INFO) -> None:
        if phase == "start":
            self._started = self.clock()
            return
        elapsed = self.clock() - self._started
        stats = self.generations[info["generation"]]
        stats.collections += 1
        stats.seconds += elapsed
        stats.max_seconds = max(stats.max_seconds, elapsed)
        stats.collected += info["collected"]

    def snapshot(self) -> dict[str, dict[str, float]]:
        """``{"gen0": {"collections", "seconds", "max_seconds", "collected"}, ...}``.

        No lock: a collection may run (and call back) on any thread, even while this
        allocates; a snapshot may be one collection behind, never torn within a field.
        """
        return {
            f"gen{i}": {
                "collections": s.collections,
                "seconds": round(s.seconds, 6),
                "max_seconds": round(s.max_seconds, 6),
                "collected": s.collected,
            }
            for i, s in enumerate(self.generations)
        }
