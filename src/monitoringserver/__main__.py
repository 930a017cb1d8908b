"""``python -m monitoringserver`` is ``monitoring-server``."""

from monitoringserver.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
