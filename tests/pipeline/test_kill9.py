from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from monitoringserver.model.matchers import Matcher
from tests.pipeline.kill9_child import PER_SERIES, SERIES, make_batch
from tests.pipeline.storehelp import T0_MS, open_store


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [30, 400])
async def test_every_acknowledged_sample_survives_sigkill(data_dir: Path, kill_after: int) -> None:
    child = subprocess.Popen(
        [
            sys.executable,
            str(Path(__file__).with_name("kill9_child.py")),
            str(data_dir),
            str(T0_MS),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    acked = -1
    try:
        assert child.stdout is not None
        for line in child.stdout:
            acked = int(line)
            if acked >= kill_after:
                break
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        assert child.stdout is not None
        assert child.stderr is not None
        child.stdout.close()
        err = child.stderr.read().decode()
        child.stderr.close()
    assert acked >= kill_after, err
    async with open_store(data_dir, now_ms=T0_MS) as h:
        got = h.handle.querier.select([Matcher.eq("__name__", "load")], 0, T0_MS + 10**9)
        assert len(got) == len(SERIES)
        by_labels = {s.labels: s for s in got}
        for i, labels in enumerate(SERIES):
            s = by_labels[labels]
            expected = [make_batch(k, T0_MS) for k in range(acked + 1)]
            exp_ts = np.concatenate(
                [b.ts_ms[i * PER_SERIES : (i + 1) * PER_SERIES] for b in expected]
            )
            exp_v = np.concatenate(
                [b.values[i * PER_SERIES : (i + 1) * PER_SERIES] for b in expected]
            )
            n = len(exp_ts)
            assert s.ts_ms[:n].tolist() == exp_ts.tolist()
            assert s.values[:n].tolist() == exp_v.tolist()
        # The child's sequence numbers survived too: a retried batch is a duplicate.
        from monitoringserver.metrics.api import DedupKey

        res = await h.handle.appender.append(
            make_batch(acked, T0_MS), dedup=DedupKey("child", acked)
        )
        assert res.duplicate
