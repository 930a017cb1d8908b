"""A real NodeAgent gRPC server (fake stores) for agent tests: start, stop, restart."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from monitoringserver.auth.api import Principal, Scope
from monitoringserver.errors import OverloadedError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.logs.api import LogAppendResult
from monitoringserver.metrics.api import AppendResult, DedupKey
from monitoringserver.model.logs import LogBatch, LogRecord
from monitoringserver.model.samples import SampleBatch
from monitoringserver.nodes.control import ControlHub

TOKEN = "agent-token"


class Tokens:
    def authenticate(self, credential: str) -> Principal | None:
        if credential == TOKEN:
            return Principal("agent", frozenset({Scope.WRITE}))
        return None


@dataclass
class CountingAppender:
    """Keeps every accepted batch; dedup by key like the real store."""

    batches: list[tuple[DedupKey | None, SampleBatch]] = field(default_factory=list)
    seen: set[DedupKey] = field(default_factory=set)
    duplicates: int = 0
    overload: int = 0  # refuse this many appends with OverloadedError

    async def append(
        self, batch: SampleBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> AppendResult:
        if self.overload > 0:
            self.overload -= 1
            raise OverloadedError("cannot append batch: queue full", retry_after_s=0.05)
        if dedup is not None:
            if dedup in self.seen:
                self.duplicates += 1
                return AppendResult(accepted=0, duplicate=True)
            self.seen.add(dedup)
        self.batches.append((dedup, batch))
        return AppendResult(accepted=len(batch))

    def seqs(self) -> list[int]:
        return [k.batch_seq for k, _ in self.batches if k is not None]

    def samples(self) -> int:
        return sum(len(b) for _, b in self.batches)

    def names(self) -> set[str]:
        return {dict(lbl)["__name__"] for _, b in self.batches for lbl in b.series}

    def rows(self) -> Iterator[tuple[dict[str, str], int, float]]:
        for _, b in self.batches:
            for lbl, t, v in b.rows():
                yield dict(lbl), t, v


@dataclass
class CountingLogs:
    records: list[LogRecord] = field(default_factory=list)
    seen: set[DedupKey] = field(default_factory=set)

    async def append(
        self, batch: LogBatch, *, source: str = "", dedup: DedupKey | None = None
    ) -> LogAppendResult:
        if dedup is not None:
            if dedup in self.seen:
                return LogAppendResult(accepted=0, duplicate=True)
            self.seen.add(dedup)
        self.records.extend(batch.records())
        return LogAppendResult(accepted=len(batch))


class TestServer:
    """NodeAgentService on 127.0.0.1:<port>; ``stop``/``start`` keep the stores and port."""

    __test__ = False

    def __init__(self, port: int = 0, *, suggested_interval_s: float = 0.0) -> None:
        self.appender = CountingAppender()
        self.logs = CountingLogs()
        self.hub = ControlHub(None, default_timeout_s=10)
        self.port = port
        self.suggested_interval_s = suggested_interval_s
        self.server: GrpcServer | None = None
        self.service: NodeAgentService | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> int:
        self.service = NodeAgentService(
            self.appender,
            hub=self.hub,
            log_appender=self.logs,
            authenticator=Tokens(),
            options=GrpcOptions(suggested_interval_s=self.suggested_interval_s),
        )
        self.server = GrpcServer(self.service, listen=f"127.0.0.1:{self.port}")
        self.port = await self.server.start()
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.aclose(grace_s=0.5)
            self.server = None
