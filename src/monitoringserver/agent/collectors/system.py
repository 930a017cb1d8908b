"""System metrics with node_exporter names and labels (psutil plus a few /proc files).

CPU by core and mode, load, memory and swap, filesystems (space and inodes), disk IO,
network IO/errors/drops, TCP connection states, processes and threads, file
descriptors, boot time, context switches, plus the convenience gauges
``cpu_usage_percent``, ``memory_usage_percent`` and ``disk_usage_percent`` (the root
filesystem, or the fullest one when ``/`` is not mounted from a device).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import psutil

from monitoringserver.agent.metrics import Emitter, counter, gauge

__all__ = ["SystemCollector"]

CPU_SECONDS = counter("node_cpu_seconds_total", "seconds", "Seconds the CPUs spent in each mode.")
CPU_GUEST = counter(
    "node_cpu_guest_seconds_total", "seconds", "Seconds the CPUs spent running guests."
)
CPU_USAGE = gauge("cpu_usage_percent", "percent", "CPU busy share over the last interval.")
LOAD = {n: gauge(f"node_load{n}", "", f"{n}-minute load average.") for n in (1, 5, 15)}
MEM_USAGE = gauge("memory_usage_percent", "percent", "Memory in use (total - available).")
DISK_USAGE = gauge("disk_usage_percent", "percent", "Space used on the root filesystem.")
FS_SIZE = gauge("node_filesystem_size_bytes", "bytes", "Filesystem size.")
FS_FREE = gauge("node_filesystem_free_bytes", "bytes", "Filesystem free space.")
FS_AVAIL = gauge("node_filesystem_avail_bytes", "bytes", "Space available to non-root users.")
FS_FILES = gauge("node_filesystem_files", "", "Filesystem total inodes.")
FS_FILES_FREE = gauge("node_filesystem_files_free", "", "Filesystem free inodes.")
FS_RO = gauge("node_filesystem_readonly", "", "1 when the filesystem is mounted read-only.")
BOOT = gauge("node_boot_time_seconds", "seconds", "Boot time, seconds since the epoch.")
TIME = gauge("node_time_seconds", "seconds", "System time, seconds since the epoch.")
UPTIME = gauge("node_uptime_seconds", "seconds", "Seconds since boot.")
CTXT = counter("node_context_switches_total", "", "Context switches.")
INTR = counter("node_intr_total", "", "Interrupts serviced.")
TCP_STATES = gauge("node_tcp_connection_states", "", "TCP connections by state.")
PROCS_RUNNING = gauge("node_procs_running", "", "Processes in runnable state.")
PROCS_BLOCKED = gauge("node_procs_blocked", "", "Processes blocked waiting for I/O.")
PIDS = gauge("node_processes_pids", "", "Number of processes.")
THREADS = gauge("node_processes_threads", "", "Number of threads.")
FD_ALLOC = gauge("node_filefd_allocated", "", "Allocated file descriptors.")
FD_MAX = gauge("node_filefd_maximum", "", "Maximum file descriptors.")

_MEM_FIELDS = {
    "total": "MemTotal",
    "free": "MemFree",
    "available": "MemAvailable",
    "buffers": "Buffers",
    "cached": "Cached",
    "active": "Active",
    "inactive": "Inactive",
    "shared": "Shmem",
    "slab": "Slab",
}
_MEM = {
    f: gauge(f"node_memory_{n}_bytes", "bytes", f"Memory information field {n}.")
    for f, n in _MEM_FIELDS.items()
}
_SWAP = {
    "total": gauge("node_memory_SwapTotal_bytes", "bytes", "Swap size."),
    "free": gauge("node_memory_SwapFree_bytes", "bytes", "Free swap."),
}
_DISK = {
    "read_bytes": counter("node_disk_read_bytes_total", "bytes", "Bytes read."),
    "write_bytes": counter("node_disk_written_bytes_total", "bytes", "Bytes written."),
    "read_count": counter("node_disk_reads_completed_total", "", "Reads completed."),
    "write_count": counter("node_disk_writes_completed_total", "", "Writes completed."),
}
_DISK_MS = {
    "read_time": counter("node_disk_read_time_seconds_total", "seconds", "Time spent reading."),
    "write_time": counter("node_disk_write_time_seconds_total", "seconds", "Time spent writing."),
    "busy_time": counter("node_disk_io_time_seconds_total", "seconds", "Time spent doing I/O."),
}
_NET = {
    "bytes_recv": counter("node_network_receive_bytes_total", "bytes", "Bytes received."),
    "bytes_sent": counter("node_network_transmit_bytes_total", "bytes", "Bytes sent."),
    "packets_recv": counter("node_network_receive_packets_total", "", "Packets received."),
    "packets_sent": counter("node_network_transmit_packets_total", "", "Packets sent."),
    "errin": counter("node_network_receive_errs_total", "", "Receive errors."),
    "errout": counter("node_network_transmit_errs_total", "", "Transmit errors."),
    "dropin": counter("node_network_receive_drop_total", "", "Received packets dropped."),
    "dropout": counter("node_network_transmit_drop_total", "", "Sent packets dropped."),
}
_TCP_STATE_NAMES = {
    "01": "established",
    "02": "syn_sent",
    "03": "syn_recv",
    "04": "fin_wait1",
    "05": "fin_wait2",
    "06": "time_wait",
    "07": "close",
    "08": "close_wait",
    "09": "last_ack",
    "0A": "listen",
    "0B": "closing",
}
#: Block devices that are not disks (node_exporter's default exclusion, roughly).
_DISK_EXCLUDE = re.compile(r"^(ram|loop|fd|(h|s|v|xv)d[a-z]+\d+|nvme\d+n\d+p\d+|zram)\d*")
_FS_EXCLUDE = {"tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "cgroup2", "nsfs"}


class SystemCollector:
    """The system collector. ``proc`` is the procfs root (injectable for tests)."""

    name = "system"

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self._proc = proc
        psutil.cpu_percent(interval=None)  # prime the busy-share delta

    def collect(self, out: Emitter) -> None:
        self._cpu(out)
        self._memory(out)
        self._filesystems(out)
        self._disks(out)
        self._network(out)
        self._kernel(out)

    def _cpu(self, out: Emitter) -> None:
        for i, t in enumerate(psutil.cpu_times(percpu=True)):
            cpu = str(i)
            for mode in ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"):
                if hasattr(t, mode):
                    out.add(CPU_SECONDS, getattr(t, mode), {"cpu": cpu, "mode": mode})
            for mode in ("guest", "guest_nice"):
                if hasattr(t, mode):
                    label = "user" if mode == "guest" else "nice"
                    out.add(CPU_GUEST, getattr(t, mode), {"cpu": cpu, "mode": label})
        out.add(CPU_USAGE, psutil.cpu_percent(interval=None))
        with _suppress_os():
            for n, v in zip((1, 5, 15), os.getloadavg(), strict=True):
                out.add(LOAD[n], v)
        stats = psutil.cpu_stats()
        out.add(CTXT, stats.ctx_switches)
        out.add(INTR, stats.interrupts)

    def _memory(self, out: Emitter) -> None:
        vm = psutil.virtual_memory()
        for f, desc in _MEM.items():
            if hasattr(vm, f):
                out.add(desc, getattr(vm, f))
        if vm.total:
            out.add(MEM_USAGE, 100.0 * (vm.total - vm.available) / vm.total)
        sw = psutil.swap_memory()
        out.add(_SWAP["total"], sw.total)
        out.add(_SWAP["free"], sw.free)

    def _filesystems(self, out: Emitter) -> None:
        root_pct: float | None = None
        fullest = 0.0
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _FS_EXCLUDE or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                st = os.statvfs(part.mountpoint)
            except OSError:
                continue
            labels = {"device": part.device, "fstype": part.fstype, "mountpoint": part.mountpoint}
            size, free, avail = (
                st.f_blocks * st.f_frsize,
                st.f_bfree * st.f_frsize,
                st.f_bavail * st.f_frsize,
            )
            out.add(FS_SIZE, size, labels)
            out.add(FS_FREE, free, labels)
            out.add(FS_AVAIL, avail, labels)
            out.add(FS_FILES, st.f_files, labels)
            out.add(FS_FILES_FREE, st.f_ffree, labels)
            out.add(FS_RO, float(bool(st.f_flag & os.ST_RDONLY)), labels)
            used = size - free
            if used + avail > 0:
                pct = 100.0 * used / (used + avail)  # what `df` shows
                fullest = max(fullest, pct)
                if part.mountpoint == "/":
                    root_pct = pct
        if seen:
            out.add(DISK_USAGE, fullest if root_pct is None else root_pct)

    def _disks(self, out: Emitter) -> None:
        for dev, io in (psutil.disk_io_counters(perdisk=True) or {}).items():
            if _DISK_EXCLUDE.match(dev):
                continue
            labels = {"device": dev}
            for f, desc in _DISK.items():
                out.add(desc, getattr(io, f), labels)
            for f, desc in _DISK_MS.items():
                if hasattr(io, f):
                    out.add(desc, getattr(io, f) / 1000.0, labels)

    def _network(self, out: Emitter) -> None:
        for nic, io in (psutil.net_io_counters(pernic=True) or {}).items():
            labels = {"device": nic}
            for f, desc in _NET.items():
                out.add(desc, getattr(io, f), labels)

    def _kernel(self, out: Emitter) -> None:
        boot = psutil.boot_time()
        now = time.time()
        out.add(BOOT, boot)
        out.add(TIME, now)
        out.add(UPTIME, max(0.0, now - boot))
        out.add(PIDS, len(psutil.pids()))
        self._proc_stat(out)
        self._tcp_states(out)
        with _suppress_os():
            fields = (self._proc / "sys/fs/file-nr").read_text().split()
            out.add(FD_ALLOC, float(fields[0]))
            out.add(FD_MAX, float(fields[2]))
        with _suppress_os():
            running_total = (self._proc / "loadavg").read_text().split()[3]
            out.add(THREADS, float(running_total.split("/")[1]))

    def _proc_stat(self, out: Emitter) -> None:
        with _suppress_os():
            for line in (self._proc / "stat").read_text().splitlines():
                if line.startswith("procs_running "):
                    out.add(PROCS_RUNNING, float(line.split()[1]))
                elif line.startswith("procs_blocked "):
                    out.add(PROCS_BLOCKED, float(line.split()[1]))

    def _tcp_states(self, out: Emitter) -> None:
        counts = dict.fromkeys(_TCP_STATE_NAMES.values(), 0)
        found = False
        for name in ("net/tcp", "net/tcp6"):
            try:
                with (self._proc / name).open() as fh:
                    next(fh, None)  # header
                    for line in fh:
                        parts = line.split(None, 4)
                        if len(parts) > 3 and parts[3] in _TCP_STATE_NAMES:
                            counts[_TCP_STATE_NAMES[parts[3]]] += 1
                found = True
            except OSError:
                continue
        if found:
            for state, n in counts.items():
                out.add(TCP_STATES, n, {"state": state})


class _suppress_os:  # noqa: N801 (used like contextlib.suppress)
    """Absent /proc files and odd formats produce no series, not errors."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type[BaseException] | None, *rest: object) -> bool:
        return et is not None and issubclass(et, (OSError, ValueError, IndexError))
