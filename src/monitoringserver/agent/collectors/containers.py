"""Containers through the Podman (or Docker) REST API on a unix socket, with httpx.

Per container: state (``container_up``), restarts, CPU seconds, memory usage and
limit, network and block IO (cAdvisor-style names). Labels: ``name``, ``id`` (12
characters), ``image``. Absent socket: no series. At most ``max_containers`` running
containers are queried per cycle; each request has ``timeout_s``. One HTTP client
(keep-alive connection) is kept across cycles and replaced after any error; call
:meth:`ContainerCollector.close` when done.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoringserver.agent.memory import allow_ssl
from monitoringserver.agent.metrics import Emitter, counter, gauge

if TYPE_CHECKING:
    import httpx

    from monitoringserver.agent.config import AgentConfig

__all__ = ["ContainerCollector", "container_socket", "default_socket", "prepare_httpx_import"]

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


def prepare_httpx_import() -> None:
    """Call before ``import httpx``: load it without what the agent never uses.

    httpx's package init tries its command-line module, which loads click, rich and
    pygments when they happen to be installed (about 6 MiB of RSS for nothing here);
    marking it absent makes httpx fall back as on a base install. The standalone
    agent keeps ``ssl`` out of the process until here (see ``agent/memory.py``).
    """
    if "httpx" not in sys.modules:
        allow_ssl()
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


class ContainerCollector:
    name = "containers"

    def __init__(
        self,
        socket: Path | None,
        *,
        max_containers: int = 100,
        timeout_s: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._socket = socket
        self._max = max_containers
        self._timeout = timeout_s
        self._transport = transport
        self._http: httpx.Client | None = None

    def _client(self) -> httpx.Client | None:
        if self._http is not None:
            return self._http
        # Imported here: httpx (with ssl) costs ~8 MiB of RSS, paid only with containers.
        prepare_httpx_import()
        import httpx

        if self._transport is not None:
            transport = self._transport
        elif self._socket is None or not self._socket.exists():
            return None
        else:
            # Plain HTTP over a local socket: no TLS, so no CA bundle to load (saves
            # about a MiB of OpenSSL heap and the parse time).
            transport = httpx.HTTPTransport(uds=str(self._socket), verify=False)
        self._http = httpx.Client(transport=transport, base_url="http://d", timeout=self._timeout)
        return self._http

    def close(self) -> None:
        """Close the HTTP client (a later :meth:`collect` opens a new one)."""
        client, self._http = self._http, None
        if client is not None:
            client.close()

    def collect(self, out: Emitter) -> None:
        client = self._client()
        if client is None:
            return
        try:
            self._collect(client, out)
        except Exception:
            self.close()  # the engine may have restarted: reconnect next cycle
            raise

    def _collect(self, client: httpx.Client, out: Emitter) -> None:
        resp = client.get("/containers/json", params={"all": "true"})
        resp.raise_for_status()
        running = 0
        for c in resp.json():
            labels = _labels(c)
            is_up = str(c.get("State", "")).lower() == "running"
            out.add(UP, float(is_up), labels)
            if is_up and running < self._max:
                running += 1
                self._details(client, c["Id"], labels, out)

    def _details(
        self, client: httpx.Client, cid: str, labels: dict[str, str], out: Emitter
    ) -> None:
        try:
            info = client.get(f"/containers/{cid}/json").json()
            out.add(RESTARTS, float(info.get("RestartCount", 0) or 0), labels)
            stats = client.get(
                f"/containers/{cid}/stats", params={"stream": "false", "one-shot": "true"}
            ).json()
        except (httpx_errors(), ValueError) as exc:
            _log.debug("cannot read stats of container %s: %s", cid[:12], exc)
            return
        usage = (stats.get("cpu_stats") or {}).get("cpu_usage") or {}
        if "total_usage" in usage:
            out.add(CPU, usage["total_usage"] / 1e9, labels)
        mem = stats.get("memory_stats") or {}
        if "usage" in mem:
            out.add(MEM, mem["usage"], labels)
        if mem.get("limit"):
            out.add(MEM_LIMIT, mem["limit"], labels)
        nets: dict[str, Any] = stats.get("networks") or {}
        if nets:
            out.add(RX, sum(n.get("rx_bytes", 0) for n in nets.values()), labels)
            out.add(TX, sum(n.get("tx_bytes", 0) for n in nets.values()), labels)
        blk = (stats.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        if blk:
            ops = [(str(e.get("op", "")).lower(), e.get("value", 0)) for e in blk]
            out.add(BLK_R, sum(v for op, v in ops if op == "read"), labels)
            out.add(BLK_W, sum(v for op, v in ops if op == "write"), labels)


def httpx_errors() -> type[Exception]:
    prepare_httpx_import()
    import httpx

    return httpx.HTTPError


def _labels(c: dict[str, Any]) -> dict[str, str]:
    names = c.get("Names") or [""]
    name = str(names[0]).lstrip("/")
    return {"name": name, "id": str(c.get("Id", ""))[:12], "image": str(c.get("Image", ""))}
