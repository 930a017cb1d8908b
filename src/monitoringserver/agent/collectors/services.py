"""systemd services from an allowlist: state and restarts (node_exporter systemd names).

``node_systemd_unit_state{name,state}`` is 1 for the unit's current ActiveState and 0
for the others; ``node_systemd_service_restart_total{name}`` is systemd's NRestarts.
Commands run through an injectable :data:`Runner` (``systemctl show``), with a timeout.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence

from monitoringserver.agent.metrics import Emitter, counter, gauge

__all__ = ["Runner", "ServicesCollector", "run_command", "unit_name"]

STATE = gauge("node_systemd_unit_state", "", "1 for the unit's current state.")
RESTARTS = counter("node_systemd_service_restart_total", "", "Service restarts (NRestarts).")
_STATES = ("active", "activating", "deactivating", "inactive", "failed")

#: ``(argv, timeout_s) -> (exit status, combined output)``.
Runner = Callable[[Sequence[str], float], tuple[int, str]]


def run_command(argv: Sequence[str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` without a shell; exit status 124 on timeout, 127 when not found."""
    try:
        proc = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            errors="replace",
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout if isinstance(exc.stdout, str) else ""
        return 124, out + f"\ntimed out after {timeout_s:g} s"
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout or "") + (proc.stderr or "")


def unit_name(name: str) -> str:
    return name if "." in name else f"{name}.service"


class ServicesCollector:
    name = "services"

    def __init__(
        self, allowlist: Sequence[str], *, runner: Runner = run_command, timeout_s: float = 5.0
    ) -> None:
        self._units = [unit_name(n) for n in allowlist]
        self._run = runner
        self._timeout = timeout_s

    def collect(self, out: Emitter) -> None:
        if not self._units:
            return
        argv = ["systemctl", "show", "--property=Id,ActiveState,NRestarts", *self._units]
        rc, text = self._run(argv, self._timeout)
        if rc != 0:
            return
        for block in text.strip().split("\n\n"):
            props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            unit = props.get("Id", "")
            if not unit:
                continue
            current = props.get("ActiveState", "")
            for state in _STATES:
                out.add(STATE, float(state == current), {"name": unit, "state": state})
            if props.get("NRestarts", "").isdigit():
                out.add(RESTARTS, float(props["NRestarts"]), {"name": unit})
