"""The label sets of new series, passed from the decode worker to the event loop.

A request with series the decode worker does not know by store id still needs their
label sets on the event loop (the store creates series by labels). The worker parses
them; the event loop should only assemble tuples. Both ends keep the same numbered
table of label pairs, built in the order of the worker's replies:

* :class:`WorkerPairs` (in the worker) numbers each distinct encoded ``Label`` message
  it has answered and writes a ``_LABELLED`` reply (:meth:`WorkerPairs.reply`): the
  samples, each series' pair numbers, and the encoded ``Label`` message of each pair
  numbered for the first time;
* :class:`LoopPairs` (on the event loop) reads replies in the order they arrive
  (:meth:`LoopPairs.read`), adds the new pairs to its table (the shared
  ``(name, value)`` tuple of each, from the in-process decoder's
  :meth:`~monitoringserver.ingest.remote_write.RemoteWriteDecoder.pairs_of`, so both
  ways of decoding give the index the same objects) and answers a
  :class:`~monitoringserver.model.samples.SampleBatch` equal to the one
  :meth:`~monitoringserver.ingest.remote_write.RemoteWriteDecoder.decode_keyed` would
  answer. The series' keys stay in the worker (:meth:`WorkerPairs.reply` returns them):
  the event loop learns the store ids of a reply's series by the reply's id.

The worker answers only label sets the in-process decoder would take as they are:
canonically encoded label fields, valid label names, no empty value, names strictly
ascending with exactly one ``__name__`` per series. Anything else declines (``None``),
and the event loop decodes the request itself, with today's results and errors. A
declined request leaves the worker's table as it was. When the table would pass
``max_pairs`` the worker starts it over and the reply says so (``reset``).

Reply layout (little-endian): ``<5I`` samples, series, pair references, new pairs,
reset, and 4 bytes of padding; then ``ts_ms`` (int64), ``values`` (float64),
``series_idx`` (uint32) per sample; per series the end of its pair references (uint32);
the references (uint32); per new pair its encoded length (uint32); the new pairs'
encoded ``Label`` messages.
"""

from __future__ import annotations

import operator
import re
import struct
from collections.abc import Callable
from itertools import accumulate, compress, repeat
from typing import TYPE_CHECKING

import numpy as np
from google.protobuf.message import DecodeError

from monitoringserver.ingest.remote_write import RemoteWriteDecoder, field_stops
from monitoringserver.ingest.rw_wire import WireSplit
from monitoringserver.model.labels import METRIC_NAME, sorted_within
from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto.prompb import remote_pb2

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["LoopPairs", "WorkerPairs"]

_META = struct.Struct("<5I4x")
_LABEL_NAME_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
#: Pairs either table holds before the worker starts it over.
DEFAULT_MAX_PAIRS = 1_000_000


class WorkerPairs:
    """The worker's end: encoded ``Label`` message → pair number (see the module
    docstring). ``max_pairs``: table size above which it starts over."""

    def __init__(self, max_pairs: int = DEFAULT_MAX_PAIRS) -> None:
        self.max_pairs = max_pairs
        self._numbers: dict[bytes, int] = {}
        self._names: list[str] = []  # the label name of each pair number
        self._valid_names: set[str] = {METRIC_NAME}

    def reply(self, split: WireSplit) -> tuple[list[Buffer], list[bytes]] | None:
        """The ``_LABELLED`` payload of ``split`` (a list of buffers to send in order)
        and the key of each of its series (in batch order), or ``None`` to decline; the
        table changes only when a payload is returned."""
        keys = split.prefixes
        if len(dict.fromkeys(keys)) == len(keys):
            idx = np.arange(len(keys), dtype=np.uint32)
        else:  # a series repeated: one set, its samples in wire order (as in-process)
            first: dict[bytes, int] = {}
            idx = np.asarray([first.setdefault(k, len(first)) for k in keys], np.uint32)
            keys = list(first)
        try:
            encoded = list(remote_pb2.TimeSeriesRaw.FromString(b"".join(keys)).labels)
        except DecodeError:
            return None
        stops = field_stops(encoded, keys)
        if stops is None:
            return None
        numbers, names = self._numbers, self._names
        refs = list(map(numbers.get, encoded))
        reset = False
        new: list[tuple[bytes, str, str]] = []
        if None in refs:
            unseen = dict.fromkeys(compress(encoded, map(operator.is_, refs, repeat(None))))
            if numbers and len(numbers) + len(unseen) > self.max_pairs:
                reset = True  # start over (committed with the reply)
                numbers, names = {}, []
                refs = [None] * len(encoded)
                unseen = dict.fromkeys(encoded)
            found = self._parse(unseen)
            if found is None:
                return None
            new = found
            known = len(names)
            fresh = {item: known + i for i, (item, _n, _v) in enumerate(new)}
            numbered = [fresh[e] if r is None else r for e, r in zip(encoded, refs, strict=True)]
            new_names = [name for _item, name, _value in new]
            set_names = [names[r] if r < known else new_names[r - known] for r in numbered]
        else:
            numbered = refs  # type: ignore[assignment]
            set_names = list(map(names.__getitem__, numbered))
        if set_names.count(METRIC_NAME) != len(stops) or not sorted_within(set_names, stops):
            return None
        strings = [item for item, _name, _value in new]
        payload: list[Buffer] = [
            _META.pack(len(split.ts_ms), len(keys), len(numbered), len(new), reset),
            np.ascontiguousarray(split.ts_ms, dtype=np.int64).data,
            np.ascontiguousarray(split.values, dtype=np.float64).data,
            np.repeat(idx, split.counts).data,
            np.asarray(stops, dtype=np.uint32).data,
            np.asarray(numbered, dtype=np.uint32).data,
            np.fromiter(map(len, strings), dtype=np.uint32, count=len(strings)).data,
            b"".join(strings),
        ]
        for item, name, _value in new:  # committed last: a decline leaves the table as it was
            numbers[item] = len(names)
            names.append(name)
        self._numbers, self._names = numbers, names
        return payload, keys

    def _parse(self, items: dict[bytes, None]) -> list[tuple[bytes, str, str]] | None:
        """``(encoded, name, value)`` of each new encoded pair of ``items``, in order, or
        ``None`` when one is not a valid label with a value."""
        out: list[tuple[bytes, str, str]] = []
        for item in items:
            try:
                label = remote_pb2.Label.FromString(item)
            except DecodeError:
                return None
            name, value = label.name, label.value
            if not value:
                return None
            if name not in self._valid_names:
                if not _LABEL_NAME_RE.fullmatch(name):
                    return None
                self._valid_names.add(name)
            out.append((item, name, value))
        return out


class LoopPairs:
    """The event loop's end: pair number → shared ``(name, value)`` tuple. Read every
    ``_LABELLED`` reply here, in arrival order (the table follows the worker's).
    ``pairs_of``: encoded ``Label`` messages → their shared pairs (by default a
    decoder of its own)."""

    def __init__(self, pairs_of: Callable[[list[bytes]], list[tuple[str, str]]] | None = None):
        self.pairs: list[tuple[str, str]] = []
        self.pairs_of = pairs_of if pairs_of is not None else RemoteWriteDecoder().pairs_of

    def read(self, payload: bytearray) -> SampleBatch:
        """The batch of one ``_LABELLED`` payload (the sample arrays share ``payload``,
        so they are writable; the caller must not reuse it)."""
        samples, n_series, n_refs, n_new, reset = _META.unpack_from(payload)
        at = _META.size
        ts = np.frombuffer(payload, np.int64, samples, at)
        at += 8 * samples
        values = np.frombuffer(payload, np.float64, samples, at)
        at += 8 * samples
        series_idx = np.frombuffer(payload, np.uint32, samples, at)
        at += 4 * samples
        ints = np.frombuffer(payload, np.uint32, n_series + n_refs + n_new, at).tolist()
        at += 4 * len(ints)
        stops = ints[:n_series]
        refs = ints[n_series : n_series + n_refs]
        pairs = self.pairs
        if reset:
            pairs.clear()
        if n_new:
            new = bytes(payload[at:])
            ends = list(accumulate(ints[n_series + n_refs :]))
            cuts = map(slice, [0, *ends[:-1]], ends)
            pairs.extend(self.pairs_of(list(map(new.__getitem__, cuts))))
        objs = list(map(pairs.__getitem__, refs))
        series = list(map(tuple, map(objs.__getitem__, map(slice, [0, *stops[:-1]], stops))))
        return SampleBatch(series, series_idx, ts, values)
