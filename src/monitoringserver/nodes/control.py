"""Remote control: commands from the API to a connected agent, answers back.

Each connected agent holds one :class:`Subscription` (its gRPC Control stream). The
API calls :meth:`ControlHub.dispatch`, which validates the command, writes a pending
audit entry, queues the command on the agent's subscription (bounded), and waits for
the agent's :class:`CommandOutcome` (delivered by :meth:`ControlHub.resolve` from the
``ReportResult`` RPC) or the timeout. The audit entry is completed either way.
Loop-affine: use from the server's event loop only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

from monitoringserver.errors import (
    BadDataError,
    NotFoundError,
    OverloadedError,
    UnavailableError,
)
from monitoringserver.nodes.audit import AuditLog
from monitoringserver.nodes.types import Command, CommandOutcome, validate_command

__all__ = ["ControlHub", "Subscription"]


class Subscription:
    """The command queue of one connected agent. :meth:`get` returns None once closed."""

    def __init__(self, hub: ControlHub, node_id: str, queue_size: int) -> None:
        self.node_id = node_id
        self._hub = hub
        self._queue: asyncio.Queue[Command | None] = asyncio.Queue(maxsize=queue_size)
        self.closed = False

    async def get(self) -> Command | None:
        if self.closed:
            return None
        return await self._queue.get()

    def _put(self, command: Command) -> None:
        try:
            self._queue.put_nowait(command)
        except asyncio.QueueFull as exc:
            raise OverloadedError(
                f"cannot send command to node {self.node_id!r}: {self._queue.maxsize} "
                "commands are already waiting",
                retry_after_s=5.0,
            ) from exc

    def close(self) -> None:
        """Detach from the hub; waiting callers of this node fail with UnavailableError."""
        if self.closed:
            return
        self.closed = True
        with_room = self._queue.qsize() < self._queue.maxsize
        if with_room:
            self._queue.put_nowait(None)
        self._hub._detach(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ControlHub:
    """Routes commands to connected agents and their outcomes back to the callers."""

    def __init__(
        self,
        audit: AuditLog | None = None,
        *,
        queue_size: int = 16,
        default_timeout_s: float = 30.0,
        max_timeout_s: float = 600.0,
    ) -> None:
        self._audit = audit
        self._queue_size = queue_size
        self._default_timeout_s = default_timeout_s
        self._max_timeout_s = max_timeout_s
        self._subs: dict[str, Subscription] = {}
        # command_id -> (node_id, future) for commands awaiting an answer.
        self._pending: dict[str, tuple[str, asyncio.Future[CommandOutcome]]] = {}

    def subscribe(self, node_id: str) -> Subscription:
        """Attach the Control stream of ``node_id``; an older stream of it is closed."""
        old = self._subs.get(node_id)
        if old is not None:
            old.close()
        sub = Subscription(self, node_id, self._queue_size)
        self._subs[node_id] = sub
        return sub

    def _detach(self, sub: Subscription) -> None:
        if self._subs.get(sub.node_id) is sub:
            del self._subs[sub.node_id]
            for command_id, (node_id, fut) in list(self._pending.items()):
                if node_id == sub.node_id and not fut.done():
                    fut.set_exception(
                        UnavailableError(
                            f"cannot run command {command_id}: node {node_id!r} disconnected"
                        )
                    )

    def connected(self, node_id: str) -> bool:
        return node_id in self._subs

    def connected_nodes(self) -> list[str]:
        return sorted(self._subs)

    async def dispatch(
        self,
        node_id: str,
        kind: str,
        args: Mapping[str, str] | None = None,
        *,
        actor: str,
        timeout_s: float | None = None,
    ) -> CommandOutcome:
        """Send a command and wait for the agent's answer.

        Raises ``BadDataError`` (invalid command), ``NotFoundError``/``UnavailableError``
        (node not connected, disconnected meanwhile, or no answer within ``timeout_s``)
        and ``OverloadedError`` (too many commands queued for the node).
        """
        clean = validate_command(kind, dict(args or {}))
        wait_s = self._default_timeout_s if timeout_s is None else float(timeout_s)
        if not 0 < wait_s <= self._max_timeout_s:
            raise BadDataError(
                f"cannot send command: timeout {wait_s:g} s is outside 0-{self._max_timeout_s:g} s"
            )
        command = Command(uuid.uuid4().hex, kind, clean, wait_s)
        details: dict[str, Any] = {"command_id": command.command_id, "kind": kind, **clean}
        sub = self._subs.get(node_id)
        if sub is None:
            if self._audit is not None:
                await self._audit.record(
                    actor=actor,
                    action=f"control.{kind}",
                    target=node_id,
                    details=details,
                    status="failed",
                    result={"error": "node is not connected"},
                )
            raise NotFoundError(f"cannot send command to node {node_id!r}: it is not connected")
        entry = None
        if self._audit is not None:
            entry = await self._audit.record(
                actor=actor,
                action=f"control.{kind}",
                target=node_id,
                details=details,
                status="pending",
            )
        fut: asyncio.Future[CommandOutcome] = asyncio.get_running_loop().create_future()
        self._pending[command.command_id] = (node_id, fut)
        try:
            sub._put(command)
            async with asyncio.timeout(wait_s):
                outcome = await fut
        except TimeoutError as exc:
            await self._finish(entry, "failed", {"error": f"no answer within {wait_s:g} s"})
            raise UnavailableError(
                f"cannot run command {command.command_id} on node {node_id!r}: "
                f"no answer within {wait_s:g} s",
                retry_after_s=wait_s,
            ) from exc
        except (UnavailableError, OverloadedError) as exc:
            await self._finish(entry, "failed", {"error": str(exc)})
            raise
        finally:
            self._pending.pop(command.command_id, None)
        await self._finish(entry, "ok" if outcome.ok else "failed", outcome.to_json())
        return outcome

    async def _finish(self, entry: int | None, status: str, result: Mapping[str, Any]) -> None:
        if entry is not None and self._audit is not None:
            await self._audit.finish(entry, status=status, result=result)

    def resolve(self, outcome: CommandOutcome) -> bool:
        """Deliver an agent's answer; False when nobody waits for it (late or unknown)."""
        pending = self._pending.get(outcome.command_id)
        if pending is None or pending[0] != outcome.node_id or pending[1].done():
            return False
        pending[1].set_result(outcome)
        return True

    def close(self) -> None:
        """Close every subscription (server shutdown)."""
        for sub in list(self._subs.values()):
            sub.close()
