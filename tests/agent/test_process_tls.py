"""A real ``node-agent`` process reports over TLS without loading CPython's ``ssl``:
gRPC encrypts with its own BoringSSL, so OpenSSL never enters the agent's memory."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from tests.agent.server_fixture import CountingAppender
from tests.ingest.test_grpc_tls import make_cert

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _mapped_files(pid: int) -> set[str]:
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {Path(line.split()[-1]).name for line in lines if "/" in line}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
async def test_agent_process_over_tls_keeps_openssl_out(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    appender = CountingAppender()
    server = GrpcServer(
        NodeAgentService(appender, options=GrpcOptions(tls_cert=cert, tls_key=key)),
        listen="127.0.0.1:0",
    )
    port = await server.start()
    log = tmp_path / "agent.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "monitoringserver.agent.main",
                "--server", f"localhost:{port}", "--tls", "--ca-file", str(cert),
                "--node-id", "tls-node", "--interval", "1",
                "--spool-dir", str(tmp_path / "state"),
                "--metrics-listen", "127.0.0.1:0",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        async with asyncio.timeout(60):
            while len(appender.batches) < 2:
                assert proc.poll() is None, log.read_text()
                await asyncio.sleep(0.05)
        mapped = _mapped_files(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        await server.aclose(1)
    assert not any(name.startswith(("libssl", "_ssl.")) for name in mapped), sorted(mapped)
    assert any(name.startswith("cygrpc") for name in mapped)
    assert proc.returncode == 0, log.read_text()
