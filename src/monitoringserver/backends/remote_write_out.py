"""Remote write 1.0 *out*: encode SampleBatches and send them to any receiver
(VictoriaMetrics ``/api/v1/write``, Prometheus with ``--web.enable-remote-write-receiver``,
Mimir, Thanos receive, ...).

:func:`encode_write_request` turns a batch into one snappy-compressed ``WriteRequest``
(samples of a series grouped, in time order). :class:`RemoteWriteClient.send` posts one
encoded request and classifies the answer:

* 2xx → :attr:`SendOutcome.OK`;
* 429, 5xx, connection errors and timeouts → :attr:`SendOutcome.RETRY` (the caller backs
  off and sends the same request again);
* any other 4xx → :attr:`SendOutcome.DROP` (the receiver will never take it).

The transport is injectable (``httpx.MockTransport`` in tests).
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass

import cramjam
import httpx
import numpy as np

from monitoringserver.model.samples import SampleBatch
from monitoringserver.proto.prompb import remote_pb2

__all__ = ["RemoteWriteClient", "SendOutcome", "SendResult", "encode_write_request"]


def encode_write_request(batch: SampleBatch) -> bytes:
    """``batch`` as a snappy-compressed remote-write body (samples sorted per series)."""
    req = remote_pb2.WriteRequest()
    if len(batch):
        order = np.lexsort((batch.ts_ms, batch.series_idx))
        idx = batch.series_idx[order]
        ts = batch.ts_ms[order].tolist()
        values = batch.values[order].tolist()
        starts = [*np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]]).tolist(), len(idx)]
        idx_list = idx.tolist()
        for a, b in itertools.pairwise(starts):
            series = req.timeseries.add()
            for name, value in batch.series[idx_list[a]]:
                series.labels.add(name=name, value=value)
            add = series.samples.add
            for t, v in zip(ts[a:b], values[a:b], strict=True):
                add(timestamp=t, value=v)
    return bytes(cramjam.snappy.compress_raw(req.SerializeToString()))


class SendOutcome(enum.Enum):
    OK = "ok"
    RETRY = "retry"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: SendOutcome
    status: int  # HTTP status, 0 when no answer arrived
    detail: str = ""
    retry_after_s: float | None = None


class RemoteWriteClient:
    """Posts encoded requests to ``url``. Owns its ``httpx.AsyncClient`` (``aclose()``)."""

    def __init__(
        self,
        url: str,
        *,
        bearer_token: str = "",
        basic_auth: tuple[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self._headers = {
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
            "User-Agent": "monitoringserver-remote-write",
            **(headers or {}),
        }
        if bearer_token:
            self._headers["Authorization"] = f"Bearer {bearer_token}"
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=timeout_s,
            auth=httpx.BasicAuth(*basic_auth) if basic_auth else None,
        )

    async def send(self, body: bytes) -> SendResult:
        try:
            resp = await self._client.post(self.url, content=body, headers=self._headers)
        except httpx.HTTPError as exc:
            return SendResult(SendOutcome.RETRY, 0, f"{type(exc).__name__}: {exc}")
        status = resp.status_code
        if 200 <= status < 300:
            return SendResult(SendOutcome.OK, status)
        detail = resp.text[:300]
        if status == 429 or status >= 500:
            retry_after: float | None = None
            header = resp.headers.get("retry-after")
            if header:
                try:
                    retry_after = float(header)
                except ValueError:
                    retry_after = None
            return SendResult(SendOutcome.RETRY, status, detail, retry_after)
        return SendResult(SendOutcome.DROP, status, detail)

    async def aclose(self) -> None:
        await self._client.aclose()
