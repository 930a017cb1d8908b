"""NVIDIA GPUs through NVML (``nvidia-ml-py``, extra ``gpu``), when importable.

Per GPU (labels ``gpu`` index, ``name``, ``uuid``): utilisation, memory used/total,
temperature, power draw. ``nvml`` is the ``pynvml`` module (injectable for tests).
No library, no driver or no GPU: no series.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from monitoringserver.agent.metrics import Emitter, gauge

__all__ = ["GpuCollector", "load_nvml"]

_log = logging.getLogger(__name__)

UTIL = gauge("nvidia_gpu_utilization_percent", "percent", "GPU busy share.")
MEM_UTIL = gauge("nvidia_gpu_memory_utilization_percent", "percent", "Memory controller busy.")
MEM_USED = gauge("nvidia_gpu_memory_used_bytes", "bytes", "GPU memory in use.")
MEM_TOTAL = gauge("nvidia_gpu_memory_total_bytes", "bytes", "GPU memory size.")
TEMP = gauge("nvidia_gpu_temperature_celsius", "celsius", "GPU core temperature.")
POWER = gauge("nvidia_gpu_power_watts", "watts", "GPU power draw.")


def load_nvml() -> Any | None:
    """The ``pynvml`` module, or None when nvidia-ml-py is not installed."""
    try:
        return importlib.import_module("pynvml")
    except ImportError:
        return None


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class GpuCollector:
    name = "gpu"

    def __init__(self, nvml: Any | None) -> None:
        self._nvml = nvml
        self._ready = False

    def _init(self) -> bool:
        if self._nvml is None:
            return False
        if not self._ready:
            try:
                self._nvml.nvmlInit()
            except Exception as exc:  # noqa: BLE001 (NVMLError: no driver; collector goes quiet)
                _log.info("NVML unavailable, GPU metrics off: %s", exc)
                self._nvml = None
                return False
            self._ready = True
        return True

    def collect(self, out: Emitter) -> None:
        if not self._init():
            return
        nv: Any = self._nvml
        for i in range(nv.nvmlDeviceGetCount()):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            labels = {
                "gpu": str(i),
                "name": _text(nv.nvmlDeviceGetName(h)),
                "uuid": _text(nv.nvmlDeviceGetUUID(h)),
            }
            rates = nv.nvmlDeviceGetUtilizationRates(h)
            out.add(UTIL, rates.gpu, labels)
            out.add(MEM_UTIL, rates.memory, labels)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            out.add(MEM_USED, mem.used, labels)
            out.add(MEM_TOTAL, mem.total, labels)
            out.add(TEMP, nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU), labels)
            try:
                out.add(POWER, nv.nvmlDeviceGetPowerUsage(h) / 1000.0, labels)
            except Exception:  # noqa: BLE001, S112 (not every board reports power)
                continue

    def close(self) -> None:
        if self._ready and self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._ready = False
