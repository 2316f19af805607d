"""``Commands``: commands for devices, queued durably, delivered once, answered and awaited."""

from __future__ import annotations

import asyncio
import copy
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from twinfleet.twins import FINAL_STATUSES, CommandRequest, Twin, TwinNotFound

from .activation import Activation
from .outbox import Outbox
from .residents import Residents
from .writes import TwinWrites

__all__ = ["Commands"]


class Commands:
    """The commands of a host's twins, and the callers waiting for their answers.

    Each status change is an event (gateways deliver queued commands on it); a final one
    wakes whoever waits for that command.
    """

    def __init__(
        self,
        residents: Residents,
        activation: Activation,
        writes: TwinWrites,
        outbox: Outbox,
    ) -> None:
        self._residents = residents
        self._activation = activation
        self._writes = writes
        self._outbox = outbox
        self._waiters: dict[tuple[str, str], list[asyncio.Future[dict[str, Any]]]] = {}

    async def send(
        self, twin_id: str, request: Mapping[str, Any], *, command_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a command durably, then wait up to its ``timeout_s`` for the device's answer.

        Returns the command record: final if the device answered in time, else queued or sent.
        """
        command = CommandRequest(**request)
        cmd_id = command_id or uuid.uuid4().hex[:16]

        def change(twin: Twin, now: float) -> bool:
            twin.add_command(command, cmd_id, now=now)
            return True

        record: dict[str, Any] = await self._writes.write(
            twin_id,
            change,
            answer=lambda twin: copy.deepcopy(twin.command(cmd_id)),
            committed=lambda twin: self.event(twin, twin.command(cmd_id)),
        )
        self._residents.counters["commands_queued"] += 1
        if command.timeout_s <= 0 or record["status"] in FINAL_STATUSES:
            return record
        return await self.wait(twin_id, cmd_id, timeout_s=command.timeout_s)

    async def wait(self, twin_id: str, command_id: str, *, timeout_s: float) -> dict[str, Any]:
        """The command record once final, or as it stands after ``timeout_s``."""
        twin = await self._activation.twin(twin_id)
        record = twin.command(command_id)
        if record["status"] in FINAL_STATUSES or timeout_s <= 0:
            return copy.deepcopy(record)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        waiters = self._waiters.setdefault((twin_id, command_id), [])
        waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            return copy.deepcopy((await self._activation.twin(twin_id)).command(command_id))
        finally:
            if future in waiters:
                waiters.remove(future)
            if not waiters:
                self._waiters.pop((twin_id, command_id), None)

    async def get(self, twin_id: str, command_id: str) -> dict[str, Any]:
        """The command record (``UnknownCommand`` if the twin has no such command)."""
        twin = await self._activation.twin(twin_id)
        self.expire(twin)
        return copy.deepcopy(twin.command(command_id))

    async def claim(
        self, twin_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Mark queued commands sent (durably) and return them for delivery; once each."""
        claimed: list[dict[str, Any]] = []

        def change(twin: Twin, now: float) -> bool:
            claimed.extend(twin.claim_commands(ids, now=now))
            return bool(claimed)

        def committed(twin: Twin) -> None:
            for record in claimed:
                self.event(twin, record)

        try:
            await self._writes.write(twin_id, change, answer=lambda twin: None, committed=committed)
        except TwinNotFound:
            return []
        return [{k: r[k] for k in ("id", "name", "params", "expires_at")} for r in claimed]

    async def respond(
        self, twin_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record a device's answer to a command, durably, and wake whoever waits for it."""

        def change(twin: Twin, now: float) -> bool:
            return twin.answer_command(command_id, response, now=now)

        def committed(twin: Twin) -> None:
            self._residents.counters["commands_answered"] += 1
            self.event(twin, twin.command(command_id))

        record: dict[str, Any] = await self._writes.write(
            twin_id,
            change,
            answer=lambda twin: copy.deepcopy(twin.command(command_id)),
            committed=committed,
        )
        return record

    def event(self, twin: Twin, record: Mapping[str, Any]) -> None:
        """Tell of a command's new status; a final one wakes its waiters."""
        data = {**record, "protocol": twin.protocol, "online": twin.online}
        self._outbox.emit("command", twin.id, data)
        if record["status"] in FINAL_STATUSES:
            for future in self._waiters.pop((twin.id, record["id"]), []):
                if not future.done():
                    future.set_result(copy.deepcopy(dict(record)))

    def expire(self, twin: Twin) -> None:
        """Close a twin's commands whose time is up (written with its next snapshot)."""
        for record in twin.expire_commands(now=self._residents.clock()):
            self._residents.dirty.add(twin.id)
            self.event(twin, record)
