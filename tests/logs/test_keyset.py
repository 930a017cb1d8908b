"""Key sets (Elias-Fano coded fingerprints): exact round trip, no false negatives,
about the requested false-positive rate, exact merges; UUID groups left out of the
keys and never probed."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from monitoringserver.errors import StorageError
from monitoringserver.logs.keyset import FRESH_BITS, KeySet, bits_for
from monitoringserver.logs.tokenkeys import key_hashes, line_key_hashes, uuid_group_tokens

_RNG = np.random.default_rng(7)
_HASHES = _RNG.integers(0, 2**64, size=50_000, dtype=np.uint64)


@pytest.mark.parametrize("bits", [1, 8, 20, bits_for(50_000, 0.01), FRESH_BITS, 64])
def test_round_trip_holds_every_key(bits: int) -> None:
    ks = KeySet.build(np.concatenate([_HASHES, _HASHES[:100]]), bits)
    again = KeySet.from_bytes(ks.to_bytes())
    want = np.unique(_HASHES >> np.uint64(64 - bits))
    assert np.array_equal(again.fingerprints(), want)
    assert again.keys == len(want)
    assert len(again) == len(ks.to_bytes())
    assert all(again.might_contain_all(_HASHES[i : i + 3]) for i in range(0, 50_000, 101))


@pytest.mark.parametrize("rate", [0.05, 0.01, 0.002])
def test_false_positive_rate_and_size(rate: float) -> None:
    ks = KeySet.build(_HASHES, bits_for(len(_HASHES), rate))
    others = _RNG.integers(0, 2**64, size=20_000, dtype=np.uint64)
    fp = sum(ks.might_contain_all(others[i : i + 1]) for i in range(len(others)))
    assert fp / len(others) <= rate * 1.5
    # Elias-Fano: log2(1/p) + ~2 bits per key (an optimal bloom filter: 1.44 log2(1/p)).
    assert len(ks) * 8 / ks.keys <= np.log2(1 / rate) + 3


def test_merge_is_the_union_at_the_requested_rate() -> None:
    parts = [KeySet.build(_HASHES[i::4], FRESH_BITS) for i in range(4)]
    shared = KeySet.build(_HASHES[:1000], FRESH_BITS)  # keys in two sources count once
    merged = KeySet.merged([*parts, shared], 0.01)
    assert merged.bits == bits_for(merged.keys, 0.01)
    want = KeySet.build(_HASHES, merged.bits)
    assert np.array_equal(merged.fingerprints(), want.fingerprints())
    # Sources shorter than the rate needs: the union keeps their bits.
    short = KeySet.merged([KeySet.build(_HASHES, 12)], 0.0001)
    assert short.bits == 12
    with pytest.raises(ValueError, match="at least one"):
        KeySet.merged([], 0.01)


def test_empty_set_and_bad_input() -> None:
    empty = KeySet.from_bytes(KeySet.build(np.empty(0, dtype=np.uint64), 20).to_bytes())
    assert empty.keys == 0
    assert not empty.might_contain_all(_HASHES[:1])
    assert empty.might_contain_all(_HASHES[:0])
    assert len(empty.fingerprints()) == 0
    data = KeySet.build(_HASHES, 24).to_bytes()
    for bad in (b"LKS1", b"XXXX" + data[4:], data[:-1], data + b"\0"):
        with pytest.raises(StorageError, match="cannot read token key set"):
            KeySet.from_bytes(bad)
    with pytest.raises(ValueError, match="bits"):
        KeySet.build(_HASHES, 0)
    with pytest.raises(ValueError, match="fp_rate"):
        bits_for(10, 1.0)


@pytest.mark.parametrize(
    ("needle", "groups"),
    [
        (
            "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab",
            {"3f2a9c1e", "1b2c", "4d3e", "8f90", "0123456789ab"},
        ),
        ("id=DEADBEEF-x", {"deadbeef"}),  # 8 hex digits, a dash after: a first group
        ("-beef-", {"beef"}),
        ("beef- -beef", set()),  # a middle group has dashes on both sides
        ("-0123456789ab", {"0123456789ab"}),
        ("0123456789ab-", set()),  # a last group has a dash before it
        ("deadbeefx-1", set()),  # not only hex digits
        ("port 8080 up", set()),
    ],
)
def test_uuid_group_tokens(needle: str, groups: set[str]) -> None:
    assert uuid_group_tokens(needle) == groups


def test_groups_of_uuids_are_left_out_of_the_keys() -> None:
    rid = str(uuid.UUID(int=12345 << 64 | 678))
    line = f"req {rid} ok 1b2c-4d3e"
    with_groups = set(line_key_hashes([line]).tolist())
    without = set(line_key_hashes([line], groups_dropped=True).tolist())
    dropped = {int(h) for h in key_hashes(rid.split("-"))}
    assert with_groups - without == dropped - {int(h) for h in key_hashes(["1b2c", "4d3e"])}
    # The UUID itself and the words around it stay; 1b2c/4d3e are not inside a UUID.
    assert {int(h) for h in key_hashes([rid, "req", "1b2c", "4d3e"])} <= without
