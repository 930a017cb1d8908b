"""Command line entry point (``monitoring-server``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from monitoringserver import __version__


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["version"]:
        print(__version__)
        return 0
    print("usage: monitoring-server {serve,check-config,token,version}", file=sys.stderr)
    return 2
