"""Delivery identity shared by every write path (metrics and logs alike)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DedupKey"]


@dataclass(frozen=True, slots=True)
class DedupKey:
    """Identifies one delivery (agent id + its monotonically increasing batch number), so
    retries and spool replays are applied once."""

    agent_id: str
    batch_seq: int
