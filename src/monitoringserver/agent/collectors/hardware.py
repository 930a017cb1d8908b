"""Hardware sensors: temperatures, fans, battery, CPU frequency (node_exporter names).

Absent sensors produce no series. ``sensors`` is the psutil-like module to read
(injectable for tests).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import psutil

from monitoringserver.agent.metrics import Emitter, gauge

__all__ = ["HardwareCollector"]

TEMP = gauge("node_hwmon_temp_celsius", "celsius", "Hardware monitor temperature.")
TEMP_CRIT = gauge(
    "node_hwmon_temp_crit_celsius", "celsius", "Hardware monitor critical temperature."
)
FAN = gauge("node_hwmon_fan_rpm", "rpm", "Hardware monitor fan speed.")
BATTERY = gauge("node_power_supply_capacity", "percent", "Battery charge.")
ONLINE = gauge("node_power_supply_online", "", "1 when on external power.")
BATTERY_LEFT = gauge(
    "node_power_supply_time_to_empty_seconds", "seconds", "Estimated battery time left."
)
FREQ = gauge("node_cpu_scaling_frequency_hertz", "hertz", "Current CPU frequency.")
FREQ_MAX = gauge("node_cpu_scaling_frequency_max_hertz", "hertz", "Maximum CPU frequency.")


class HardwareCollector:
    name = "hardware"

    def __init__(self, sensors: ModuleType | Any = psutil) -> None:
        self._s = sensors

    def collect(self, out: Emitter) -> None:
        self._temperatures(out)
        self._fans(out)
        self._battery(out)
        self._frequency(out)

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        f = getattr(self._s, fn, None)
        if f is None:
            return None
        try:
            return f(*args, **kwargs)
        except (OSError, RuntimeError, NotImplementedError):
            return None

    def _temperatures(self, out: Emitter) -> None:
        for chip, entries in (self._call("sensors_temperatures") or {}).items():
            for i, e in enumerate(entries):
                labels = {"chip": chip, "sensor": e.label or f"temp{i + 1}"}
                out.add(TEMP, e.current, labels)
                if e.critical:
                    out.add(TEMP_CRIT, e.critical, labels)

    def _fans(self, out: Emitter) -> None:
        for chip, entries in (self._call("sensors_fans") or {}).items():
            for i, e in enumerate(entries):
                out.add(FAN, e.current, {"chip": chip, "sensor": e.label or f"fan{i + 1}"})

    def _battery(self, out: Emitter) -> None:
        bat = self._call("sensors_battery")
        if bat is None:
            return
        labels = {"power_supply": "BAT0"}
        out.add(BATTERY, bat.percent, labels)
        out.add(ONLINE, float(bool(bat.power_plugged)), labels)
        if isinstance(bat.secsleft, int | float) and bat.secsleft >= 0:
            out.add(BATTERY_LEFT, bat.secsleft, labels)

    def _frequency(self, out: Emitter) -> None:
        freqs = self._call("cpu_freq", percpu=True) or []
        for i, f in enumerate(freqs):
            if f.current:
                out.add(FREQ, f.current * 1e6, {"cpu": str(i)})
            if f.max:
                out.add(FREQ_MAX, f.max * 1e6, {"cpu": str(i)})
