from __future__ import annotations

import sys

from monitoringserver.storage.memory import release_free_memory


def test_release_free_memory_runs() -> None:
    assert release_free_memory() is sys.platform.startswith("linux")
