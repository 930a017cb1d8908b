"""monitoringserver: metrics, logs, alerts, dashboards and reports in one process."""

__version__ = "0.1.0"

__all__ = ["__version__"]
