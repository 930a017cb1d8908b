"""The HTTP/1.1 protocol the server runs: uvicorn's httptools protocol, without copying
a request body that arrives in one piece.

uvicorn appends every body chunk to a ``bytearray`` and hands the application
``bytes(that bytearray)``: two copies of every body (about 13 KB for a remote-write
request of 2 000 samples, 64 KB and more for agents' batches). Here the first chunk of a
body is kept as the ``bytes`` object the parser produced, and ``bytes()`` of a ``bytes``
object is that object; only a body that arrives in several chunks is gathered in a
``bytearray`` (as uvicorn does). Everything else — parsing, flow control, keep-alive,
pipelining, upgrades — is uvicorn's own code.
"""

from __future__ import annotations

from typing import cast

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HttpProtocol"]


class HttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` whose ``on_body`` keeps a single body chunk as is."""

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        pending: bytes | bytearray = cycle.body
        if not pending:
            # The cycle's ``receive`` sends ``bytes(cycle.body)`` and resets it to an
            # empty bytearray: the parser's own bytes object goes through uncopied.
            cycle.body = cast(bytearray, body)
        elif type(pending) is bytes:
            cycle.body = bytearray(pending)
            cycle.body += body
        else:
            pending += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()
