"""A real ``node-agent`` against a real ``monitoring-server serve``: it appears in
``/api/v1/nodes``, its services are controlled through the API with an audit entry, and
it survives a server restart with every sample stored exactly once.

Skipped while ``server.py`` does not yet run the gRPC listener (no ``grpc.addr``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.helpers import ServerProcess, poll

pytestmark = pytest.mark.e2e


def _status(state: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def test_second_host_control_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    grpc_port = free_port()
    srv = ServerProcess(data, "--grpc-listen", f"127.0.0.1:{grpc_port}").start()
    agent: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 10
        while not (data / "grpc.addr").exists():
            if time.monotonic() > deadline:
                pytest.skip("server.py does not run the gRPC listener yet")
            time.sleep(0.05)
        token = srv.admin_token()
        (tmp_path / "token").write_text(token)
        state = tmp_path / "agent"
        with open(tmp_path / "agent.log", "wb") as log:
            agent = subprocess.Popen(
                [
                    sys.executable, "-m", "monitoringserver.agent.main",
                    "--server", f"127.0.0.1:{grpc_port}",
                    "--token-file", str(tmp_path / "token"),
                    "--node-id", "second-host",
                    "--interval", "1",
                    "--spool-dir", str(state),
                    "--service", "cron",
                ],
                stdout=log, stderr=subprocess.STDOUT, env={**os.environ},
            )  # fmt: skip
        headers = {"Authorization": f"Bearer {token}"}

        def node() -> dict[str, Any] | None:
            r = httpx.get(f"{srv.url}/api/v1/nodes/second-host", headers=headers, timeout=5)
            body = r.json().get("data") if r.status_code == 200 else None
            return body if body and body.get("connected") else None

        info = poll(node, 60)
        assert info is not None
        assert info["status"] == "online"
        r = httpx.post(
            f"{srv.url}/api/v1/nodes/second-host/control",
            headers=headers,
            json={"command": "service", "action": "restart", "service_name": "cron"},
            timeout=60,
        )
        assert r.status_code == 200
        assert r.json()["data"]["command_id"]
        audit = httpx.get(f"{srv.url}/api/v1/audit", headers=headers, timeout=5).json()["data"]
        assert audit[0]["action"] == "control.service"
        assert audit[0]["target"] == "second-host"
        assert audit[0]["status"] in ("ok", "failed")

        srv.stop()
        poll(lambda: _status(state).get("spool_depth", 0) >= 3, 60)
        srv.start()

        def settled() -> bool:
            st = _status(state)
            return st.get("spool_depth") == 0 and st.get("last_report_status") == "ok"

        poll(settled, 90)
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        total = _status(state)["total_reports"]

        def stamps() -> list[float] | None:
            # Acknowledged samples become visible once the batcher commits (about 1 s).
            q = httpx.get(
                f"{srv.url}/api/v1/query",
                headers=headers,
                params={"query": 'node_load1{server_id="second-host"}[1h]'},
                timeout=30,
            )
            (series,) = q.json()["data"]["result"]
            found = [float(v[0]) for v in series["values"]]
            return found if len(found) >= total else None

        seen = poll(stamps, 30)
        assert seen is not None
        # One node_load1 sample per report: every report stored, none twice.
        assert len(seen) == len(set(seen)) == total
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait()
        srv.stop()
