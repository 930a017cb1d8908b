"""/federate over the in-memory store."""

from __future__ import annotations

from monitoringserver.ingest.prom_text import ExpositionParser
from monitoringserver.model.samples import STALE_NAN, SampleBatch
from monitoringserver.web.routers.federate import federate_router
from tests.ingest.promhelp import NOW_S, prom_web

NOW_MS = int(NOW_S * 1000)
UP_A = (("__name__", "up"), ("instance", "a"), ("job", "node"))
UP_B = (("__name__", "up"), ("instance", "b"), ("job", "node"))
UP_C = (("__name__", "up"), ("instance", "c"), ("job", "other"))
LOAD = (("__name__", "load"), ("job", "node"))
OLD = (("__name__", "old"), ("job", "node"))


async def test_federate_latest_non_stale_samples() -> None:
    async with prom_web([federate_router(object())]) as w:
        await w.store.append(
            SampleBatch.from_rows(
                [
                    (UP_A, NOW_MS - 20_000, 0.0),
                    (UP_A, NOW_MS - 10_000, 1.0),
                    (UP_B, NOW_MS - 10_000, 1.0),
                    (UP_B, NOW_MS - 5_000, STALE_NAN),
                    (UP_C, NOW_MS - 1_000, 1.0),
                    (LOAD, NOW_MS - 2_000, 0.25),
                    (OLD, NOW_MS - 400_000, 9.0),
                ]
            )
        )
        r = await w.client.get(
            "/federate",
            params=[("match[]", '{job="node"}'), ("match[]", "up")],
            headers=w.read,
        )
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        rows = sorted(ExpositionParser().parse(r.text, default_ts_ms=0).batch.rows())
        assert rows == [
            (LOAD, NOW_MS - 2_000, 0.25),
            (UP_A, NOW_MS - 10_000, 1.0),
            (UP_C, NOW_MS - 1_000, 1.0),
        ]
        r = await w.client.post(
            "/federate",
            data={"match[]": "load"},
            params={"time": str(NOW_S - 100)},
            headers=w.read,
        )
        assert r.text == ""
        r = await w.client.get("/federate", headers=w.read)
        assert r.status_code == 400
        assert "match[]" in r.json()["error"]
        r = await w.client.get("/federate", params={"match[]": "rate(x[5m])"}, headers=w.read)
        assert r.status_code == 400
        assert (await w.client.get("/federate", params={"match[]": "up"})).status_code == 401
