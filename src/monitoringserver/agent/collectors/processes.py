"""Top processes by CPU and by memory (``count`` of each).

``process_top_cpu_percent{name,pid}`` is the share of one core over the last
interval; ``process_top_memory_bytes{name,pid}`` the resident set size. Process
objects are kept between cycles so CPU shares are deltas, like ``top``.
"""

from __future__ import annotations

import psutil

from monitoringserver.agent.metrics import Emitter, gauge

__all__ = ["ProcessesCollector"]

TOP_CPU = gauge("process_top_cpu_percent", "percent", "CPU share of a top process.")
TOP_MEM = gauge("process_top_memory_bytes", "bytes", "Resident memory of a top process.")


class ProcessesCollector:
    name = "processes"

    def __init__(self, count: int = 5) -> None:
        self._count = count
        self._procs: dict[int, psutil.Process] = {}

    def collect(self, out: Emitter) -> None:
        if self._count <= 0:
            return
        rows: list[tuple[float, int, str, int]] = []
        alive: dict[int, psutil.Process] = {}
        for p in psutil.process_iter(["name", "memory_info"]):
            proc = self._procs.get(p.pid, p)
            try:
                cpu = proc.cpu_percent(interval=None)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            alive[p.pid] = proc
            mem = p.info.get("memory_info")
            rows.append((cpu, p.pid, str(p.info.get("name") or ""), mem.rss if mem else 0))
        self._procs = alive
        for cpu, pid, name, _ in sorted(rows, key=lambda r: (-r[0], r[1]))[: self._count]:
            out.add(TOP_CPU, cpu, {"name": name, "pid": str(pid)})
        for _, pid, name, rss in sorted(rows, key=lambda r: (-r[3], r[1]))[: self._count]:
            out.add(TOP_MEM, rss, {"name": name, "pid": str(pid)})
