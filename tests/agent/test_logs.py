"""Log tailing (rotation, truncation, multi-line, offsets), journald mapping, shipping."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from monitoringserver.agent.config import AgentConfig
from monitoringserver.agent.logship import LogShipper, journal_record, log_tasks
from monitoringserver.agent.logtail import FileTailer, detect_level
from monitoringserver.agent.shipper import Shipper, ShipperOptions
from monitoringserver.agent.spool import SeqAllocator
from monitoringserver.proto import monitoring_pb2 as pb
from tests.agent.server_fixture import TOKEN, TestServer


def write(path: Path, text: str) -> None:
    with path.open("a") as fh:
        fh.write(text)


def messages(recs: list) -> list[str]:  # type: ignore[type-arg]
    return [r.message for r in recs]


def test_tail_from_end_then_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    write(log, "old line\n")
    t = FileTailer([str(tmp_path / "*.log")], None)
    assert t.poll(first=True) == []
    write(log, "INFO one\nERROR two\npartial")
    got = t.poll()
    assert messages(got) == ["INFO one"]  # "ERROR two" pending until the next record/idle
    got += t.poll()
    assert messages(got) == ["INFO one", "ERROR two"]
    assert [r.level for r in got] == ["info", "error"]
    write(log, " line\n")
    assert messages(t.poll() + t.poll()) == ["partial line"]
    t.close()


def test_multiline_traceback(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    t = FileTailer([str(log)], None)
    t.poll(first=True)
    write(
        log,
        "ERROR request failed\n"
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\n'
        "    boom()\n"
        "ValueError: bad\n"
        "INFO next\n",
    )
    got = t.poll() + t.poll()
    assert messages(got) == [
        'ERROR request failed\nTraceback (most recent call last):\n  File "x.py", line 1, '
        "in <module>\n    boom()\nValueError: bad",
        "INFO next",
    ]
    t.close()


def test_rename_rotation_and_truncation(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    t = FileTailer([str(log)], None)
    t.poll(first=True)
    write(log, "a1\na2\n")
    log.rename(tmp_path / "app.log.1")
    write(tmp_path / "app.log.1", "a3\n")  # written to the old file after the rename
    write(log, "b1\n")
    got = t.poll() + t.poll()
    assert messages(got) == ["a1", "a2", "a3", "b1"]
    log.write_text("")  # copytruncate
    write(log, "c1\n")
    assert messages(t.poll() + t.poll()) == ["c1"]
    t.close()


def test_offsets_persist_across_restarts(tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    state = tmp_path / "offsets.json"
    log.write_text("")
    t = FileTailer([str(log)], state)
    t.poll(first=True)
    write(log, "r1\nr2\nr3\n")
    got = t.poll() + t.poll()
    t.commit(got[:2])  # r3 was never acknowledged
    t.close()
    again = FileTailer([str(log)], state)
    assert messages(again.poll(first=True) + again.poll()) == ["r3"]
    again.close()


def test_new_file_read_from_start_and_deleted_file(tmp_path: Path) -> None:
    t = FileTailer([str(tmp_path / "*.log")], None)
    t.poll(first=True)
    write(tmp_path / "new.log", "n1\n")
    assert messages(t.poll() + t.poll()) == ["n1"]
    write(tmp_path / "new.log", "n2\n")
    (tmp_path / "new.log").unlink()
    assert messages(t.poll()) == ["n2"]  # drained through the open handle
    t.close()


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("2024-01-01 WARN disk", "warn"),
        ("[error] x", "error"),
        ("nothing here", ""),
        ("fatal: crash", "fatal"),
    ],
)
def test_detect_level(text: str, level: str) -> None:
    assert detect_level(text) == level


def test_journal_record() -> None:
    rec = journal_record(
        {
            "MESSAGE": [104, 105],
            "PRIORITY": "3",
            "SYSLOG_IDENTIFIER": "sshd",
            "_SYSTEMD_UNIT": "ssh.service",
            "__REALTIME_TIMESTAMP": "1700000000123456",
            "_PID": "42",
        }
    )
    assert (rec.message, rec.level, rec.logger, rec.source) == (
        "hi",
        "error",
        "sshd",
        "journald:ssh.service",
    )
    assert rec.timestamp_ms == 1700000000123
    assert dict(rec.attrs) == {"_PID": "42"}
    assert journal_record({"MESSAGE": "m", "PRIORITY": "x"}).level == ""


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    srv = TestServer()
    await srv.start()
    yield srv
    await srv.stop()


async def test_log_shipper_retries_same_batches(tmp_path: Path, server: TestServer) -> None:
    ship = Shipper(
        ShipperOptions(target=server.target, token=TOKEN),
        agent_id="n1",
        node_info=pb.NodeInfo,
        series=None,  # type: ignore[arg-type]
        spool=None,  # type: ignore[arg-type]
    )
    acked: list[str] = []
    shipper = LogShipper(
        ship.stub, agent_id="n1", metadata=ship.metadata, seq=SeqAllocator(None), flush_s=0.05
    )
    for i in range(3):
        shipper.offer(
            pb.LogRecord(message=f"m{i}", level="info"), functools.partial(acked.append, f"m{i}")
        )
    await shipper._next_batch()
    await server.stop()
    with pytest.raises(Exception, match="UNAVAILABLE"):
        await shipper.send_pending()
    assert acked == []
    await server.start()
    async with asyncio.timeout(20):  # the channel reconnects after its short backoff
        while True:
            try:
                await shipper.send_pending()
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.05)
    await shipper.send_pending()  # nothing left: an empty stream
    assert acked == ["m0", "m1", "m2"]
    assert [r.message for r in server.logs.records] == ["m0", "m1", "m2"]
    small = LogShipper(ship.stub, agent_id="n1", metadata=(), seq=SeqAllocator(None), max_queue=1)
    small.offer(pb.LogRecord())
    small.offer(pb.LogRecord())
    assert small.dropped == 1
    await ship.aclose()


async def test_log_tasks_ship_tailed_file(tmp_path: Path, server: TestServer) -> None:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    (logdir / "app.log").write_text("before start\n")
    cfg = AgentConfig(
        server=server.target,
        token=TOKEN,
        node_id="n1",
        spool_dir=tmp_path / "state",
        log_files=(str(logdir / "*.log"),),
    )

    class A:
        def __init__(self) -> None:
            self.cfg = cfg
            self.shipper = Shipper(
                ShipperOptions(target=server.target, token=TOKEN),
                agent_id="n1",
                node_info=pb.NodeInfo,
                series=None,  # type: ignore[arg-type]
                spool=None,  # type: ignore[arg-type]
            )

    agent = A()
    tasks = [asyncio.ensure_future(t()) for t in log_tasks(agent)]
    try:
        async with asyncio.timeout(20):
            await asyncio.sleep(0.2)
            write(logdir / "app.log", "ERROR shipped\n")
            while not server.logs.records:
                await asyncio.sleep(0.05)
            while not (tmp_path / "state/logs/offsets.json").exists():
                await asyncio.sleep(0.05)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await agent.shipper.aclose()
    rec = server.logs.records[0]
    assert (rec.message, rec.level, rec.server_id, rec.logger) == (
        "ERROR shipped",
        "error",
        "n1",
        "app.log",
    )
    assert os.path.getsize(tmp_path / "state/logs/offsets.json") > 2


async def test_journald_follow_with_cursor(
    tmp_path: Path, server: TestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    args_file = tmp_path / "args"
    script = bindir / "journalctl"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {args_file}\n'
        """echo '{"MESSAGE":"started","PRIORITY":"6","SYSLOG_IDENTIFIER":"app",'"""
        """'"__CURSOR":"c1","__REALTIME_TIMESTAMP":"1000000"}'\n"""
        "echo 'not json'\n"
        "exec sleep 30\n"
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    cfg = AgentConfig(
        server=server.target,
        token=TOKEN,
        node_id="n1",
        spool_dir=tmp_path / "state",
        journald=True,
        journald_units=("app.service",),
    )

    class A:
        def __init__(self) -> None:
            self.cfg = cfg
            self.shipper = Shipper(
                ShipperOptions(target=server.target, token=TOKEN),
                agent_id="n1",
                node_info=pb.NodeInfo,
                series=None,  # type: ignore[arg-type]
                spool=None,  # type: ignore[arg-type]
            )

    cursor = tmp_path / "state/logs/journald.cursor"
    for run in (1, 2):
        agent = A()
        tasks = [asyncio.ensure_future(t()) for t in log_tasks(agent)]
        try:
            async with asyncio.timeout(20):
                while len(server.logs.records) < run or not cursor.exists():
                    await asyncio.sleep(0.05)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await agent.shipper.aclose()
    calls = args_file.read_text().splitlines()
    assert "-n 0" in calls[0]
    assert "-u app.service" in calls[0]
    assert "--after-cursor=c1" in calls[1]
    rec = server.logs.records[0]
    assert (rec.message, rec.level, rec.logger, rec.ts_ms) == ("started", "info", "app", 1000)
    assert cursor.read_text() == "c1"
