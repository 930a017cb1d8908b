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
from dataclasses import dataclass

import cramjam
import httpx
import numpy as np
from numpy.typing import NDArray

from monitoringserver.model.labels import Labels
from monitoringserver.model.samples import SampleBatch

__all__ = [
    "RemoteWriteClient",
    "SendOutcome",
    "SendResult",
    "encode_samples",
    "encode_write_request",
]


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _encode_labels(labels: Labels) -> bytes:
    return b"".join(
        _field(1, _field(1, name.encode()) + _field(2, value.encode())) for name, value in labels
    )


def encode_samples(
    ts_ms: NDArray[np.int64], values: NDArray[np.float64]
) -> tuple[bytes, NDArray[np.int64]]:
    """Every sample as a ``TimeSeries.samples`` field (field 2), built with numpy in one go.

    Returns the bytes and each sample's end offset in them. Each sample is
    ``0x12 <len> 0x09 <f64 LE> 0x10 <varint ts>``; both fields are always written (valid
    protobuf; decoders accept explicit zeros).
    """
    n = len(ts_ms)
    if not n:
        return b"", np.zeros(0, dtype=np.int64)
    u = ts_ms.astype(np.int64).view(np.uint64)
    vlen = np.ones(n, dtype=np.int64)
    for j in range(1, 10):
        vlen += (u >> np.uint64(7 * j)) != 0
    rec = 2 + 10 + vlen  # 0x12, len, 0x09, 8 value bytes, 0x10, varint
    ends = np.cumsum(rec)
    off = ends - rec
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    out[off] = 0x12
    out[off + 1] = (rec - 2).astype(np.uint8)
    out[off + 2] = 0x09
    vbytes = np.ascontiguousarray(values, dtype="<f8").view(np.uint8).reshape(n, 8)
    for k in range(8):
        out[off + 3 + k] = vbytes[:, k]
    out[off + 11] = 0x10
    for j in range(10):
        mask = vlen > j
        digit = ((u[mask] >> np.uint64(7 * j)) & np.uint64(0x7F)).astype(np.uint8)
        cont = (vlen[mask] > j + 1).astype(np.uint8) << 7
        out[off[mask] + 12 + j] = digit | cont
    return out.tobytes(), ends


def encode_write_request(batch: SampleBatch) -> bytes:
    """``batch`` as a snappy-compressed remote-write body (samples sorted per series)."""
    parts: list[bytes] = []
    if len(batch):
        order = np.lexsort((batch.ts_ms, batch.series_idx))
        idx = batch.series_idx[order]
        ts = batch.ts_ms[order]
        values = batch.values[order]
        bounds = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]]).tolist()
        bounds.append(len(idx))
        firsts = idx[bounds[:-1]].tolist()
        encoded, ends = encode_samples(ts, values)
        byte_bounds = [0, *ends[np.asarray(bounds[1:]) - 1].tolist()]
        cache: dict[int, bytes] = {}
        for k, number in enumerate(firsts):
            labels = cache.get(number)
            if labels is None:
                labels = cache[number] = _encode_labels(batch.series[number])
            body = labels + encoded[byte_bounds[k] : byte_bounds[k + 1]]
            parts.append(_field(1, body))
    return bytes(cramjam.snappy.compress_raw(b"".join(parts)))


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
