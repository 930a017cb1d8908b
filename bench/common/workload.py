"""A node-exporter-like workload: hosts × 100 series, 10 s interval.

Per host: 32 CPU-seconds counters (2 decimals), 20 memory gauges (bytes, multiples of
4096), 3 load averages (2 decimals), 15 filesystem gauges (bytes, mostly constant),
20 network byte counters and 10 disk counters (integers). Values evolve as random walks
or monotone counters, deterministically from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.samples import SampleBatch

__all__ = ["SERIES_PER_HOST", "Workload"]

SERIES_PER_HOST = 100
INTERVAL_MS = 10_000
_MODES = ("idle", "user", "system", "iowait", "irq", "softirq", "steal", "nice")


def _host_templates() -> list[tuple[dict[str, str], str]]:
    """(labels without host, kind) for the 100 series of one host."""
    out: list[tuple[dict[str, str], str]] = []
    for cpu in range(4):
        for mode in _MODES:
            out.append(
                ({"__name__": "node_cpu_seconds_total", "cpu": str(cpu), "mode": mode}, "cpu")
            )
    for i in range(20):
        out.append(({"__name__": f"node_memory_{i}_bytes"}, "mem"))
    for name in ("node_load1", "node_load5", "node_load15"):
        out.append(({"__name__": name}, "load"))
    for dev in range(5):
        for name in (
            "node_filesystem_size_bytes",
            "node_filesystem_avail_bytes",
            "node_filesystem_files",
        ):
            out.append(
                (
                    {"__name__": name, "device": f"sd{dev}", "mountpoint": f"/m{dev}"},
                    "fs_" + name[-5:],
                )
            )
    for dev in range(5):
        for d in ("receive", "transmit"):
            for unit in ("bytes", "packets"):
                out.append(
                    ({"__name__": f"node_network_{d}_{unit}_total", "device": f"eth{dev}"}, "net")
                )
    for dev in range(5):
        for d in ("read", "written"):
            out.append(({"__name__": f"node_disk_{d}_bytes_total", "device": f"sd{dev}"}, "disk"))
    assert len(out) == SERIES_PER_HOST
    return out


@dataclass
class Workload:
    hosts: int = 1000
    seed: int = 42

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        templates = _host_templates()
        self.labels: list[Labels] = [
            make_labels({**lbl, "instance": f"host-{h:04d}:9100", "job": "node"})
            for h in range(self.hosts)
            for lbl, _ in templates
        ]
        kinds = np.array([k for _, k in templates] * self.hosts)
        self.kinds = kinds
        n = len(self.labels)
        self._rng = rng
        self.value = np.zeros(n)
        self.rate = np.zeros(n)
        for kind, lo, hi in (
            ("cpu", 0.0, 10.0),
            ("net", 1e3, 1e6),
            ("disk", 1e3, 1e7),
        ):
            sel = kinds == kind
            self.rate[sel] = rng.uniform(lo, hi, sel.sum())
            self.value[sel] = rng.uniform(0, 1e6, sel.sum()).round(0 if kind != "cpu" else 2)
        sel = kinds == "mem"
        self.value[sel] = rng.integers(1 << 20, 1 << 24, sel.sum()) * 4096.0
        sel = kinds == "load"
        self.value[sel] = rng.uniform(0, 8, sel.sum()).round(2)
        for kind in ("fs_bytes", "fs_files"):
            sel = kinds == kind
            self.value[sel] = rng.integers(1e6, 1e9, sel.sum()).astype(np.float64) * 4096
        sel = kinds == "fs_bytes"
        self.value[sel] = rng.integers(1e6, 1e9, sel.sum()).astype(np.float64) * 4096

    @property
    def series_count(self) -> int:
        return len(self.labels)

    def step(self) -> NDArray[np.float64]:
        """Advance every series by one interval; return the new values."""
        rng, k, v = self._rng, self.kinds, self.value
        cpu = k == "cpu"
        v[cpu] = np.round(v[cpu] + self.rate[cpu] * rng.uniform(0.5, 1.5, cpu.sum()), 2)
        for kind in ("net", "disk"):
            sel = k == kind
            v[sel] += np.floor(self.rate[sel] * rng.uniform(0, 2, sel.sum()))
        mem = k == "mem"
        v[mem] = np.maximum(4096.0, v[mem] + rng.integers(-64, 65, mem.sum()) * 4096.0)
        load = k == "load"
        v[load] = np.round(np.abs(v[load] + rng.normal(0, 0.05, load.sum())), 2)
        avail = k == "fs_bytes"
        moving = avail & (rng.random(len(v)) < 0.1)
        v[moving] = np.maximum(0.0, v[moving] + rng.integers(-256, 257, moving.sum()) * 4096.0)
        return v.copy()

    def host_batches(self, start_ms: int, steps: int) -> list[SampleBatch]:
        """One batch per host holding ``steps`` intervals of its 100 series."""
        values = np.stack([self.step() for _ in range(steps)], axis=1)  # (series, steps)
        ts = start_ms + np.arange(steps, dtype=np.int64) * INTERVAL_MS
        idx = np.repeat(np.arange(SERIES_PER_HOST, dtype=np.uint32), steps)
        ts_all = np.tile(ts, SERIES_PER_HOST)
        out = []
        for h in range(self.hosts):
            sl = slice(h * SERIES_PER_HOST, (h + 1) * SERIES_PER_HOST)
            out.append(SampleBatch(self.labels[sl], idx, ts_all, values[sl].ravel()))
        return out
