"""The node agent: collect, encode, deliver, adapt the interval, answer commands.

:class:`Agent` is built by ``agent/main.py`` (the agent's composition root) from an
:class:`AgentConfig`. Its lifecycle is ``await run()`` (until cancelled) and ``await
aclose()``. Statistics (seed 003) are kept here and written to ``status.json`` in the
state directory after every cycle (``node-agent status`` prints that file) and sent to
the server with each heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import psutil

from monitoringserver import __version__
from monitoringserver.agent.adaptive import KEY_GAUGES, IntervalController
from monitoringserver.agent.collectors.containers import ContainerCollector, container_socket
from monitoringserver.agent.collectors.gpu import GpuCollector, load_nvml
from monitoringserver.agent.collectors.hardware import HardwareCollector
from monitoringserver.agent.collectors.processes import ProcessesCollector
from monitoringserver.agent.collectors.services import ServicesCollector
from monitoringserver.agent.collectors.system import SystemCollector
from monitoringserver.agent.config import AgentConfig
from monitoringserver.agent.control import CommandExecutor
from monitoringserver.agent.encode import SeriesIds
from monitoringserver.agent.metrics import Collector, Emitter, run_collectors
from monitoringserver.agent.shipper import DeliveryError, Shipper, ShipperOptions
from monitoringserver.agent.spool import SeqAllocator, Spool
from monitoringserver.proto import monitoring_pb2 as pb

__all__ = ["Agent", "AgentStats", "base_labels", "build_collectors", "node_info"]

_log = logging.getLogger(__name__)


def build_collectors(cfg: AgentConfig) -> list[Collector]:
    """The collectors switched on in ``cfg``, system first."""
    out: list[Collector] = []
    if cfg.system:
        out.append(SystemCollector())
    if cfg.hardware:
        out.append(HardwareCollector())
    sock = container_socket(cfg)
    if sock is not None:
        out.append(ContainerCollector(sock))
    if cfg.services and cfg.service_allowlist:
        out.append(ServicesCollector(cfg.service_allowlist))
    if cfg.processes and cfg.top_processes > 0:
        out.append(ProcessesCollector(cfg.top_processes))
    if cfg.gpu:
        nvml = load_nvml()
        if nvml is not None:
            out.append(GpuCollector(nvml))
    return out


def base_labels(node_id: str, extra: Mapping[str, str]) -> dict[str, str]:
    labels = dict(extra)
    labels.update({"server_id": node_id, "instance": node_id, "job": "node"})
    return labels


def _os_version() -> str:
    with contextlib.suppress(OSError):
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    return platform.version()


def node_info(labels: Mapping[str, str]) -> pb.NodeInfo:
    """What this host is, for ``Register``."""
    return pb.NodeInfo(
        hostname=socket.gethostname(),
        os=platform.system(),
        os_version=_os_version(),
        kernel=platform.release(),
        arch=platform.machine(),
        cpu_count=psutil.cpu_count() or 0,
        memory_bytes=psutil.virtual_memory().total,
        agent_version=__version__,
        labels=dict(labels),
        boot_time_s=psutil.boot_time(),
    )


class AgentStats:
    """Seed 003 reporter statistics."""

    def __init__(self) -> None:
        self.total_reports = 0
        self.failed_reports = 0
        self.last_report_status = ""
        self.last_report_time_s = 0.0

    def record(self, status: str) -> None:
        self.total_reports += 1
        if status != "ok":
            self.failed_reports += 1
        self.last_report_status = status
        self.last_report_time_s = time.time()

    @property
    def success_rate_percent(self) -> float:
        if not self.total_reports:
            return 100.0
        return 100.0 * (self.total_reports - self.failed_reports) / self.total_reports


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        *,
        collectors: list[Collector] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self._collectors = collectors if collectors is not None else build_collectors(cfg)
        self._clock = clock
        self._labels = base_labels(cfg.node_id, cfg.labels)
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(cfg.state_dir / "spool", max_bytes=cfg.spool_max_bytes)
        self._seq = SeqAllocator(cfg.state_dir / "seq")
        self.series = SeriesIds()
        self.interval = IntervalController(
            fixed_s=cfg.interval_s, cpu_count=psutil.cpu_count() or 1
        )
        self.stats_ = AgentStats()
        self.shipper = Shipper(
            ShipperOptions(
                target=cfg.server,
                token=cfg.read_token(),
                tls=cfg.tls,
                ca_file=cfg.ca_file,
                call_timeout_s=cfg.call_timeout_s,
            ),
            agent_id=cfg.node_id,
            node_info=lambda: node_info(cfg.labels),
            series=self.series,
            spool=self.spool,
        )
        self.executor = CommandExecutor(self, cfg.service_allowlist)
        self._report_now = asyncio.Event()
        self._last_suggestion = 0.0
        #: The samples of the latest cycle (for the local exposition).
        self.last_samples: Emitter = Emitter(self._labels)
        self.cycles = 0
        #: Additional coroutine functions started by :meth:`run` (exporter, log shippers).
        self.extra_tasks: list[Callable[[], Coroutine[Any, Any, None]]] = []
        #: Called on the event loop after every cycle, failed or not (the standalone
        #: agent returns freed memory to the kernel here). Must be quick.
        self.after_cycle: list[Callable[[], object]] = []

    # ------------------------------------------------------------ AgentHooks

    def report_now(self) -> None:
        self._report_now.set()

    def set_interval(self, seconds: float | None) -> None:
        if seconds is None:
            self.interval.set_adaptive()
        else:
            self.interval.set_fixed(seconds)
        self._report_now.set()  # apply at once: the wait restarts with the new interval

    def stats(self) -> dict[str, Any]:
        s = self.stats_
        return {
            "node_id": self.cfg.node_id,
            "server": self.cfg.server,
            "total_reports": s.total_reports,
            "failed_reports": s.failed_reports,
            "success_rate_percent": round(s.success_rate_percent, 2),
            "last_report_status": s.last_report_status,
            "last_report_time": s.last_report_time_s,
            "current_interval": self.interval.current_s,
            "adaptive": self.interval.adaptive,
            "spool_depth": len(self.spool),
            "spool_bytes": self.spool.bytes,
            "spool_dropped": self.spool.dropped,
            "series": len(self.series),
            "pid": os.getpid(),
        }

    def _pb_stats(self) -> pb.AgentStats:
        s = self.stats_
        return pb.AgentStats(
            total_reports=s.total_reports,
            failed_reports=s.failed_reports,
            success_rate_percent=s.success_rate_percent,
            last_report_status=s.last_report_status,
            current_interval_s=self.interval.current_s,
            adaptive=self.interval.adaptive,
            spool_depth=len(self.spool),
            spool_bytes=self.spool.bytes,
            spool_dropped=self.spool.dropped,
            last_report_time_s=s.last_report_time_s,
        )

    # ------------------------------------------------------------ cycle

    async def cycle(self) -> str:
        """Collect once, deliver, update stats and interval; returns the report status."""
        out = Emitter(self._labels)
        await asyncio.to_thread(run_collectors, self._collectors, out)
        self.last_samples = out
        batch = self.series.encode(out, int(self._clock() * 1000), self._seq.next())
        status = await self.shipper.deliver(batch)
        self.stats_.record(status)
        self.cycles += 1
        if self.shipper.suggested_interval_s != self._last_suggestion:
            self._last_suggestion = self.shipper.suggested_interval_s
            self.interval.suggest(self._last_suggestion)
        keys = {k: v for k in KEY_GAUGES if (v := out.value(k)) is not None}
        self.interval.observe(keys)
        self._write_status()
        if status == "ok":
            try:
                await self.shipper.heartbeat(self._pb_stats())
            except DeliveryError as exc:
                _log.debug("heartbeat failed: %s", exc)
        return status

    def _write_status(self) -> None:
        path = self.cfg.state_dir / "status.json"
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.stats(), indent=2, sort_keys=True))
            tmp.replace(path)
        except OSError as exc:
            _log.warning("cannot write %s: %s", path, exc)

    async def collect_loop(self) -> None:
        while True:
            # Cleared before the cycle: a report_now arriving during it runs one more.
            self._report_now.clear()
            try:
                await self.cycle()
            except Exception:  # noqa: BLE001 (one bad cycle must not end the agent)
                _log.exception("collection cycle failed")
            for hook in self.after_cycle:
                hook()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval.current_s):
                    await self._report_now.wait()

    async def run(self) -> None:
        """Run every loop until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.shipper.replay_loop())
            if self.cfg.control:
                tg.create_task(self.shipper.control_loop(self.executor))
            tg.create_task(self.collect_loop())
            for extra in self.extra_tasks:
                tg.create_task(extra())

    async def aclose(self) -> None:
        await self.shipper.aclose()
        for c in self._collectors:
            close = getattr(c, "close", None)
            if close is not None:
                close()


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """The status a running agent last wrote, or None."""
    try:
        data: dict[str, Any] = json.loads((state_dir / "status.json").read_text())
    except (OSError, ValueError):
        return None
    return data
