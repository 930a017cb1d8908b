"""Options of the HTTP edge (the ``[limits]`` section of the configuration file)."""

from __future__ import annotations

from dataclasses import dataclass

from monitoringserver.errors import ConfigError

__all__ = ["LimitsOptions"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LimitsOptions:
    """Request and query limits. Sizes are bytes, durations seconds."""

    #: Largest request body accepted on the wire (compressed size for gzip bodies).
    max_body_bytes: int = 16 * _MIB
    #: Largest body after gzip decompression.
    max_decompressed_bytes: int = 64 * _MIB
    #: Most points a history query (``GET /api/v1/metrics``) may return.
    max_query_points: int = 5_000_000
    #: Most series a history query may return.
    max_query_series: int = 100_000
    #: Distinct (server_id, labels, metric) keys the JSON ingest keeps label sets for.
    json_series_cache: int = 500_000
    #: ``GET /api/v1/monitoring/metrics`` looks this far back for each series' latest value.
    latest_lookback_s: float = 600.0

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes",
            "max_decompressed_bytes",
            "max_query_points",
            "max_query_series",
            "json_series_cache",
        ):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"cannot accept limits option {name}={value!r}: must be positive")
        if self.max_decompressed_bytes < self.max_body_bytes:
            raise ConfigError(
                "cannot accept limits option max_decompressed_bytes="
                f"{self.max_decompressed_bytes!r}: must be at least max_body_bytes"
            )
        if self.latest_lookback_s <= 0:
            raise ConfigError(
                f"cannot accept limits option latest_lookback_s={self.latest_lookback_s!r}: "
                "must be positive"
            )
