"""Optional TLS on the gRPC listener, with the agent's shipper as the client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from monitoringserver.agent.encode import SeriesIds
from monitoringserver.agent.shipper import DeliveryError, Shipper, ShipperOptions
from monitoringserver.agent.spool import Spool
from monitoringserver.errors import ConfigError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.proto import monitoring_pb2 as pb
from tests.agent.server_fixture import CountingAppender

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_register(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    server = GrpcServer(
        NodeAgentService(
            CountingAppender(),
            options=GrpcOptions(tls_cert=cert, tls_key=key),
        ),
        listen="127.0.0.1:0",
    )
    port = await server.start()

    def shipper(**kw: object) -> Shipper:
        return Shipper(
            ShipperOptions(target=f"127.0.0.1:{port}", call_timeout_s=5, **kw),  # type: ignore[arg-type]
            agent_id="n1",
            node_info=pb.NodeInfo,
            series=SeriesIds(),
            spool=Spool(tmp_path / "spool"),
        )

    good, plain = shipper(tls=True, ca_file=cert), shipper()
    try:
        assert await good.session()
        with pytest.raises(DeliveryError, match="UNAVAILABLE"):
            await plain.session()
    finally:
        await good.aclose()
        await plain.aclose()
        await server.aclose(1)


def test_tls_needs_both_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both"):
        GrpcOptions(tls_cert=tmp_path / "c.pem")
    with pytest.raises(ConfigError):
        GrpcOptions(max_inflight=0)
