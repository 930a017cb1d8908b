"""Shared fixtures: temporary data directories and free ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (for programs that cannot take port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d
