"""Black-box: the real ``monitoring-server serve`` process on port 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import ServerProcess, poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def server(data_dir: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(data_dir).start()
    yield srv
    srv.stop()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def history(srv: ServerProcess, token: str, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{srv.url}/api/v1/metrics", params=params, headers=auth(token), timeout=10)
    assert r.status_code == 200, r.text
    data: list[dict[str, Any]] = r.json()["data"]
    return data


def test_first_start_prints_token_once_then_post_query_restart(server: ServerProcess) -> None:
    token = server.admin_token()
    assert token in server.stdout()
    assert f"dashboard: http://{server.addr}/dashboard" in server.stdout()
    assert token not in server.stderr()  # never logged
    assert (server.data_dir / "admin.token").stat().st_mode & 0o777 == 0o600
    now = time.time()
    body = [
        {
            "server_id": "web-1",
            "timestamp": now - 60,
            "metrics": {"cpu_usage": 70.5, "disk_io": {"read_iops": 120}},
        },
        {"server_id": "web-1", "timestamp": now - 30, "metrics": {"cpu_usage": 71.5}},
    ]
    r = httpx.post(f"{server.url}/metrics", json=body, headers=auth(token), timeout=10)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["accepted"] == 3
    got = poll(lambda: history(server, token, server_id="web-1", metric_type="cpu_usage"))
    assert [p[1] for p in got[0]["points"]] == [70.5, 71.5]
    assert server.stop() == 0
    server.start()
    assert token not in server.stdout()  # printed only on the very first start
    got = history(server, token, server_id="web-1")
    assert {d["metric"] for d in got} == {"cpu_usage", "disk_io_read_iops"}


def test_sigkill_after_acknowledged_writes_loses_nothing(data_dir: Path) -> None:
    srv = ServerProcess(data_dir).start()
    token = srv.admin_token()
    base = int(time.time()) - 3000
    acknowledged = 0
    with httpx.Client(headers=auth(token), timeout=10) as client:
        for i in range(50):
            body = [
                {
                    "server_id": f"h{j}",
                    "timestamp": base + i * 10,
                    "metrics": {"m": float(i), "n": {"x": float(j)}},
                }
                for j in range(20)
            ]
            r = client.post(f"{srv.url}/api/v1/metrics", json=body)
            assert r.status_code == 200, r.text
            acknowledged += r.json()["data"]["accepted"]
    srv.kill()
    assert srv.proc is not None
    assert srv.proc.returncode == -signal.SIGKILL
    srv.start()
    data = history(srv, token, start_time=str(base), end_time=str(base + 600))
    assert sum(len(d["points"]) for d in data) == acknowledged == 2000
    assert srv.stop() == 0


def test_sigterm_exits_zero_within_the_shutdown_bound(server: ServerProcess) -> None:
    # stop() raises if the process is still running after timeout_s
    assert server.stop(signal.SIGTERM, timeout_s=10) == 0
    assert not (server.data_dir / "http.addr").exists()


def test_second_server_on_same_dir_refuses(server: ServerProcess) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "monitoringserver",
            "serve",
            "--data-dir",
            str(server.data_dir),
            "--http-listen",
            "127.0.0.1:0",
            "--no-local-agent",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 1
    assert "is in use by pid" in out.stderr


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "monitoringserver", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_cli_through_the_running_server(server: ServerProcess) -> None:
    d = str(server.data_dir)
    out = cli("token", "create", "--name", "reader", "--scope", "monitoring:read", "--data-dir", d)
    assert out.returncode == 0, out.stderr
    reader = out.stdout.strip()
    r = httpx.get(f"{server.url}/api/v1/status/storage", headers=auth(reader), timeout=10)
    assert r.status_code == 200
    r = httpx.post(
        f"{server.url}/api/v1/metrics",
        json={"server_id": "a", "metrics": {"x": 1}},
        headers=auth(reader),
        timeout=10,
    )
    assert r.status_code == 403
    out = cli("token", "list", "--json", "--data-dir", d)
    assert {t["name"] for t in json.loads(out.stdout)} == {"admin", "reader"}
    out = cli("token", "revoke", "reader", "--data-dir", d)
    assert out.returncode == 0, out.stderr
    r = httpx.get(f"{server.url}/api/v1/status/storage", headers=auth(reader), timeout=10)
    assert r.status_code == 401
    server.stop()
    out = cli("token", "list", "--all", "--json", "--data-dir", d)  # direct mode now
    assert out.returncode == 0, out.stderr
    assert {t["name"] for t in json.loads(out.stdout)} == {"admin", "reader"}


BAD_INPUT = [
    (b"{nope", 400),
    (b'{"metrics": {"a": 1}}', 400),
    (b'{"server_id": "s", "metrics": {"a": "1"}}', 400),
    (b'{"server_id": "s", "metrics": {"a": true}}', 400),
    (b'{"server_id": "s", "timestamp": 99999999999999, "metrics": {"a": 1}}', 400),
    (b"x" * (17 * 1024 * 1024), 413),
]


def test_bad_input_and_auth_errors_keep_the_server_serving(server: ServerProcess) -> None:
    token = server.admin_token()
    with httpx.Client(timeout=30) as client:
        for body, status in BAD_INPUT:
            r = client.post(f"{server.url}/api/v1/metrics", content=body, headers=auth(token))
            assert r.status_code == status, (body[:60], r.text)
            assert r.json()["status"] == "error"
            assert r.json()["error"].startswith("cannot ")
        assert client.get(f"{server.url}/api/v1/metrics").status_code == 401
        assert (
            client.get(f"{server.url}/api/v1/metrics", headers=auth("mst_bad")).status_code == 401
        )
        assert client.get(f"{server.url}/healthz").status_code == 200
        r = client.get(f"{server.url}/api/v1/health")
        assert r.status_code == 200
        assert r.json()["components"]["storage"]["status"] == "healthy"
        r = client.get(f"{server.url}/metrics", headers=auth(token))
        assert "monitoring_http_request_duration_seconds" in r.text
