"""Run every benchmark module (``bench/bench_*.py``) in turn; each writes its own JSON.

Usage: ``python -m bench.run_all [name ...]`` — with names, only those (``store``, ``logs``...).
A summary of every result file is written to ``bench/results/summary.json``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def discover() -> list[str]:
    here = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    wanted = set(argv if argv is not None else sys.argv[1:])
    failures = 0
    for name in discover():
        if wanted and name.removeprefix("bench_") not in wanted and name not in wanted:
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        module = importlib.import_module(f"bench.{name}")
        try:
            rc = module.main([])
        except Exception as exc:  # a failing benchmark must not hide the others
            print(f"{name} failed: {exc!r}", file=sys.stderr)
            rc = 1
        failures += int(bool(rc))
        print(f"== {name} done in {time.perf_counter() - started:.1f}s (rc={rc})", flush=True)
    summary = {
        p.stem: json.loads(p.read_text())
        for p in sorted(RESULTS.glob("*.json"))
        if p.stem != "summary"
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
