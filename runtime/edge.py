"""``EdgePlatform``: what protocol adapters (MQTT, CoAP) need of the platform, as one protocol.

Adapters are written against this protocol, not against ``Runtime``, so they are tested with
the in-process implementation (:class:`InProcessPlatform`: one ``TwinHost``, no Ray) as well as
with the real runtime (:class:`RayPlatform`, whose per-twin calls are ``HostCalls``). Every
method is a coroutine: adapters are asyncio programs.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from .calls import HostCalls, await_ref
from .directory import split
from .events import Event, EventHub
from .host import HostSettings, TwinHost
from .messages import DeviceMessage, IngestResult
from .stores import MemoryStore, StateStore

if TYPE_CHECKING:
    from .router import Router

__all__ = ["EdgePlatform", "InProcessPlatform", "RayPlatform"]


class EdgePlatform(Protocol):
    """The platform as a protocol adapter sees it."""

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Hand decoded device messages to their twins (waits under backpressure)."""
        ...

    async def settled(self) -> None:
        """Wait until every message ingested so far is applied by its twin (an edge that
        acknowledges only then loses nothing it acknowledged if its process dies)."""
        ...

    async def reject(self, device_id: str, code: str, message: str, *, protocol: str) -> None:
        """Record a refused device message: a ``rejected`` event and a metric."""
        ...

    async def device_offline(self, device_id: str, *, protocol: str) -> None:
        """The device is gone (an MQTT last will): mark its twin offline now."""
        ...

    async def desired(self, device_id: str) -> dict[str, Any]:
        """``{"version", "desired", "delta"}`` of the twin (``TwinNotFound`` if none)."""
        ...

    async def claim_commands(
        self, device_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Mark queued commands (all, or those ``ids``) as sent and return them.

        Only the first caller gets a command, so several gateways never deliver it twice.
        Each record has ``id``, ``name``, ``params`` and ``expires_at``.
        """
        ...

    async def command_response(
        self, device_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The device's answer ``{"status": "ok"|"error", "result", "error"}``; returns the
        command record (``UnknownCommand`` if there is no such command)."""
        ...

    def events(
        self, *, types: Collection[str] | None = None, after: int | None = None
    ) -> AsyncIterator[Event]:
        """Events as they happen (from ``after``, else from now), until the caller stops."""
        ...

    async def last_event_id(self) -> int:
        """The id of the newest event so far: start ``events(after=...)`` from it."""
        ...


class _EdgeBase:
    """What both platforms share: rejection bookkeeping and the event iterator."""

    def __init__(self) -> None:
        self.rejections: collections.Counter[str] = collections.Counter()

    async def _poll(self, after: int, types: Collection[str] | None, timeout: float) -> list[Event]:
        raise NotImplementedError

    async def _last_event_id(self) -> int:
        raise NotImplementedError

    async def _publish(self, events: list[Event]) -> None:
        raise NotImplementedError

    async def last_event_id(self) -> int:
        """The id of the newest event so far."""
        return await self._last_event_id()

    async def poll(
        self, after: int, types: Collection[str] | None = None, timeout: float = 0.0
    ) -> list[Event]:
        """Events after id ``after`` (of ``types``), waiting up to ``timeout`` for the first."""
        return await self._poll(after, types, timeout)

    async def reject(self, device_id: str, code: str, message: str, *, protocol: str) -> None:
        """Count a refused message and publish a ``rejected`` event."""
        self.rejections[code] += 1
        data = {"code": code, "message": message, "protocol": protocol}
        await self._publish([Event("rejected", device_id, data, time.time())])

    async def events(
        self, *, types: Collection[str] | None = None, after: int | None = None
    ) -> AsyncIterator[Event]:
        """Events as they happen (from ``after``, else from now)."""
        cursor = await self._last_event_id() if after is None else after
        wanted = frozenset(types) if types is not None else None
        while True:
            for event in await self._poll(cursor, wanted, 5.0):
                cursor = event.id
                yield event


class InProcessPlatform(_EdgeBase):
    """The platform in this process, without Ray: one ``TwinHost`` and an ``EventHub``.

    For adapters' tests and single-process tools; the host's loops run on the caller's loop.
    """

    def __init__(self, host: TwinHost, hub: EventHub) -> None:
        super().__init__()
        self.host = host
        self.hub = hub

    @classmethod
    def create(
        cls, store: StateStore | None = None, *, settings: HostSettings | None = None
    ) -> InProcessPlatform:
        """A fleet on ``store`` (in memory by default)."""
        hub = EventHub()
        host = TwinHost("local", store or MemoryStore(), settings=settings, events=hub)
        return cls(host, hub)

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Apply the messages now (no batching needed in one process).

        Like the Ray runtime, it returns the messages refused on sight; those the twins refuse
        become ``rejected`` events of the host.
        """
        good, rejected = split(messages)
        await self.host.apply(good)
        await self.host.send_events()
        return IngestResult(len(good), tuple(rejected))

    async def settled(self) -> None:
        """Nothing to wait for: ``ingest`` applies before it returns."""

    async def device_offline(self, device_id: str, *, protocol: str) -> None:
        """Mark the twin offline now."""
        await self.host.device_offline(device_id, protocol=protocol)
        await self.host.send_events()

    async def desired(self, device_id: str) -> dict[str, Any]:
        """The twin's desired document."""
        return await self.host.desired(device_id)

    async def claim_commands(
        self, device_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Queued commands, marked sent."""
        claimed = await self.host.claim_commands(device_id, protocol=protocol, ids=ids)
        await self.host.send_events()
        return claimed

    async def command_response(
        self, device_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the device's answer."""
        record = await self.host.command_response(device_id, command_id, response)
        await self.host.send_events()
        return record

    async def _poll(self, after: int, types: Collection[str] | None, timeout: float) -> list[Event]:
        await self.host.send_events()
        return await self.hub.poll(after, types=types, timeout=timeout)

    async def _last_event_id(self) -> int:
        await self.host.send_events()
        return await self.hub.last_id()

    async def _publish(self, events: list[Event]) -> None:
        await self.hub.publish(events)


class _Routing(Protocol):
    """What ``RayPlatform`` needs besides host calls: a ``Runtime``, or a ``HostRouting`` in
    another process."""

    @property
    def hub(self) -> Any:
        """The event hub actor."""
        ...

    def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Route messages to hosts (blocking under backpressure)."""
        ...

    def calls(self, *, own_writes: bool = False) -> HostCalls:
        """Host calls over the same hosts."""
        ...

    @property
    def router(self) -> Router:
        """The router the messages go through."""
        ...


class RayPlatform(_EdgeBase):
    """The platform behind a ``Runtime`` (or a ``HostRouting``): hosts and hub on Ray.

    Every per-twin call goes through one :class:`HostCalls` that sees this edge's own
    messages first (read-your-writes: a device's last will lands after its last reading).
    """

    def __init__(self, routing: _Routing) -> None:
        super().__init__()
        self.routing = routing
        self.calls = routing.calls(own_writes=True)

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Route the messages (in a worker thread: the router blocks under backpressure)."""
        return await asyncio.to_thread(self.routing.ingest, list(messages))

    async def settled(self) -> None:
        """Wait for every batch routed so far to be applied (a failed batch counts as done:
        the router counts it as failed)."""
        refs = await asyncio.to_thread(self.routing.router.sent)
        await asyncio.gather(*(await_ref(ref) for ref in refs), return_exceptions=True)

    async def close(self) -> None:
        """Close the direct connections this edge opened in the running loop."""
        await self.calls.close()

    async def device_offline(self, device_id: str, *, protocol: str) -> None:
        """Mark the twin offline now, after the device's messages still on their way."""
        await self.calls.device_offline(device_id, protocol=protocol)

    async def desired(self, device_id: str) -> dict[str, Any]:
        """The twin's desired document."""
        return await self.calls.desired(device_id)

    async def claim_commands(
        self, device_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Queued commands, marked sent."""
        return await self.calls.claim_commands(device_id, protocol=protocol, ids=ids)

    async def command_response(
        self, device_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the device's answer."""
        return await self.calls.command_response(device_id, command_id, response)

    async def _poll(self, after: int, types: Collection[str] | None, timeout: float) -> list[Event]:
        events: list[Event] = await await_ref(
            self.routing.hub.poll.remote(after, types=types, timeout=timeout)
        )
        return events

    async def _last_event_id(self) -> int:
        last: int = await await_ref(self.routing.hub.last_id.remote())
        return last

    async def _publish(self, events: list[Event]) -> None:
        await await_ref(self.routing.hub.publish.remote(events))
