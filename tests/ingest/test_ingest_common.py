"""Options validation and the shared append/count helper."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from monitoringserver.errors import ConfigError
from monitoringserver.ingest.prom_options import PromIngestOptions
from monitoringserver.metrics.api import AppendResult
from monitoringserver.model.samples import SampleBatch
from monitoringserver.web.routers.ingest_common import append_counted, prom_ingest_options
from tests.ingest.promhelp import prom_web


@pytest.mark.parametrize(
    "bad",
    [
        {"remote_write_max_decoded_bytes": 0},
        {"pushgateway_max_groups": 0},
        {"pushgateway_ttl_s": 0},
        {"pushgateway_refresh_s": -1},
        {"seed004_job": ""},
    ],
)
def test_options_refuse_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="cannot accept prometheus_ingest option"):
        PromIngestOptions(**bad)  # type: ignore[arg-type]


def test_options_from_server() -> None:
    opts = PromIngestOptions(pushgateway_ttl_s=5)
    server = SimpleNamespace(config=SimpleNamespace(prometheus_ingest=opts))
    assert prom_ingest_options(server) is opts
    assert prom_ingest_options(object()) == PromIngestOptions()


class Rejecting:
    async def append(self, batch: SampleBatch, **_kw: object) -> AppendResult:
        return AppendResult(accepted=0, rejected={"too_old": len(batch)})


async def test_counts_empty_and_rejected() -> None:
    async with prom_web([]) as w:
        comps = w.components
        await append_counted(comps, SampleBatch.empty(), fmt="t", source="s")
        comps.appender = Rejecting()
        batch = SampleBatch.from_rows([((("__name__", "m"),), 1, 1.0)])
        result = await append_counted(comps, batch, fmt="t", source="s")
        assert result.rejected == {"too_old": 1}
        reg = comps.registry
        assert (
            reg.get_sample_value(
                "monitoring_ingest_requests_total", {"format": "t", "outcome": "ok"}
            )
            == 1
        )
        assert (
            reg.get_sample_value(
                "monitoring_ingest_requests_total", {"format": "t", "outcome": "rejected"}
            )
            == 1
        )
        assert (
            reg.get_sample_value(
                "monitoring_ingest_rejected_samples_total", {"format": "t", "reason": "too_old"}
            )
            == 1
        )
