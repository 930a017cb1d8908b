"""The report interval: fixed, or adaptive between 30 and 300 seconds (seed 003).

The adaptive rule, applied after every collection to the key gauges
(``cpu_usage_percent``, ``memory_usage_percent``, ``disk_usage_percent``, ``node_load1``):

1. **Change shrinks at once.** If any key value moved by more than ``jump`` (default
   10 points; for ``node_load1`` 10 % of the CPU count, at least 0.5) from the mean of
   its recent window, the interval drops to the minimum (30 s).
2. **Stability stretches.** If every key gauge's standard deviation over the window
   (the last ``window`` values, default 5, needing at least 3) is below ``stable``
   (default 2 points; load: 2 % of the CPU count), the interval grows by ``growth``
   (×1.5) up to the maximum (300 s).
3. Otherwise the interval stays.

The server may suggest an interval (RegisterResponse/Heartbeat/SendMetrics); a
suggestion within the bounds becomes the current interval and adaptation continues
from there. ``set_interval N`` switches to a fixed interval; ``set_interval adaptive``
switches back. A fixed interval from the configuration may go down to 1 s.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping

__all__ = ["KEY_GAUGES", "IntervalController"]

KEY_GAUGES = ("cpu_usage_percent", "memory_usage_percent", "disk_usage_percent", "node_load1")


class IntervalController:
    def __init__(
        self,
        *,
        fixed_s: float | None = None,
        min_s: float = 30.0,
        max_s: float = 300.0,
        window: int = 5,
        jump: float = 10.0,
        stable: float = 2.0,
        growth: float = 1.5,
        cpu_count: int = 1,
    ) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._jump = jump
        self._stable = stable
        self._growth = growth
        self._load_scale = max(1, cpu_count) / 100.0
        self._history: dict[str, deque[float]] = {k: deque(maxlen=window) for k in KEY_GAUGES}
        self.fixed_s = fixed_s
        self._adaptive_s = min_s

    @property
    def adaptive(self) -> bool:
        return self.fixed_s is None

    @property
    def current_s(self) -> float:
        return self._adaptive_s if self.fixed_s is None else self.fixed_s

    def set_fixed(self, seconds: float) -> None:
        if not (seconds >= 1.0 and math.isfinite(seconds)):
            raise ValueError(f"cannot set interval {seconds!r}: must be at least 1 s")
        self.fixed_s = seconds

    def set_adaptive(self) -> None:
        self.fixed_s = None

    def suggest(self, seconds: float) -> None:
        """A server suggestion (0 = none); only used in adaptive mode, clamped to bounds."""
        if seconds > 0 and self.fixed_s is None:
            self._adaptive_s = min(self.max_s, max(self.min_s, seconds))

    def observe(self, values: Mapping[str, float]) -> float:
        """Feed the key gauges of one collection; returns the next interval in seconds."""
        changed = False
        all_stable = True
        for key in KEY_GAUGES:
            if key not in values:
                continue
            v = values[key]
            hist = self._history[key]
            if key == "node_load1":  # load is relative to the CPU count
                jump, stable = max(0.5, 10.0 * self._load_scale), 2.0 * self._load_scale
            else:
                jump, stable = self._jump, self._stable
            if hist and abs(v - sum(hist) / len(hist)) > jump:
                changed = True
            hist.append(v)
            if len(hist) < 3 or _std(hist) >= stable:
                all_stable = False
        if changed:
            self._adaptive_s = self.min_s
        elif all_stable and any(len(self._history[k]) >= 3 for k in KEY_GAUGES):
            self._adaptive_s = min(self.max_s, self._adaptive_s * self._growth)
        return self.current_s


def _std(values: deque[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
