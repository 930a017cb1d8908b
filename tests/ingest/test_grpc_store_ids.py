"""gRPC sessions against the real store: series resolved once per session, then by id."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from monitoringserver.errors import BadDataError
from monitoringserver.ingest.grpc_common import GrpcOptions
from monitoringserver.ingest.grpc_decode import SeriesTable
from monitoringserver.ingest.grpc_server import GrpcServer, NodeAgentService
from monitoringserver.model.labels import Labels, make_labels
from monitoringserver.pipeline.metric_store import MetricStoreHandle
from monitoringserver.proto import monitoring_pb2 as pb
from monitoringserver.proto import monitoring_pb2_grpc as pb_grpc
from tests.ingest.test_grpc_server import sample_bytes, series_def
from tests.pipeline.storehelp import T0_MS, open_store


@dataclass
class Rig:
    store: MetricStoreHandle
    stub: pb_grpc.NodeAgentStub

    async def session(self, agent_id: str = "node-1") -> str:
        resp = await self.stub.Register(pb.RegisterRequest(agent_id=agent_id))
        return str(resp.session_id)

    async def send(
        self,
        session: str,
        seq: int,
        rows: list[tuple[int, int, float]],
        defs: Sequence[pb.SeriesDef] = (),
    ) -> pb.SendMetricsResponse:
        ids, ts, vals = sample_bytes(rows)
        resp: pb.SendMetricsResponse = await self.stub.SendMetrics(
            pb.MetricsBatch(
                agent_id="node-1",
                batch_seq=seq,
                session_id=session,
                series=defs,
                series_ids=ids,
                timestamps_ms=ts,
                values=vals,
            )
        )
        return resp

    async def stored(self) -> dict[Labels, list[float]]:
        await self.store.writer.commit_pending()
        return {s.labels: s.values.tolist() for s in self.store.querier.select([], 0, T0_MS)}


@pytest.fixture
async def rig(data_dir: Path) -> AsyncIterator[Rig]:
    async with open_store(data_dir, max_series_per_source=3) as h:
        service = NodeAgentService(h.handle.appender, options=GrpcOptions())
        server = GrpcServer(service, listen="127.0.0.1:0")
        port = await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            yield Rig(h.handle, pb_grpc.NodeAgentStub(channel))  # type: ignore[no-untyped-call]
        finally:
            await channel.close()
            await server.aclose(grace_s=1)


def lbl(name: str, **labels: str) -> Labels:
    return make_labels({"__name__": name, "server_id": "node-1", **labels})


async def test_session_batches_reach_the_store_by_id(rig: Rig) -> None:
    session = await rig.session()
    defs = [series_def(0, "load1"), series_def(1, "load5")]
    first = await rig.send(session, 1, [(0, T0_MS - 20, 1.0), (1, T0_MS - 20, 2.0)], defs)
    assert first.accepted == 2
    second = await rig.send(session, 2, [(1, T0_MS - 10, 3.0)])
    assert second.accepted == 1
    duplicate = await rig.send(session, 2, [(1, T0_MS - 10, 3.0)])
    assert duplicate.duplicate
    # Redefining id 0 points it at another series from then on.
    await rig.send(session, 3, [(0, T0_MS, 4.0)], [series_def(0, "load15")])
    assert await rig.stored() == {
        lbl("load1"): [1.0],
        lbl("load5"): [2.0, 3.0],
        lbl("load15"): [4.0],
    }


async def test_unknown_id_and_cardinality_limit_refuse_the_batch(rig: Rig) -> None:
    session = await rig.session()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.send(session, 1, [(0, T0_MS, 1.0)])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    defs = [series_def(i, f"m{i}") for i in range(4)]  # the per-source limit is 3
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await rig.send(session, 2, [(i, T0_MS, 1.0) for i in range(4)], defs)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "per-source limit" in str(err.value.details())
    # Nothing was remembered: a batch within the limit still resolves its series.
    ok = await rig.send(session, 3, [(0, T0_MS, 5.0), (2, T0_MS, 6.0)])
    assert ok.accepted == 2
    assert await rig.stored() == {lbl("m0"): [5.0], lbl("m2"): [6.0]}


class CountingResolver:
    def __init__(self) -> None:
        self.calls: list[list[Labels]] = []

    def __call__(self, series: Sequence[Labels]) -> NDArray[np.uint64]:
        self.calls.append(list(series))
        return np.asarray([100 + i for i in range(len(series))], dtype=np.uint64)


def test_series_table_resolves_each_series_once() -> None:
    table = SeriesTable("a")
    table.define([series_def(0, "x"), series_def(2, "z")], {})
    resolve = CountingResolver()
    ids = np.asarray([2, 0, 2], dtype=np.uint32)
    assert table.store_ids(ids, resolve).tolist() == [101, 100, 101]
    assert table.store_ids(ids[:1], resolve).tolist() == [101]
    assert len(resolve.calls) == 1
    assert table.store_ids(np.empty(0, dtype=np.uint32), resolve).tolist() == []
    table.define([series_def(0, "y"), series_def(3, "w")], {})
    assert table.store_ids(np.asarray([3, 0, 2], np.uint32), resolve).tolist() == [101, 100, 101]
    assert [[dict(s)["__name__"] for s in call] for call in resolve.calls] == [
        ["x", "z"],
        ["y", "w"],
    ]
    for bad in (1, 4):  # a hole in the table and an id past its end
        with pytest.raises(BadDataError, match=f"unknown series id {bad}"):
            table.store_ids(np.asarray([bad], np.uint32), resolve)


def _defs(*label_sets: list[tuple[str, str]]) -> list[pb.SeriesDef]:
    return [
        pb.SeriesDef(id=i, labels=[pb.Label(name=n, value=v) for n, v in labels])
        for i, labels in enumerate(label_sets)
    ]


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ([("__name__", "ok"), ("bad-name", "x")], "label name"),
        ([("__name__", "1bad")], "metric name"),
        ([("__name__", "ok"), ("a", "1"), ("a", "2")], "appears twice"),
        ([("a", "1")], "no __name__"),
    ],
)
def test_definitions_are_validated_even_after_other_sessions_cached_names(
    monkeypatch: pytest.MonkeyPatch, labels: list[tuple[str, str]], reason: str
) -> None:
    from monitoringserver.ingest import grpc_decode

    monkeypatch.setattr(grpc_decode, "_VALID_CAP", 2)  # the shared cache clears often
    for agent in ("a", "b", "c"):
        SeriesTable(agent).define(_defs([("__name__", "ok"), ("a", "1"), ("b", "2")]), {})
    assert len(grpc_decode._VALID_NAMES) <= 2
    with pytest.raises(BadDataError, match=reason):
        SeriesTable("d").define(_defs(labels), {})


def test_sparse_definitions_count_and_resolve_by_id() -> None:
    table = SeriesTable("n")
    table.define([pb.SeriesDef(id=3, labels=[pb.Label(name="__name__", value="m")])], {})
    assert len(table) == 1
    series, idx = table.resolve(np.array([3, 3], dtype=np.uint32))
    assert series == ((("__name__", "m"), ("server_id", "n")),)
    assert idx.tolist() == [0, 0]
    with pytest.raises(BadDataError, match="unknown series id 1"):
        table.resolve(np.array([1], dtype=np.uint32))
