"""Executes the server's commands on the agent's host.

``service start|stop|restart <name>`` runs ``systemctl <action> <unit>`` only for units
in the agent's own allowlist (whatever the server asks) and reports the exit status
and the tail of the output. ``report_now``, ``set_interval`` and ``get_stats`` act on
the agent through the :class:`AgentHooks` it is given.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from monitoringserver.agent.collectors.services import Runner, run_command, unit_name

__all__ = ["AgentHooks", "CommandExecutor", "Result"]

OUTPUT_TAIL = 4000
_ACTIONS = ("start", "stop", "restart")


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    exit_status: int = 0
    output: str = ""
    error: str = ""


class AgentHooks(Protocol):
    def report_now(self) -> None: ...

    def set_interval(self, seconds: float | None) -> None:
        """None switches to adaptive."""
        ...

    def stats(self) -> Mapping[str, Any]: ...


class CommandExecutor:
    def __init__(
        self,
        hooks: AgentHooks,
        allowlist: Sequence[str],
        *,
        runner: Runner = run_command,
        service_timeout_s: float = 60.0,
    ) -> None:
        self._hooks = hooks
        self._allowed = {unit_name(n) for n in allowlist}
        self._run = runner
        self._timeout = service_timeout_s

    async def execute(self, kind: str, args: Mapping[str, str]) -> Result:
        """Run one command; never raises (failures are a ``Result`` with ``ok=False``)."""
        try:
            if kind == "service":
                return await self._service(args.get("action", ""), args.get("name", ""))
            if kind == "report_now":
                self._hooks.report_now()
                return Result(ok=True, output="report scheduled")
            if kind == "set_interval":
                return self._set_interval(args.get("interval", ""))
            if kind == "get_stats":
                return Result(ok=True, output=json.dumps(dict(self._hooks.stats()), sort_keys=True))
            return Result(
                ok=False, exit_status=2, error=f"cannot run command: unknown kind {kind!r}"
            )
        except Exception as exc:  # noqa: BLE001 (the answer reports any failure)
            return Result(ok=False, exit_status=1, error=f"cannot run {kind}: {exc}")

    async def _service(self, action: str, name: str) -> Result:
        unit = unit_name(name)
        if action not in _ACTIONS:
            return Result(ok=False, exit_status=2, error=f"cannot {action!r} a service")
        if unit not in self._allowed:
            return Result(
                ok=False,
                exit_status=126,
                error=f"cannot {action} {unit}: not in this agent's service allowlist",
            )
        rc, output = await asyncio.to_thread(self._run, ["systemctl", action, unit], self._timeout)
        tail = output[-OUTPUT_TAIL:]
        if rc != 0:
            return Result(ok=False, exit_status=rc, output=tail, error=f"systemctl exited {rc}")
        return Result(ok=True, exit_status=0, output=tail)

    def _set_interval(self, raw: str) -> Result:
        if raw == "adaptive":
            self._hooks.set_interval(None)
            return Result(ok=True, output="interval: adaptive")
        try:
            seconds = float(raw)
        except ValueError:
            return Result(ok=False, exit_status=2, error=f"cannot set interval {raw!r}")
        if not 30.0 <= seconds <= 300.0:
            return Result(ok=False, exit_status=2, error="cannot set interval: 30-300 s only")
        self._hooks.set_interval(seconds)
        return Result(ok=True, output=f"interval: {seconds:g} s")
