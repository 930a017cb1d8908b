"""Containers through the Podman (or Docker) REST API on a unix socket.

Per container: state (``container_up``), restarts, CPU seconds, memory usage and
limit, network and block IO (cAdvisor-style names). Labels: ``name``, ``id`` (12
characters), ``image``. Absent socket: no series. At most ``max_containers`` running
containers are queried per cycle; each socket operation has ``timeout_s``, and after a
transport error (timeout, reset) no further container is queried in that cycle, so a
hung engine costs at most two timeouts per cycle.

HTTP goes through :mod:`monitoringserver.agent.collectors.engine` (the standard
library's ``http.client``, imported only once a socket exists): one keep-alive
connection kept across cycles and reopened after any error. Failed requests never
raise out of :meth:`ContainerCollector.collect`; they are counted in
``container_engine_errors_total`` (emitted whenever the socket exists) and logged
(a warning when the engine starts failing, then debug until it answers again). Call
:meth:`ContainerCollector.close` when done.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoringserver.agent.metrics import Emitter, counter, gauge

if TYPE_CHECKING:
    from monitoringserver.agent.collectors.engine import EngineClient
    from monitoringserver.agent.config import AgentConfig

__all__ = ["ContainerCollector", "container_socket", "default_socket"]

_log = logging.getLogger(__name__)

UP = gauge("container_up", "", "1 when the container is running.")
RESTARTS = counter("container_restarts_total", "", "Times the engine restarted the container.")
CPU = counter("container_cpu_usage_seconds_total", "seconds", "CPU time consumed.")
MEM = gauge("container_memory_usage_bytes", "bytes", "Memory in use.")
MEM_LIMIT = gauge("container_spec_memory_limit_bytes", "bytes", "Memory limit.")
RX = counter("container_network_receive_bytes_total", "bytes", "Bytes received.")
TX = counter("container_network_transmit_bytes_total", "bytes", "Bytes sent.")
BLK_R = counter("container_fs_reads_bytes_total", "bytes", "Bytes read from block devices.")
BLK_W = counter("container_fs_writes_bytes_total", "bytes", "Bytes written to block devices.")
ERRORS = counter(
    "container_engine_errors_total",
    "",
    "Failed requests to the container engine API (transport error, non-2xx status, "
    "answer that is not the expected JSON) since the agent started.",
)


def default_socket() -> Path | None:
    """The first existing Podman or Docker API socket."""
    candidates = [Path("/run/podman/podman.sock")]
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        candidates.append(Path(runtime) / "podman/podman.sock")
    candidates.append(Path("/var/run/docker.sock"))
    return next((p for p in candidates if p.exists()), None)


def container_socket(cfg: AgentConfig) -> Path | None:
    """The socket the container collector uses under ``cfg``; None = no collector.

    A configured socket is used even before it exists (the engine may start later);
    otherwise the first existing default, checked once at start.
    """
    if not cfg.containers:
        return None
    return cfg.container_socket or default_socket()


class ContainerCollector:
    """The container collector; ``collect`` runs in the agent's collector thread.

    ``errors`` counts failed engine requests since construction (written by the
    collector thread only).
    """

    name = "containers"

    def __init__(
        self, socket: Path | None, *, max_containers: int = 100, timeout_s: float = 5.0
    ) -> None:
        self._socket = socket
        self._max = max_containers
        self._timeout = timeout_s
        self._client: EngineClient | None = None
        self._failing = False
        self.errors = 0

    @property
    def client(self) -> EngineClient | None:
        """The engine client, once a cycle found the socket (None before and after close)."""
        return self._client

    def close(self) -> None:
        """Close the engine connection (a later :meth:`collect` opens a new one)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def collect(self, out: Emitter) -> None:
        if self._socket is None or not self._socket.exists():
            self.close()  # the engine went away: nothing to report, nothing failed
            return
        # Imported here: only hosts with an engine pay for http.client.
        from monitoringserver.agent.collectors.engine import EngineClient, EngineError

        if self._client is None:
            self._client = EngineClient(self._socket, timeout_s=self._timeout)
        try:
            listing = self._client.get_json("/containers/json", {"all": "true"})
            if not isinstance(listing, list):
                raise EngineError("cannot read /containers/json: answer is not a list")
        except EngineError as exc:
            self._failed(exc, logging.WARNING)
        else:
            if self._failing:
                self._failing = False
                _log.info("container engine at %s answers again", self._socket)
            self._containers(self._client, listing, out)
        out.add(ERRORS, self.errors)

    def _failed(self, exc: Exception, level: int) -> None:
        if self._client is not None:
            self._client.close()  # whatever went wrong, start the next cycle afresh
        self.errors += 1
        if self._failing:
            level = logging.DEBUG
        self._failing = True
        _log.log(level, "cannot read containers from %s: %s", self._socket, exc)

    def _containers(self, client: EngineClient, listing: list[Any], out: Emitter) -> None:
        from monitoringserver.agent.collectors.engine import EngineError, quote_id

        running: list[tuple[str, dict[str, str]]] = []
        for c in listing:
            if not isinstance(c, dict):
                continue
            labels = _labels(c)
            is_up = str(c.get("State", "")).lower() == "running"
            out.add(UP, float(is_up), labels)
            cid = c.get("Id")
            if is_up and isinstance(cid, str) and cid and len(running) < self._max:
                running.append((cid, labels))
        for cid, labels in running:
            try:
                info = _object(client.get_json(f"/containers/{quote_id(cid)}/json"))
                out.add(RESTARTS, _num(info.get("RestartCount")) or 0.0, labels)
                stats = _object(
                    client.get_json(
                        f"/containers/{quote_id(cid)}/stats",
                        {"stream": "false", "one-shot": "true"},
                    )
                )
            except EngineError as exc:
                # 404: removed since the listing. No status: the engine is not
                # answering, so stop here rather than wait a timeout per container.
                if exc.status is None:
                    self._failed(exc, logging.WARNING)
                    return
                self.errors += 1
                _log.debug("cannot read stats of container %s: %s", cid[:12], exc)
                continue
            _stats(stats, labels, out)


def _stats(stats: dict[str, Any], labels: dict[str, str], out: Emitter) -> None:
    usage = _object(_object(stats.get("cpu_stats")).get("cpu_usage"))
    if (cpu_ns := _num(usage.get("total_usage"))) is not None:
        out.add(CPU, cpu_ns / 1e9, labels)
    mem = _object(stats.get("memory_stats"))
    if (used := _num(mem.get("usage"))) is not None:
        out.add(MEM, used, labels)
    if limit := _num(mem.get("limit")):
        out.add(MEM_LIMIT, limit, labels)
    nets = [n for n in _object(stats.get("networks")).values() if isinstance(n, dict)]
    if nets:
        out.add(RX, sum(_num(n.get("rx_bytes")) or 0.0 for n in nets), labels)
        out.add(TX, sum(_num(n.get("tx_bytes")) or 0.0 for n in nets), labels)
    blk = _object(stats.get("blkio_stats")).get("io_service_bytes_recursive")
    entries = [e for e in blk if isinstance(e, dict)] if isinstance(blk, list) else []
    if entries:
        ops = [(str(e.get("op", "")).lower(), _num(e.get("value")) or 0.0) for e in entries]
        out.add(BLK_R, sum(v for op, v in ops if op == "read"), labels)
        out.add(BLK_W, sum(v for op, v in ops if op == "write"), labels)


def _object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (engines send null)."""
    return value if isinstance(value, dict) else {}


def _num(value: Any) -> float | None:
    """A JSON number as float; anything else (null, strings, booleans) is None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _labels(c: dict[str, Any]) -> dict[str, str]:
    names = c.get("Names") or [""]
    name = str(names[0] if isinstance(names, list) else names).lstrip("/")
    return {"name": name, "id": str(c.get("Id", ""))[:12], "image": str(c.get("Image", ""))}
