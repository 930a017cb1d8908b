"""Spool, sequence numbers, adaptive interval, encoding, exporter, config, control."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitoringserver.agent.adaptive import IntervalController
from monitoringserver.agent.config import ConfigError, load_config, parse_interval
from monitoringserver.agent.control import CommandExecutor
from monitoringserver.agent.encode import SeriesIds
from monitoringserver.agent.exporter import render, serve_exporter
from monitoringserver.agent.main import main
from monitoringserver.agent.metrics import Emitter, counter, gauge
from monitoringserver.agent.spool import SeqAllocator, Spool
from monitoringserver.ingest.grpc_decode import SeriesTable, decode_samples

BASE = {"server_id": "n1", "instance": "n1", "job": "node"}


def test_spool_fifo_bound_and_reopen(tmp_path: Path) -> None:
    sp = Spool(tmp_path, max_bytes=1024 * 1024)
    for i in range(5):
        sp.put(bytes([i]) * 300_000)
    # 5 x 300 kB > 1 MiB: the two oldest were dropped.
    assert (len(sp), sp.dropped) == (3, 2)
    assert sp.bytes == 900_000
    (tmp_path / "00000000000000000099.batch.tmp").write_bytes(b"partial")
    again = Spool(tmp_path, max_bytes=1024 * 1024)
    assert not list(tmp_path.glob("*.tmp"))
    got = []
    while (data := again.peek()) is not None:
        got.append(data[0])
        again.pop()
    assert got == [2, 3, 4]
    assert again.bytes == 0
    again.put(b"x" * 2_000_000)  # larger than the spool: dropped
    assert (len(again), again.dropped) == (0, 1)
    again.put(b"y")
    assert Spool(tmp_path).peek() == b"y"


def test_spool_skips_vanished_file(tmp_path: Path) -> None:
    sp = Spool(tmp_path)
    sp.put(b"a")
    sp.put(b"b")
    next(iter(sorted(tmp_path.glob("*.batch")))).unlink()
    assert sp.peek() == b"b"
    sp.pop()
    sp.pop()
    assert len(sp) == 0


def test_seq_allocator_monotonic_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "seq"
    a = SeqAllocator(path, reserve=3)
    first = [a.next() for _ in range(5)]
    assert first == sorted(first)
    assert len(set(first)) == 5
    path.write_text(str(first[-1] + 10**12))  # clock went backwards, file is ahead
    b = SeqAllocator(path, reserve=3)
    assert b.next() == first[-1] + 10**12 + 1
    assert SeqAllocator(None).next() > 0


@pytest.mark.parametrize(
    ("series", "expected"),
    [
        # stable values stretch 30 -> 45 -> 67.5 ... up to 300
        ([{"cpu_usage_percent": 10.0}] * 3, [30.0, 30.0, 45.0]),
        (
            [{"cpu_usage_percent": 10.0}] * 10,
            [30, 30, 45, 67.5, 101.25, 151.875, 227.8125, 300, 300, 300],
        ),
        # a jump shrinks to the minimum at once
        (
            [{"cpu_usage_percent": 10.0}] * 5 + [{"cpu_usage_percent": 60.0}],
            [30, 30, 45, 67.5, 101.25, 30],
        ),
        # noisy but without jumps: stays
        (
            [{"cpu_usage_percent": v} for v in (10, 16, 10, 16, 10)],
            [30, 30, 30, 30, 30],
        ),
        # load is relative to the CPU count (4 CPUs: jump above 0.5)
        ([{"node_load1": 0.1}] * 3 + [{"node_load1": 2.0}], [30, 30, 45, 30]),
    ],
)
def test_adaptive_rule(series: list[dict[str, float]], expected: list[float]) -> None:
    ctl = IntervalController(cpu_count=4)
    assert [ctl.observe(v) for v in series] == pytest.approx(expected)


def test_interval_modes() -> None:
    ctl = IntervalController()
    ctl.suggest(90)
    assert ctl.current_s == 90
    ctl.suggest(1000)
    assert ctl.current_s == 300
    ctl.set_fixed(1)
    ctl.suggest(60)
    assert (ctl.current_s, ctl.adaptive) == (1, False)
    with pytest.raises(ValueError, match="at least 1 s"):
        ctl.set_fixed(0.5)
    ctl.set_adaptive()
    assert ctl.adaptive


def test_encode_round_trip_through_server_decoder() -> None:
    out = Emitter(BASE)
    g, c = gauge("a", "bytes", "A."), counter("b_total", "", "B.")
    out.add(g, 1.5, {"x": "1"})
    out.add(c, 7, {"x": "2", "empty": ""})
    ids = SeriesIds()
    batch = ids.encode(out, 1000, batch_seq=5)
    msg = ids.message(batch, agent_id="n1", known=None)
    assert msg.self_contained
    assert [d.type for d in msg.series] == ["gauge", "counter"]
    decoded = decode_samples(msg, _table(msg))
    assert [(dict(lbl)["__name__"], t, v) for lbl, t, v in decoded.rows()] == [
        ("a", 1000, 1.5),
        ("b_total", 1000, 7.0),
    ]
    known: set[int] = set()
    live = ids.message(batch, agent_id="n1", session_id="s", known=known)
    assert (live.session_id, len(live.series)) == ("s", 2)
    known.update(batch.ids)
    assert len(ids.message(batch, agent_id="n1", session_id="s", known=known).series) == 0
    limited = SeriesIds(max_series=1)
    assert limited.encode(out, 1, 1).count == 1


def _table(msg: Any) -> SeriesTable:
    t = SeriesTable("n1")
    t.define(msg.series, {})
    return t


def test_render_exposition() -> None:
    out = Emitter({"job": "node"})
    out.add(gauge("m", "bytes", "Memory."), 2.0, {"q": 'a"b\\c\nd'})
    out.add(gauge("m", "bytes", "Memory."), 0.25)
    out.add(counter("c_total", "", "Count."), float("inf"))
    text = render(out)
    assert text.splitlines() == [
        "# HELP c_total Count.",
        "# TYPE c_total counter",
        'c_total{job="node"} +Inf',
        "# HELP m Memory. Unit: bytes.",
        "# TYPE m gauge",
        'm{job="node",q="a\\"b\\\\c\\nd"} 2',
        'm{job="node"} 0.25',
    ]


async def test_exporter_over_unix_socket(tmp_path: Path) -> None:
    class A:
        last_samples = Emitter(BASE)

    A.last_samples.add(gauge("node_load1", "", "Load."), 0.5)
    sock = tmp_path / "m.sock"
    ready = asyncio.Event()
    task = asyncio.ensure_future(serve_exporter(A(), f"unix:{sock}", ready))
    try:
        await ready.wait()
        replies = []
        for request in (
            b"GET /metrics HTTP/1.1\r\n\r\n",
            b"GET /x HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\n\r\n",
        ):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(request)
            await writer.drain()
            replies.append(await reader.read())
            writer.close()
            await writer.wait_closed()
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert replies[0].startswith(b"HTTP/1.0 200 OK")
    assert b'node_load1{instance="n1",job="node",server_id="n1"} 0.5' in replies[0]
    assert replies[1].startswith(b"HTTP/1.0 404")
    assert replies[2].startswith(b"HTTP/1.0 405")


def test_config_file_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(
        """
server = "mon:9941"
token_file = "/etc/t"
node_id = "web-1"
interval = 60
labels = { rack = "a1" }
[collectors]
gpu = false
top_processes = 3
container_socket = "/run/x.sock"
[services]
allowlist = ["nginx"]
[exporter]
listen = "127.0.0.1:9100"
[logs]
files = ["/var/log/*.log"]
journald = true
"""
    )
    cfg = load_config(cfg_file, interval="adaptive", spool_dir=tmp_path)
    assert (cfg.server, cfg.node_id, cfg.interval_s, cfg.labels) == (
        "mon:9941",
        "web-1",
        None,
        {"rack": "a1"},
    )
    assert (cfg.gpu, cfg.top_processes, cfg.service_allowlist) == (False, 3, ("nginx",))
    assert (cfg.exporter_listen, cfg.log_files, cfg.journald) == (
        "127.0.0.1:9100",
        ("/var/log/*.log",),
        True,
    )
    assert cfg.container_socket == Path("/run/x.sock")
    assert load_config(None, interval="5").interval_s == 5


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("interval = 0.5", "at least 1 second"),
        ("interval = 'soon'", "cannot parse interval"),
        ("server = 5", "expected str"),
        ("spool_max_bytes = 10", "below 1 MiB"),
        ("[[broken", "cannot read agent config"),
    ],
)
def test_config_errors(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "a.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f)


def test_parse_interval() -> None:
    assert parse_interval("adaptive") is None
    assert parse_interval(2) == 2.0


def test_token_file(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("secret\n")
    assert load_config(None, token_file=tmp_path / "t").read_token() == "secret"
    with pytest.raises(ConfigError, match="cannot read token file"):
        load_config(None, token_file=tmp_path / "missing").read_token()


def test_status_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--spool-dir", str(tmp_path)]) == 1
    (tmp_path / "status.json").write_text(json.dumps({"total_reports": 4, "current_interval": 30}))
    assert main(["status", "--spool-dir", str(tmp_path)]) == 0
    assert "total_reports" in capsys.readouterr().out
    assert main(["status", "--json", "--spool-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["current_interval"] == 30
    assert main(["status", "--interval", "0", "--spool-dir", str(tmp_path)]) == 2


class Hooks:
    def __init__(self) -> None:
        self.interval: float | str | None = "unset"
        self.reported = 0

    def report_now(self) -> None:
        self.reported += 1

    def set_interval(self, seconds: float | None) -> None:
        self.interval = seconds

    def stats(self) -> Mapping[str, Any]:
        return {"total_reports": 1}


@pytest.mark.parametrize(
    ("kind", "args", "ok", "status"),
    [
        ("service", {"action": "restart", "name": "nginx"}, True, 0),
        ("service", {"action": "stop", "name": "db"}, False, 3),
        ("service", {"action": "start", "name": "sshd"}, False, 126),
        ("service", {"action": "kill", "name": "nginx"}, False, 2),
        ("set_interval", {"interval": "45"}, True, 0),
        ("set_interval", {"interval": "adaptive"}, True, 0),
        ("set_interval", {"interval": "5"}, False, 2),
        ("set_interval", {"interval": "x"}, False, 2),
        ("report_now", {}, True, 0),
        ("get_stats", {}, True, 0),
        ("reboot", {}, False, 2),
    ],
)
async def test_executor(kind: str, args: dict[str, str], ok: bool, status: int) -> None:
    def runner(argv: Sequence[str], timeout: float) -> tuple[int, str]:
        return (3, "failed to stop") if argv[2] == "db.service" else (0, "")

    result = await CommandExecutor(Hooks(), ["nginx", "db"], runner=runner).execute(kind, args)
    assert (result.ok, result.exit_status) == (ok, status)


async def test_executor_hook_failure_is_reported() -> None:
    class Bad(Hooks):
        def stats(self) -> Mapping[str, Any]:
            raise RuntimeError("no stats")

    result = await CommandExecutor(Bad(), []).execute("get_stats", {})
    assert (result.ok, result.exit_status) == (False, 1)
    assert "no stats" in result.error
    assert np.isfinite(1.0)


def test_deploy_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "agent.toml"
    cfg = load_config(example)
    assert cfg.server == "monitor.example.net:9941"
    assert cfg.interval_s is None
    assert cfg.service_allowlist == ("nginx", "postgresql")
    assert cfg.labels == {"datacenter": "dc1", "role": "web"}


async def test_run_entry_point_until_cancelled(tmp_path: Path) -> None:
    from monitoringserver.agent.main import _run

    logs = tmp_path / "app.log"
    logs.write_text("")
    cfg = load_config(
        None,
        server="127.0.0.1:9",  # nothing listens: batches are spooled
        node_id="n1",
        interval="1",
        spool_dir=tmp_path / "state",
        exporter_listen="127.0.0.1:0",
        log_files=(str(logs),),
        system=False,
        hardware=False,
        containers=False,
        processes=False,
        gpu=False,
    )
    task = asyncio.ensure_future(_run(cfg))
    async with asyncio.timeout(30):
        while not (tmp_path / "state/status.json").exists():
            await asyncio.sleep(0.05)
    task.cancel()
    await task  # _run ends cleanly on cancellation
    assert json.loads((tmp_path / "state/status.json").read_text())["node_id"] == "n1"
