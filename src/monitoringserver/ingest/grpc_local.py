"""The built-in local agent (``agent.local = true``): the server's own host as a node.

Runs the node agent's collectors in a worker thread every ``interval_s`` and hands the
samples **directly** to the :class:`MetricAppender` (no gRPC loopback, no spool: the
store is in the same process). It registers the host in the :class:`NodeRegistry`,
records heartbeat statistics, and when a :class:`ControlHub` is given it answers
remote commands for its node through the agent's own :class:`CommandExecutor` (so
``POST /api/v1/nodes/<server host>/control`` works too; services only from
``service_allowlist``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from monitoringserver.agent.adaptive import KEY_GAUGES, IntervalController
from monitoringserver.agent.agent import AgentStats, base_labels, build_collectors, node_info
from monitoringserver.agent.config import AgentConfig
from monitoringserver.agent.control import CommandExecutor
from monitoringserver.agent.metrics import Collector, Emitter, run_collectors
from monitoringserver.errors import MonitoringError
from monitoringserver.metrics.api import DedupKey, MetricAppender
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import SampleBatch
from monitoringserver.nodes.control import ControlHub
from monitoringserver.nodes.registry import NodeRegistry
from monitoringserver.nodes.types import CommandOutcome, NodeInfo

__all__ = ["LocalAgent", "emitter_to_batch"]

_log = logging.getLogger(__name__)


def emitter_to_batch(out: Emitter, ts_ms: int) -> SampleBatch:
    """One cycle's samples as a columnar batch (all at ``ts_ms``)."""
    index: dict[Labels, int] = {}
    idx = np.fromiter(
        (index.setdefault(labels, len(index)) for _, labels, _ in out),
        dtype=np.uint32,
        count=len(out),
    )
    values = np.fromiter((v for _, _, v in out), dtype=np.float64, count=len(out))
    return SampleBatch(list(index), idx, np.full(len(out), ts_ms, dtype=np.int64), values)


class LocalAgent:
    """``await run()`` until cancelled; ``await aclose()`` afterwards."""

    def __init__(
        self,
        appender: MetricAppender,
        *,
        registry: NodeRegistry | None = None,
        hub: ControlHub | None = None,
        node_id: str | None = None,
        interval_s: float | None = 10.0,
        labels: Mapping[str, str] | None = None,
        service_allowlist: Sequence[str] = (),
        collectors: list[Collector] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.node_id = node_id or socket.gethostname()
        self._appender = appender
        self._registry = registry
        self._hub = hub
        self._labels = dict(labels or {})
        cfg = AgentConfig(
            node_id=self.node_id,
            labels=self._labels,
            service_allowlist=tuple(service_allowlist),
            containers=True,
        )
        self._collectors = collectors if collectors is not None else build_collectors(cfg)
        self._base = base_labels(self.node_id, self._labels)
        self._clock = clock
        self.interval = IntervalController(fixed_s=interval_s)
        self.stats_ = AgentStats()
        self._executor = CommandExecutor(self, service_allowlist)
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        self._seq = int(clock() * 1_000_000)
        self.cycles = 0

    # AgentHooks -------------------------------------------------------------

    def report_now(self) -> None:
        self._wake.set()

    def set_interval(self, seconds: float | None) -> None:
        if seconds is None:
            self.interval.set_adaptive()
        else:
            self.interval.set_fixed(seconds)
        self._wake.set()

    def stats(self) -> dict[str, Any]:
        s = self.stats_
        return {
            "total_reports": s.total_reports,
            "failed_reports": s.failed_reports,
            "success_rate_percent": round(s.success_rate_percent, 2),
            "last_report_status": s.last_report_status,
            "current_interval": self.interval.current_s,
            "adaptive": self.interval.adaptive,
            "spool_depth": 0,
            "spool_bytes": 0,
            "local": True,
        }

    # -------------------------------------------------------------------------

    async def _register(self) -> None:
        if self._registry is None:
            return
        info = await asyncio.to_thread(node_info, self._labels)
        await self._registry.register(
            self.node_id,
            NodeInfo(
                hostname=info.hostname,
                os=info.os,
                os_version=info.os_version,
                kernel=info.kernel,
                arch=info.arch,
                cpu_count=info.cpu_count,
                memory_bytes=info.memory_bytes,
                agent_version=info.agent_version + " (local)",
                labels=dict(info.labels),
                boot_time_s=info.boot_time_s,
            ),
        )

    async def cycle(self) -> str:
        """Collect once and append; returns ``ok`` or ``error: ...``."""
        out = Emitter(self._base)
        await asyncio.to_thread(run_collectors, self._collectors, out)
        self._seq += 1
        status = "ok"
        if len(out):
            batch = emitter_to_batch(out, int(self._clock() * 1000))
            try:
                await self._appender.append(
                    batch, source="local-agent", dedup=DedupKey(self.node_id, self._seq)
                )
            except MonitoringError as exc:
                status = f"error: {exc}"
                _log.warning("local agent: cannot store samples: %s", exc)
        self.stats_.record(status)
        self.cycles += 1
        self.interval.observe({k: v for k in KEY_GAUGES if (v := out.value(k)) is not None})
        if self._registry is not None:
            if not self._registry.known(self.node_id):
                await self._register()
            self._registry.heartbeat(self.node_id, self.stats())
        return status

    async def _collect_loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self.cycle()
            except Exception:  # noqa: BLE001 (one bad cycle must not stop the loop)
                _log.exception("local agent cycle failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval.current_s):
                    await self._wake.wait()

    async def _control_loop(self, hub: ControlHub) -> None:
        sub = hub.subscribe(self.node_id)
        if self._registry is not None:
            self._registry.set_connected(self.node_id, True)
        try:
            while (cmd := await sub.get()) is not None:
                result = await self._executor.execute(cmd.kind, dict(cmd.args))
                hub.resolve(
                    CommandOutcome(
                        command_id=cmd.command_id,
                        node_id=self.node_id,
                        ok=result.ok,
                        exit_status=result.exit_status,
                        output=result.output,
                        error=result.error,
                    )
                )
        finally:
            sub.close()
            if self._registry is not None:
                self._registry.set_connected(self.node_id, hub.connected(self.node_id))

    async def run(self) -> None:
        """Collect (and answer commands) until :meth:`aclose` is called or cancelled."""
        await self._register()
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(self._collect_loop())]
            if self._hub is not None:
                tasks.append(tg.create_task(self._control_loop(self._hub)))
            await self._stopped.wait()
            for task in tasks:
                task.cancel()

    async def aclose(self) -> None:
        """Stop :meth:`run` (it returns) and release the collectors."""
        self._stopped.set()
        for c in self._collectors:
            close = getattr(c, "close", None)
            if close is not None:
                close()
