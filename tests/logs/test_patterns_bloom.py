"""Templates, needle tokens and the token bloom filter."""

from __future__ import annotations

import numpy as np
import pytest

from monitoringserver.errors import StorageError
from monitoringserver.logs.bloom import TokenBloom
from monitoringserver.logs.patterns import needle_id_tokens, needle_tokens, pattern_id, template


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("user 42 took 3.5ms", "user <num> took <num>ms"),
        ("from 10.0.0.1:8080 and 192.168.1.2", "from <ip> and <ip>"),
        ("req 3f2a9c1e-1b2c-4d3e-8f90-0123456789ab done", "req <uuid> done"),
        ("addr 0xdeadBEEF hash 9f86d081884c7d65", "addr <hex> hash <hex>"),
        ("open /var/log/nginx/access.log failed", "open <path> failed"),
        ("GET /index.html", "GET <path>"),
        ("v2 api h2o", "v2 api h2o"),
        ("fe80:0:0:0:202:b3ff:fe1e:8329 up", "<ip> up"),
        ("first line 1\nsecond 2", "first line <num>"),
    ],
)
def test_template(message: str, expected: str) -> None:
    assert template(message) == expected


def test_pattern_id_is_stable() -> None:
    assert pattern_id("a <num>") == pattern_id("a <num>")
    assert pattern_id("a <num>") != pattern_id("b <num>")
    assert len(pattern_id("x")) == 16


@pytest.mark.parametrize(
    ("needle", "tokens"),
    [
        ("abc", ([], [])),
        ("id=7f3a9c-41", (["7f3a9c"], [])),
        (
            "3f2a9c1e-1b2c-4d3e-8f90-0123456789ab",
            (["1b2c", "4d3e", "8f90"], ["1b2c 4d3e", "4d3e 8f90"]),
        ),
        ("ip 10.1.22.3 x", ([], [])),
        ("at 10.1000.22.3:80 x", (["1000"], ["10 1000", "1000 22"])),
        (" Error: disk ", (["error", "disk"], [])),
        ("é-abc-é", (["abc"], [])),
        ("éabcé", ([], [])),
    ],
)
def test_needle_tokens(needle: str, tokens: tuple[list[str], list[str]]) -> None:
    assert needle_tokens(needle) == tokens


@pytest.mark.parametrize(
    ("needle", "keys"),
    [
        ("3F2A9C1E-1B2C-4D3E-8F90-0123456789AB", ["3f2a9c1e-1b2c-4d3e-8f90-0123456789ab"]),
        ("x4bf92f3577b34da6a3ce929d0e0e4736", ["4bf92f3577b34da6a3ce929d0e0e4736"]),
        ("from 10.0.3.25 port", ["10.0.3.25"]),
        ("10.0.3.25", []),
        ("v=1.2.3.4.5;", []),
        ("1b2c-4d3e", []),
    ],
)
def test_needle_id_tokens(needle: str, keys: list[str]) -> None:
    assert needle_id_tokens(needle) == keys


def test_bloom_no_false_negatives_and_few_false_positives() -> None:
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 2**63, size=20_000, dtype=np.int64).astype(np.uint64)
    bloom = TokenBloom.build(keys)
    assert all(bloom.might_contain_all(keys[i : i + 1]) for i in range(0, 20_000, 97))
    assert bloom.might_contain_all(keys)
    others = rng.integers(0, 2**63, size=2_000, dtype=np.int64).astype(np.uint64)
    fp = sum(bloom.might_contain_all(others[i : i + 1]) for i in range(2_000))
    assert fp < 100
    again = TokenBloom.from_bytes(bloom.to_bytes())
    assert again.might_contain_all(keys[:10])
    assert len(again) == len(bloom.to_bytes())
    assert again.might_contain_all(np.empty(0, dtype=np.uint64))


def test_bloom_empty_and_corrupt() -> None:
    empty = TokenBloom.build(np.empty(0, dtype=np.uint64))
    assert not empty.might_contain_all(np.array([1, 2], dtype=np.uint64))
    with pytest.raises(StorageError):
        TokenBloom.from_bytes(b"xx")
    with pytest.raises(StorageError):
        TokenBloom.from_bytes(b"XXXX" + bytes(12) + bytes(8))
