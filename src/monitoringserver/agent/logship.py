"""Ship log records (tailed files, journald) to the server with ``StreamLogs``.

Sources put ``(record, commit)`` pairs on a bounded queue (``max_queue``; when full the
new record is dropped and counted in :attr:`LogShipper.dropped`). The sender groups up
to ``batch_records`` records (or what arrived within ``flush_s``) into a ``LogBatch``
with the next ``batch_seq`` and sends the unacknowledged batches on one ``StreamLogs``
call; when the server answers, each record's ``commit`` runs (file offsets, journald
cursor). A failed call is retried with the *same* batches and sequence numbers, so the
server's dedup applies them once.

journald: ``journalctl -o json -f`` (``--after-cursor`` the persisted cursor, else from
now; ``-u`` per configured unit); PRIORITY maps to the level, SYSLOG_IDENTIFIER (or the
unit) to the logger.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol

import grpc

from monitoringserver.agent.config import AgentConfig
from monitoringserver.agent.logtail import FileTailer, TailRecord
from monitoringserver.agent.spool import SeqAllocator
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc

__all__ = ["LogShipper", "journal_record", "log_tasks"]

_log = logging.getLogger(__name__)
_PRIORITY = ["critical", "critical", "critical", "error", "warning", "info", "info", "debug"]

Commit = Callable[[], None]


class _AgentLike(Protocol):
    cfg: AgentConfig

    @property
    def shipper(self) -> Any: ...


def journal_record(entry: dict[str, Any]) -> pb.LogRecord:
    """One ``journalctl -o json`` entry as a LogRecord."""
    message = entry.get("MESSAGE", "")
    if isinstance(message, list):  # non-UTF-8 messages come as byte arrays
        message = bytes(int(b) & 0xFF for b in message).decode("utf-8", "replace")
    try:
        level = _PRIORITY[int(entry.get("PRIORITY", 6))]
    except (ValueError, IndexError):
        level = ""
    unit = str(entry.get("_SYSTEMD_UNIT", ""))
    return pb.LogRecord(
        timestamp_ms=int(entry.get("__REALTIME_TIMESTAMP", 0)) // 1000,
        level=level,
        logger=str(entry.get("SYSLOG_IDENTIFIER", "") or unit),
        source=f"journald:{unit}" if unit else "journald",
        message=str(message),
        attrs={k: str(entry[k]) for k in ("_PID", "_HOSTNAME") if k in entry},
    )


class LogShipper:
    def __init__(
        self,
        stub: Callable[[], pb_grpc.NodeAgentStub],
        *,
        agent_id: str,
        metadata: tuple[tuple[str, str], ...],
        seq: SeqAllocator,
        max_queue: int = 10_000,
        batch_records: int = 500,
        flush_s: float = 1.0,
        max_batches_per_call: int = 20,
        call_timeout_s: float = 15.0,
    ) -> None:
        self._stub = stub
        self._agent_id = agent_id
        self._metadata = metadata
        self._seq = seq
        self.queue: asyncio.Queue[tuple[pb.LogRecord, Commit | None]] = asyncio.Queue(max_queue)
        self._batch_records = batch_records
        self._flush_s = flush_s
        self._max_batches = max_batches_per_call
        self._timeout = call_timeout_s
        self._unacked: list[tuple[pb.LogBatch, list[Commit]]] = []
        #: Run once after each acknowledged call (persist offsets / cursor).
        self.after_ack: list[Callable[[], None]] = []
        self.dropped = 0
        self.sent_records = 0

    def offer(self, record: pb.LogRecord, commit: Commit | None = None) -> None:
        try:
            self.queue.put_nowait((record, commit))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                _log.warning("log queue full: %d records dropped so far", self.dropped)

    async def _next_batch(self) -> None:
        records: list[pb.LogRecord] = []
        commits: list[Commit] = []
        record, commit = await self.queue.get()
        records.append(record)
        if commit is not None:
            commits.append(commit)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._flush_s):
                while len(records) < self._batch_records:
                    record, commit = await self.queue.get()
                    records.append(record)
                    if commit is not None:
                        commits.append(commit)
        batch = pb.LogBatch(agent_id=self._agent_id, batch_seq=self._seq.next(), records=records)
        self._unacked.append((batch, commits))

    async def send_pending(self) -> None:
        """One StreamLogs call with the unacknowledged batches; raises on failure."""
        batches = self._unacked[: self._max_batches]

        async def gen() -> Any:
            for b, _ in batches:
                yield b

        await self._stub().StreamLogs(gen(), metadata=self._metadata, timeout=self._timeout)
        del self._unacked[: len(batches)]
        for b, commits in batches:
            self.sent_records += len(b.records)
            for c in commits:
                c()
        for hook in self.after_ack:
            hook()

    async def run(self) -> None:
        failures = 0
        while True:
            if not self._unacked:
                await self._next_batch()
            try:
                await self.send_pending()
                failures = 0
            except grpc.aio.AioRpcError as exc:
                failures += 1
                _log.debug("cannot ship logs: %s", exc.code())
                await asyncio.sleep(min(60.0, 2 ** min(failures, 6)) * (0.5 + random.random()))


async def _tail_files(shipper: LogShipper, tailer: FileTailer, poll_s: float = 1.0) -> None:
    first = True
    try:
        while True:
            records = await asyncio.to_thread(tailer.poll, first=first)
            first = False
            for r in records:
                shipper.offer(_file_record(r), _committer(tailer, r))
            await asyncio.sleep(poll_s)
    finally:
        tailer.close()


def _file_record(r: TailRecord) -> pb.LogRecord:
    return pb.LogRecord(
        timestamp_ms=r.ts_ms,
        level=r.level,
        logger=Path(r.source).name,
        source=r.source,
        message=r.message,
    )


def _committer(tailer: FileTailer, r: TailRecord) -> Commit:
    return lambda: tailer.commit([r], save=False)


async def _journald(shipper: LogShipper, cursor_file: Path, units: tuple[str, ...]) -> None:
    argv = ["journalctl", "-o", "json", "-f", "--no-pager"]
    cursor = _read_cursor(cursor_file)
    argv += [f"--after-cursor={cursor}"] if cursor else ["-n", "0"]
    for unit in units:
        argv += ["-u", unit]
    acked = [cursor]
    shipper.after_ack.append(lambda: _save_cursor(cursor_file, acked[0]))
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    try:
        async for line in proc.stdout:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            c = str(entry.get("__CURSOR", ""))
            shipper.offer(journal_record(entry), functools.partial(acked.__setitem__, 0, c))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _read_cursor(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _save_cursor(path: Path, cursor: str) -> None:
    if cursor and (not path.exists() or path.read_text() != cursor):
        tmp = path.with_suffix(".tmp")
        tmp.write_text(cursor)
        tmp.replace(path)


def log_tasks(agent: _AgentLike) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    """The coroutines shipping the configured logs of ``agent`` (for ``Agent.extra_tasks``)."""
    cfg = agent.cfg
    state = cfg.state_dir / "logs"
    state.mkdir(parents=True, exist_ok=True)
    ship = agent.shipper
    shipper = LogShipper(
        ship.stub, agent_id=cfg.node_id, metadata=ship.metadata, seq=SeqAllocator(state / "seq")
    )
    tasks: list[Callable[[], Coroutine[Any, Any, None]]] = [shipper.run]
    if cfg.log_files:
        tailer = FileTailer(list(cfg.log_files), state / "offsets.json")
        shipper.after_ack.append(tailer.save)
        tasks.append(lambda: _tail_files(shipper, tailer))
    if cfg.journald:
        tasks.append(lambda: _journald(shipper, state / "journald.cursor", cfg.journald_units))
    return tasks
