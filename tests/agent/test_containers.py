"""The container collector against a fake Podman/Docker API on a real unix socket."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from monitoringserver.agent.collectors.containers import ContainerCollector
from monitoringserver.agent.metrics import Emitter
from tests.agent.unix_http import Route, serve

BASE = {"server_id": "n1", "instance": "n1", "job": "node"}
CID = "abcdef0123456789"
WEB = {"name": "web", "id": "abcdef012345", "image": "nginx:1"}
STATS = {
    "cpu_stats": {"cpu_usage": {"total_usage": 3_000_000_000}},
    "memory_stats": {"usage": 1024, "limit": 4096},
    "networks": {"eth0": {"rx_bytes": 10, "tx_bytes": 20}, "eth1": {"rx_bytes": 1}},
    "blkio_stats": {
        "io_service_bytes_recursive": [{"op": "Read", "value": 100}, {"op": "Write", "value": 50}]
    },
}


def _routes() -> dict[str, Route]:
    return {
        "/containers/json": [
            {"Id": CID, "Names": ["/web"], "Image": "nginx:1", "State": "running"},
            {"Id": "ffff00001111", "Names": ["old"], "Image": "busybox", "State": "exited"},
        ],
        f"/containers/{CID}/json": {"RestartCount": 2},
        f"/containers/{CID}/stats": STATS,
    }


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "podman.sock"


@pytest.fixture
def collector(sock: Path) -> Iterator[ContainerCollector]:
    c = ContainerCollector(sock, timeout_s=5.0)
    try:
        yield c
    finally:
        c.close()


def _collect(collector: ContainerCollector) -> Emitter:
    out = Emitter(BASE)
    collector.collect(out)
    return out


def test_every_metric_over_one_kept_connection(sock: Path, collector: ContainerCollector) -> None:
    with serve(sock, _routes()) as server:
        out = _collect(collector)
        again = _collect(collector)  # the kept connection serves the next cycle too
    assert len(again) == len(out)
    assert server.connections == 1
    assert server.requests == 2 * [
        "/containers/json?all=true",
        f"/containers/{CID}/json",
        f"/containers/{CID}/stats?stream=false&one-shot=true",
    ]
    expected = {
        "container_up": 1.0,
        "container_restarts_total": 2,
        "container_cpu_usage_seconds_total": 3.0,
        "container_memory_usage_bytes": 1024,
        "container_spec_memory_limit_bytes": 4096,
        "container_network_receive_bytes_total": 11,
        "container_network_transmit_bytes_total": 20,
        "container_fs_reads_bytes_total": 100,
        "container_fs_writes_bytes_total": 50,
    }
    assert {name: out.value(name, **WEB) for name in expected} == expected
    assert out.value("container_up", name="old", id="ffff00001111", image="busybox") == 0.0
    assert out.value("container_cpu_usage_seconds_total", name="old") is None
    assert out.value("container_engine_errors_total", **BASE) == 0
    assert collector.errors == 0


@pytest.mark.parametrize(
    ("listing", "errors"),
    [
        ((500, {"message": "database is locked"}), 1),  # non-2xx
        ({"not": "a list"}, 1),  # wrong shape
        (lambda h: setattr(h, "close_connection", True), 1),  # closed without answer
    ],
)
def test_failed_listing_is_counted_not_raised_and_the_next_cycle_recovers(
    sock: Path,
    collector: ContainerCollector,
    caplog: pytest.LogCaptureFixture,
    listing: Route,
    errors: int,
) -> None:
    routes = _routes()
    good = routes["/containers/json"]
    routes["/containers/json"] = listing
    with serve(sock, routes) as server, caplog.at_level(logging.DEBUG):
        first = _collect(collector)
        second = _collect(collector)
        routes["/containers/json"] = good
        recovered = _collect(collector)
    assert first.value("container_engine_errors_total") == errors
    assert second.value("container_engine_errors_total") == 2 * errors
    assert first.value("container_up") is None
    assert recovered.value("container_up", **WEB) == 1.0
    assert recovered.value("container_engine_errors_total") == 2 * errors
    assert server.connections == 3  # reopened after each error
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once when it starts failing, not every cycle
    assert "cannot read containers from" in warnings[0].getMessage()
    assert any("answers again" in r.getMessage() for r in caplog.records)


def test_container_gone_since_the_listing_is_skipped(
    sock: Path, collector: ContainerCollector
) -> None:
    routes = _routes()
    listing: list[dict[str, Any]] = [
        {"Id": "gone0000", "Names": ["/gone"], "Image": "x", "State": "running"},
        *routes["/containers/json"],  # type: ignore[misc]
    ]
    routes["/containers/json"] = listing
    with serve(sock, routes):
        out = _collect(collector)
    assert out.value("container_up", name="gone") == 1.0
    assert out.value("container_restarts_total", name="gone") is None  # 404: no values
    assert out.value("container_cpu_usage_seconds_total", **WEB) == 3.0  # the next one still
    assert out.value("container_engine_errors_total") == 1


def test_hung_engine_stops_the_cycle_after_one_timeout(sock: Path) -> None:
    release = threading.Event()

    def hang(handler: BaseHTTPRequestHandler) -> None:
        release.wait(10)
        handler.close_connection = True

    names = [f"c{i}" for i in range(5)]
    routes: dict[str, Route] = {
        "/containers/json": [
            {"Id": n, "Names": [n], "Image": "x", "State": "running"} for n in names
        ],
        **{f"/containers/{n}/json": hang for n in names},
    }
    collector = ContainerCollector(sock, timeout_s=0.2)
    try:
        with serve(sock, routes) as server:
            out = _collect(collector)
            release.set()
    finally:
        collector.close()
    assert server.requests == ["/containers/json?all=true", "/containers/c0/json"]
    assert [out.value("container_up", name=n) for n in names] == [1.0] * 5
    assert out.value("container_engine_errors_total") == 1


def test_max_containers_bounds_the_detail_requests(sock: Path) -> None:
    routes = _routes()
    routes["/containers/json"] = [
        {"Id": f"id{i}", "Names": [f"/c{i}"], "Image": "x", "State": "running"} for i in range(3)
    ]
    collector = ContainerCollector(sock, max_containers=1)
    try:
        with serve(sock, routes) as server:
            out = _collect(collector)
    finally:
        collector.close()
    assert len(server.requests) == 2  # the listing, then one container (404 here)
    assert [out.value("container_up", name=f"c{i}") for i in range(3)] == [1.0] * 3


def test_odd_engine_answers_produce_what_they_can(
    sock: Path, collector: ContainerCollector
) -> None:
    routes: dict[str, Route] = {
        "/containers/json": [
            "not an object",
            {"Names": [], "State": "running"},  # no id: no details
            {"Id": CID, "Names": "/web", "Image": "nginx:1", "State": "Running"},
        ],
        f"/containers/{CID}/json": {"RestartCount": None},
        f"/containers/{CID}/stats": {
            "cpu_stats": None,
            "memory_stats": {"usage": "lots", "limit": 0},
            "networks": {"eth0": {"rx_bytes": True}, "lo": None},
            "blkio_stats": {"io_service_bytes_recursive": None},
        },
    }
    with serve(sock, routes) as server:
        out = _collect(collector)
    assert len(server.requests) == 3
    assert out.value("container_up", **WEB) == 1.0
    assert out.value("container_restarts_total", **WEB) == 0
    assert out.value("container_network_receive_bytes_total", **WEB) == 0
    for absent in (
        "container_cpu_usage_seconds_total",
        "container_memory_usage_bytes",
        "container_spec_memory_limit_bytes",
        "container_fs_reads_bytes_total",
    ):
        assert out.value(absent) is None
    assert out.value("container_engine_errors_total") == 0


def test_absent_or_vanished_socket_gives_no_series(sock: Path) -> None:
    assert len(_collect(ContainerCollector(None))) == 0
    collector = ContainerCollector(sock)
    assert len(_collect(collector)) == 0  # configured, engine not started yet
    with serve(sock, _routes()):
        assert _collect(collector).value("container_up", **WEB) == 1.0
    # server_close() removed nothing: a stale socket file nobody listens on is an error.
    stale = _collect(collector)
    assert stale.value("container_engine_errors_total") == 1
    assert collector.client is not None
    sock.unlink()
    assert len(_collect(collector)) == 0  # the engine went away: no series, no error
    assert collector.client is None
    assert collector.errors == 1
