"""Options of the Prometheus-ecosystem ingest edge (``[prometheus_ingest]`` section)."""

from __future__ import annotations

from dataclasses import dataclass

from monitoringserver.errors import ConfigError

__all__ = ["PromIngestOptions"]

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class PromIngestOptions:
    """Remote write, text import, Influx, Pushgateway and seed-004 settings.

    Sizes are bytes, durations seconds.
    """

    #: Largest remote-write request after snappy decompression.
    remote_write_max_decoded_bytes: int = 64 * _MIB
    #: Decode remote-write requests of known series in a worker process (off the event
    #: loop); anything it declines, or everything when it is off or gone, decodes in-process.
    remote_write_decode_worker: bool = True
    #: Pushgateway groups not pushed to for this long get staleness markers and vanish.
    pushgateway_ttl_s: float = 600.0
    #: Live groups' series are re-written this often, so PromQL's 5-minute lookback sees them.
    pushgateway_refresh_s: float = 30.0
    #: Most Pushgateway groups kept at once (a push creating one more is refused with 429).
    pushgateway_max_groups: int = 10_000
    #: Seed 004: also require the historical User-Agent of each endpoint (``Prometheus/...``
    #: for ``/prom/*metrics``, ``metrics_pusher`` for inserts, ``checker`` for status).
    seed004_user_agents: bool = False
    #: Seed 004: the ``job`` label of samples pushed through ``/simple|complex/insert``.
    seed004_job: str = "seed004"

    def __post_init__(self) -> None:
        for name in ("remote_write_max_decoded_bytes", "pushgateway_max_groups"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"cannot accept prometheus_ingest option {name}={getattr(self, name)!r}: "
                    "must be positive"
                )
        for name in ("pushgateway_ttl_s", "pushgateway_refresh_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(
                    f"cannot accept prometheus_ingest option {name}={getattr(self, name)!r}: "
                    "must be positive"
                )
        if not self.seed004_job:
            raise ConfigError("cannot accept prometheus_ingest option seed004_job: empty")
