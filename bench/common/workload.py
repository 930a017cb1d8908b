"""A node-exporter-like workload: hosts × 100 series, 10 s interval.

Per host: 32 ``node_cpu_seconds_total`` counters (4 CPUs × 8 modes, 2 decimals as the
kernel's USER_HZ gives them; idle/user/system busy, steal/nice mostly flat), 20 memory
gauges (bytes in whole pages; some constant, some moving), 3 load averages (2
decimals), 15 filesystem gauges (sizes constant, free space creeping), 20 network and
10 disk counters (integers; one busy device, the others mostly idle). Values follow
random walks or monotone counters, deterministically from a seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.model.samples import SampleBatch

__all__ = ["INTERVAL_MS", "SERIES_PER_HOST", "Workload"]

SERIES_PER_HOST = 100
INTERVAL_MS = 10_000
_MODES = {  # mode → (cpu-seconds per second, probability the counter moves per interval)
    "idle": (0.8, 1.0),
    "user": (0.12, 1.0),
    "system": (0.04, 1.0),
    "iowait": (0.005, 0.5),
    "irq": (0.001, 0.3),
    "softirq": (0.002, 0.5),
    "steal": (0.0005, 0.05),
    "nice": (0.0, 0.0),
}


@dataclass(frozen=True)
class _Spec:
    labels: dict[str, str]
    counter: bool
    start: float
    rate: float = 0.0  # counters: units per second
    p_move: float = 1.0  # probability the value changes in an interval
    quantum: float = 1.0  # values are multiples of this
    step: int = 0  # gauges: max quanta per move


def _host_specs(rng: np.random.Generator) -> list[_Spec]:
    out: list[_Spec] = []
    for cpu in range(4):
        for mode, (rate, p) in _MODES.items():
            out.append(
                _Spec(
                    {"__name__": "node_cpu_seconds_total", "cpu": str(cpu), "mode": mode},
                    True,
                    round(float(rng.uniform(1e3, 1e6)) * rate, 2),
                    rate * float(rng.uniform(0.5, 1.5)),
                    p,
                    0.01,
                )
            )
    for i in range(20):
        constant = i < 8
        out.append(
            _Spec(
                {"__name__": f"node_memory_{i}_bytes"},
                False,
                float(rng.integers(1 << 16, 1 << 22)) * 4096,
                p_move=0.0 if constant else 0.6,
                quantum=4096.0,
                step=64,
            )
        )
    for name, step in (("node_load1", 8), ("node_load5", 3), ("node_load15", 1)):
        out.append(
            _Spec({"__name__": name}, False, round(float(rng.uniform(0, 4)), 2), 0, 0.9, 0.01, step)
        )
    for dev in range(5):
        mount = {"device": f"sd{dev}", "mountpoint": f"/m{dev}"}
        size = float(rng.integers(1 << 18, 1 << 26)) * 4096
        out.append(
            _Spec({"__name__": "node_filesystem_size_bytes", **mount}, False, size, p_move=0)
        )
        out.append(
            _Spec(
                {"__name__": "node_filesystem_avail_bytes", **mount},
                False,
                size // 8192 * 4096,
                p_move=0.2 if dev == 0 else 0.02,
                quantum=4096.0,
                step=32,
            )
        )
        out.append(
            _Spec(
                {"__name__": "node_filesystem_files", **mount},
                False,
                float(rng.integers(100_000, 10_000_000)),
                p_move=0,
            )
        )
    for nic, busy in (
        ("eth0", True),
        ("eth1", False),
        ("lo", False),
        ("docker0", False),
        ("veth1", False),
    ):
        for direction in ("receive", "transmit"):
            bps = float(rng.uniform(2e4, 2e6)) if busy else float(rng.uniform(0, 50))
            for unit, per in (("bytes", 1.0), ("packets", 1 / 900)):
                out.append(
                    _Spec(
                        {"__name__": f"node_network_{direction}_{unit}_total", "device": nic},
                        True,
                        float(rng.integers(0, 1 << 40)) * per // 1,
                        bps * per,
                        1.0 if busy else 0.3,
                    )
                )
    for dev in range(5):
        for op in ("read", "written"):
            bps = float(rng.uniform(1e4, 5e6)) if dev == 0 else float(rng.uniform(0, 2e3))
            out.append(
                _Spec(
                    {"__name__": f"node_disk_{op}_bytes_total", "device": f"sd{dev}"},
                    True,
                    float(rng.integers(0, 1 << 40)) // 512 * 512,
                    bps,
                    0.9 if dev == 0 else 0.1,
                    512.0,
                )
            )
    assert len(out) == SERIES_PER_HOST
    return out


@dataclass
class Workload:
    hosts: int = 1000
    seed: int = 42
    labels: list[Labels] = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        specs: list[_Spec] = []
        self.labels = []
        for h in range(self.hosts):
            for spec in _host_specs(self._rng):
                specs.append(spec)
                self.labels.append(
                    make_labels({**spec.labels, "instance": f"host-{h:04d}:9100", "job": "node"})
                )
        self.value = np.array([s.start for s in specs])
        self._counter = np.array([s.counter for s in specs])
        self._rate = np.array([s.rate for s in specs]) * (INTERVAL_MS / 1000)
        self._p = np.array([s.p_move for s in specs])
        self._q = np.array([s.quantum for s in specs])
        self._step = np.array([s.step for s in specs])

    @property
    def series_count(self) -> int:
        return len(self.labels)

    def step(self) -> NDArray[np.float64]:
        """Advance every series by one interval; return the new values."""
        rng, n = self._rng, len(self.value)
        moves = rng.random(n) < self._p
        inc = np.where(
            self._counter,
            np.floor(self._rate * rng.uniform(0.7, 1.3, n) / self._q),
            rng.integers(-self._step, self._step + 1),
        )
        self.value = np.maximum(0.0, self.value + np.where(moves, inc, 0) * self._q)
        # Keep decimal quanta exact (what an exporter prints and a parser reads back).
        decimal = self._q < 1
        self.value[decimal] = np.round(self.value[decimal], 2)
        return self.value.copy()

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
