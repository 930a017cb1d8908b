"""Helpers of the PromQL benchmark: an array-backed querier, a select timer, a VM anchor.

``ArrayQuerier`` holds the workload as ``[series, points]`` arrays with an inverted
label index, so its ``select`` and ``select_packed`` cost almost nothing and the
engine's own time shows.
``TimedQuerier`` wraps any querier and adds up the seconds spent in ``select``.
``VictoriaMetrics`` runs Debian's ``victoria-metrics`` on 127.0.0.1 (random port, temp
dir), imports the same samples through ``/api/v1/import`` and answers the same queries.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np
from numpy.typing import NDArray

from monitoringserver.metrics.api import (
    MetricQuerier,
    PackedQuerier,
    PackedSeries,
    Resolution,
    RollupSeries,
    SeriesData,
    StoreStats,
)
from monitoringserver.model.labels import Labels
from monitoringserver.model.matchers import Matcher, MatchOp, matches_all

__all__ = ["ArrayQuerier", "TimedPackedQuerier", "TimedQuerier", "VictoriaMetrics", "timed"]


class ArrayQuerier:
    """Series ``i`` has labels ``labels[i]`` and samples ``ts[i], values[i]`` (sorted)."""

    def __init__(
        self, labels: list[Labels], ts: NDArray[np.int64], values: NDArray[np.float64]
    ) -> None:
        self._labels = labels
        self._ts = ts
        self._values = values
        self._postings: dict[tuple[str, str], list[int]] = {}
        for i, lbl in enumerate(labels):
            for pair in lbl:
                self._postings.setdefault(pair, []).append(i)

    def _ids(self, matchers: Sequence[Matcher]) -> list[int]:
        eq = [m for m in matchers if m.op is MatchOp.EQ and m.value]
        if eq:
            cand = set(self._postings.get((eq[0].name, eq[0].value), []))
            for m in eq[1:]:
                cand &= set(self._postings.get((m.name, m.value), []))
            ids = sorted(cand)
        else:
            ids = list(range(len(self._labels)))
        rest = [m for m in matchers if not (m.op is MatchOp.EQ and m.value)]
        if rest:
            ids = [i for i in ids if matches_all(rest, self._labels[i])]
        return ids

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        out = []
        for i in self._ids(matchers):
            ts = self._ts[i]
            lo = int(np.searchsorted(ts, start_ms, side="left"))
            hi = int(np.searchsorted(ts, end_ms, side="right"))
            if hi > lo:
                out.append(SeriesData(self._labels[i], ts[lo:hi], self._values[i, lo:hi]))
        return out

    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        """The same series as :meth:`select`, cut from the arrays without a per-series loop."""
        ids = np.asarray(self._ids(matchers), dtype=np.intp)
        ts = self._ts[ids]
        inside = (ts >= start_ms) & (ts <= end_ms)
        counts = inside.sum(axis=1)
        keep = counts > 0
        offsets = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
        np.cumsum(counts[keep], out=offsets[1:])
        return PackedSeries(
            [self._labels[i] for i in ids[keep].tolist()],
            offsets,
            ts[inside],
            self._values[ids][inside],
        )

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        return []

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return [s.labels for s in self.select(matchers, start_ms, end_ms)]

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return sorted({k for k, _ in self._postings})

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        return sorted({v for k, v in self._postings if k == name})

    def stats(self) -> StoreStats:
        return StoreStats(len(self._labels), 0, {}, 0, None, None)


class TimedQuerier:
    """Delegates to ``inner``; ``select_s`` accumulates wall seconds spent in ``select``."""

    def __init__(self, inner: MetricQuerier) -> None:
        self.inner = inner
        self.select_s = 0.0

    def select(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[SeriesData]:
        t0 = time.perf_counter()
        try:
            return self.inner.select(matchers, start_ms, end_ms)
        finally:
            self.select_s += time.perf_counter() - t0

    def select_rollup(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int, resolution: Resolution
    ) -> list[RollupSeries]:
        return self.inner.select_rollup(matchers, start_ms, end_ms, resolution)

    def series(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[Labels]:
        return self.inner.series(matchers, start_ms, end_ms)

    def label_names(self, matchers: Sequence[Matcher], start_ms: int, end_ms: int) -> list[str]:
        return self.inner.label_names(matchers, start_ms, end_ms)

    def label_values(
        self, name: str, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> list[str]:
        return self.inner.label_values(name, matchers, start_ms, end_ms)

    def stats(self) -> StoreStats:
        return self.inner.stats()


class TimedPackedQuerier(TimedQuerier):
    """A :class:`TimedQuerier` that also times ``select_packed`` of a packed querier."""

    def __init__(self, inner: MetricQuerier, packed: PackedQuerier) -> None:
        super().__init__(inner)
        self.packed = packed

    def select_packed(
        self, matchers: Sequence[Matcher], start_ms: int, end_ms: int
    ) -> PackedSeries:
        t0 = time.perf_counter()
        try:
            return self.packed.select_packed(matchers, start_ms, end_ms)
        finally:
            self.select_s += time.perf_counter() - t0


def timed(inner: MetricQuerier) -> TimedQuerier:
    """``inner`` wrapped for timing, keeping its ``select_packed`` when it has one."""
    if isinstance(inner, PackedQuerier):
        return TimedPackedQuerier(inner, inner)
    return TimedQuerier(inner)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VictoriaMetrics:
    """A throw-away single-node VictoriaMetrics; use as a context manager."""

    BINARY = "victoria-metrics"

    @classmethod
    def available(cls) -> bool:
        return shutil.which(cls.BINARY) is not None

    def __init__(self, data_dir: Path) -> None:
        self._dir = data_dir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._client = httpx.Client(base_url=self.url, timeout=60.0)

    def __enter__(self) -> VictoriaMetrics:
        self._proc = subprocess.Popen(
            [
                self.BINARY,
                f"-storageDataPath={self._dir}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-retentionPeriod=100y",
                "-search.disableCache",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self._client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("cannot start victoria-metrics: not healthy within 30 s")

    def __exit__(self, *exc: object) -> None:
        self._client.close()
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()

    def import_arrays(
        self, labels: list[Labels], ts: NDArray[np.int64], values: NDArray[np.float64]
    ) -> None:
        """Import every series (JSON lines, one per series) and make it searchable."""
        chunk = 5000
        for start in range(0, len(labels), chunk):
            lines = []
            for i in range(start, min(start + chunk, len(labels))):
                lines.append(
                    json.dumps(
                        {
                            "metric": dict(labels[i]),
                            "values": values[i].tolist(),
                            "timestamps": ts[i].tolist(),
                        }
                    )
                )
            r = self._client.post("/api/v1/import", content="\n".join(lines).encode())
            r.raise_for_status()
        self._client.get("/internal/force_flush").raise_for_status()

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the server process has used so far."""
        assert self._proc is not None
        fields = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def query(self, path: str, params: dict[str, str]) -> int:
        """Run one query; return the number of result series."""
        r = self._client.get(path, params=params)
        r.raise_for_status()
        body = r.json()
        return len(body["data"]["result"])
