"""Label sets of new series from the decode worker: the pair tables of both ends stay in
step, the batches equal the in-process decoder's, and anything unusual is declined."""

from __future__ import annotations

import operator

import numpy as np
import pytest

from monitoringserver.ingest.decode_labels import _META, LoopPairs, WorkerPairs
from monitoringserver.ingest.remote_write import RemoteWriteDecoder
from monitoringserver.ingest.rw_wire import split_write_request
from monitoringserver.metrics.index import SeriesIndex
from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import STALE_NAN, SampleBatch
from tests.ingest.test_remote_write_new_series import LONG, _field, _host, _sample
from tests.ingest.test_remote_write_wire import T, request

Series = list[tuple[Labels, list[tuple[int, float]]]]


def _reply(worker: WorkerPairs, raw: bytes) -> bytearray | None:
    return _keyed_reply(worker, raw)[0]


def _keyed_reply(worker: WorkerPairs, raw: bytes) -> tuple[bytearray | None, list[bytes]]:
    split = split_write_request(raw)
    assert split is not None
    found = worker.reply(split)
    if found is None:
        return None, []
    parts, keys = found
    return bytearray(b"".join(bytes(p) for p in parts)), keys


def _same(found: SampleBatch, raw: bytes, keys: list[bytes] | None = None) -> None:
    """``found`` (and the worker's ``keys``) is what the in-process decoder answers for
    ``raw`` (new series)."""
    local = RemoteWriteDecoder().decode_keyed(raw, {}, compressed=False)
    assert local.batch is not None
    if keys is not None:
        assert keys == local.keys
    assert list(found.series) == list(local.batch.series)
    assert found.series_idx.tolist() == local.batch.series_idx.tolist()
    assert found.ts_ms.tolist() == local.batch.ts_ms.tolist()
    got, want = found.values.view(np.uint64), local.batch.values.view(np.uint64)
    assert got.tolist() == want.tolist()


@pytest.mark.parametrize(
    "requests",
    [
        [_host(0)],
        [_host(0), _host(1), _host(0) + _host(2)],  # later requests reuse numbered pairs
        [_host(3, (("zone", LONG),))],  # a label field with a two-byte length
        [[((("__name__", "m"), ("job", "ünïcødé ✓")), [(T, STALE_NAN), (T + 1, -0.0)])]],
        [  # a series twice in one request: one set, samples in wire order
            [
                ((("__name__", "m"), ("job", "x")), [(T, 1.0)]),
                ((("__name__", "n"),), [(T, 2.0)]),
                ((("__name__", "m"), ("job", "x")), [(T + 1, 3.0)]),
            ]
        ],
    ],
)
def test_labelled_replies_decode_like_in_process(requests: list[Series]) -> None:
    worker, loop = WorkerPairs(), LoopPairs()
    for series in requests:
        raw = request(series)
        payload, keys = _keyed_reply(worker, raw)
        assert payload is not None
        found = loop.read(payload)
        _same(found, raw, keys)
        found.ts_ms[0] = 0  # writable, like the in-process arrays


def test_pairs_are_sent_once_and_shared() -> None:
    worker, loop = WorkerPairs(), LoopPairs()
    first = _reply(worker, request(_host(0)))
    again = _reply(worker, request(_host(0)))
    assert first is not None
    assert again is not None
    assert _META.unpack_from(first)[3] == 9  # __name__ ×2, cpu ×3, instance, job, mode ×2
    assert _META.unpack_from(again)[3] == 0
    a, b = loop.read(first), loop.read(again)
    pairs = zip(a.series, b.series, strict=True)
    assert all(x is y for sa, sb in pairs for x, y in zip(sa, sb, strict=True))
    assert a.series[0][0][0] is a.series[-1][0][0]  # one name object


def test_a_full_table_starts_over_on_both_ends() -> None:
    worker, loop = WorkerPairs(max_pairs=10), LoopPairs()  # a host has 9 pairs, 1 its own
    resets = []
    for i in range(4):
        raw = request(_host(i))
        payload = _reply(worker, raw)
        assert payload is not None
        resets.append(_META.unpack_from(payload)[4])
        _same(loop.read(payload), raw)
    assert resets == [0, 0, 1, 0]
    assert len(loop.pairs) == 10


_BAD: dict[str, Series] = {
    "unsorted": [((("job", "x"), ("__name__", "m")), [(T, 1.0)])],
    "empty value": [((("__name__", "m"), ("a", ""), ("job", "x")), [(T, 1.0)])],
    "invalid name": [((("__name__", "m"), ("bad-name", "1")), [(T, 1.0)])],
    "duplicate name": [((("__name__", "m"), ("a", "1"), ("a", "2")), [(T, 1.0)])],
    "no metric name": [((("job", "x"),), [(T, 1.0)])],
}


@pytest.mark.parametrize("what", sorted(_BAD))
def test_unusual_label_sets_are_declined_and_change_nothing(what: str) -> None:
    worker, loop = WorkerPairs(), LoopPairs()
    seed = request(_host(0))
    payload = _reply(worker, seed)
    assert payload is not None
    loop.read(payload)
    # New valid pairs beside the unusual set: a decline must not number them.
    fresh = [((("__name__", "fresh"), ("job", "new")), [(T, 1.0)])]
    assert _reply(worker, request(fresh + _BAD[what])) is None
    later = request(fresh + _host(1))
    payload = _reply(worker, later)
    assert payload is not None
    _same(loop.read(payload), later)


def test_a_label_field_with_an_overlong_length_is_declined() -> None:
    label = _field(1, b"__name__") + _field(2, b"m")
    raw = _field(1, _field(1, label, overlong=True) + _sample(T, 1.0))
    split = split_write_request(raw)
    assert split is not None
    assert WorkerPairs().reply(split) is None


def test_a_label_that_is_not_a_message_is_declined() -> None:
    label = _field(1, b"__name__") + b"\x12\x05m"  # a value field cut short
    raw = _field(1, _field(1, label) + _sample(T, 1.0))
    split = split_write_request(raw)
    assert split is not None
    assert WorkerPairs().reply(split) is None


def test_pairs_are_the_in_process_decoders_so_the_index_adopts_both() -> None:
    decoder = RemoteWriteDecoder()
    worker, loop = WorkerPairs(), LoopPairs(decoder.pairs_of)
    local = decoder.decode(request(_host(0)), compressed=False)  # in-process first
    payload = _reply(worker, request(_host(0) + _host(1)))
    assert payload is not None
    found = loop.read(payload)
    theirs = {pair: pair for labels in found.series for pair in labels}
    assert all(theirs[pair] is pair for labels in local.series for pair in labels)
    index = SeriesIndex()
    index.resolve_block(local.series, "a")
    _ids, block = index.resolve_block(found.series, "a")
    assert block is not None
    assert all(map(operator.is_, block.labels, found.series[len(local.series) :]))


def test_the_shared_pair_table_is_bounded() -> None:
    decoder = RemoteWriteDecoder(max_series=4)
    loop = LoopPairs(decoder.pairs_of)
    worker = WorkerPairs()
    for i in range(6):
        raw = request([((("__name__", "m"), ("i", str(i))), [(T, 1.0)])])
        payload = _reply(worker, raw)
        assert payload is not None
        _same(loop.read(payload), raw)
        assert len(decoder._pairs) <= 4
