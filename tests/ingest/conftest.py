"""Fixtures shared by the ingest tests."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from monitoringserver.ingest.decode_worker import DecodeWorker, _Channel, serve


@pytest.fixture
async def threaded() -> AsyncIterator[DecodeWorker]:
    """A worker whose loop runs on a thread of this process (visible to coverage)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    thread = threading.Thread(target=serve, args=(theirs,), daemon=True)
    thread.start()
    w = DecodeWorker()
    loop = asyncio.get_running_loop()
    _transport, w._channel = await loop.create_connection(_Channel, sock=ours)
    try:
        yield w
    finally:
        await w.aclose()
        thread.join(10)
        theirs.close()
    assert not thread.is_alive()
