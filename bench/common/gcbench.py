"""GC measurement hooks for the bench server processes (``bench.logs_server``,
``bench.rw_server``), switched by environment variables so a bench can compare policies
back to back without code changes:

* ``BENCH_GC_POLICY``: ``off`` (CPython's defaults), ``on`` (the server's
  :class:`~monitoringserver.util.gcpolicy.GcPolicy` defaults; also when unset) or
  comma-separated ``field=value`` overrides of it, e.g. ``threshold0=700,freeze_after_full=0``.
* ``BENCH_GC_STATS``: a path; the process's :class:`GcRecorder` snapshot (collections,
  seconds and max seconds per generation) plus the process's freeze count is written
  there as JSON every 0.5 s and at exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import json
import os
import threading
from pathlib import Path

from monitoringserver.util.gcpolicy import GcPolicy, GcRecorder

__all__ = ["bench_gc_policy", "start_gc_stats"]


def bench_gc_policy() -> GcPolicy:
    """The policy ``BENCH_GC_POLICY`` names (see the module docstring)."""
    spec = os.environ.get("BENCH_GC_POLICY", "on").strip()
    if spec == "on":
        return GcPolicy()
    if spec == "off":
        return GcPolicy(enabled=False)
    types = {f.name: f.type for f in dataclasses.fields(GcPolicy)}
    overrides: dict[str, object] = {}
    for item in spec.split(","):
        key, _, raw = item.partition("=")
        kind = types[key.strip()]
        if kind == "bool":
            overrides[key.strip()] = raw.strip() not in ("0", "false", "")
        elif kind == "int":
            overrides[key.strip()] = int(raw)
        else:
            overrides[key.strip()] = float(raw)
    return GcPolicy(**overrides)  # type: ignore[arg-type]


def start_gc_stats() -> GcRecorder | None:
    """Install a recorder and its writer thread if ``BENCH_GC_STATS`` is set."""
    path = os.environ.get("BENCH_GC_STATS")
    if not path:
        return None
    recorder = GcRecorder()
    recorder.install()
    out = Path(path)
    stop = threading.Event()

    def write() -> None:
        snap: dict[str, object] = dict(recorder.snapshot())
        snap["freeze_count"] = gc.get_freeze_count()
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(snap))
        tmp.replace(out)

    def loop() -> None:
        while not stop.wait(0.5):
            write()

    threading.Thread(target=loop, name="gc-stats", daemon=True).start()

    def final() -> None:
        stop.set()
        write()

    atexit.register(final)
    return recorder
