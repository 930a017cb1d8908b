"""The server applies its GC policy at start-up and undoes it when closed."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pytest

from monitoringserver.server import Server
from monitoringserver.util.gcpolicy import GcPolicy
from tests.test_server import config


@pytest.mark.parametrize(
    ("policy", "applied"),
    [(GcPolicy(), True), (GcPolicy(threshold0=9_999), True), (GcPolicy(enabled=False), False)],
)
async def test_start_applies_the_policy_and_aclose_restores(
    data_dir: Path, policy: GcPolicy, applied: bool
) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    srv = Server(config=config(data_dir), out=io.StringIO(), gc_policy=policy)
    try:
        await srv.start()
        assert srv.gc_handle is not None
        if applied:
            assert gc.get_threshold() == (policy.threshold0, before[1], before[2])
            assert gc.get_freeze_count() > 0
            assert srv.gc_handle._on_collect in gc.callbacks
        else:
            assert gc.get_threshold() == before
            assert gc.get_freeze_count() == 0
    finally:
        await srv.aclose()
    assert srv.gc_handle is None
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


async def test_default_server_policy_is_the_documented_one(data_dir: Path) -> None:
    srv = Server(config=config(data_dir), out=io.StringIO())
    assert srv.gc_policy == GcPolicy()
    assert GcPolicy().threshold0 == 700
    assert GcPolicy().unfreeze_interval_s == 3600.0
