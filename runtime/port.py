"""``FleetPort``: what protocol adapters (MQTT, CoAP) need of the platform, as one protocol.

Adapters are written against this protocol, not against ``Runtime``, so they are tested with
the in-memory implementation in ``tests`` as well as with the real runtime (``RuntimeFleet``).
Every method is a coroutine: adapters are asyncio programs.
"""

from __future__ import annotations

import asyncio
import collections
import time
import weakref
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any, Protocol

from ray.exceptions import RayTaskError

from twinfleet.twins import TwinfleetError

from .client import split
from .events import Event, EventHub
from .host import HostSettings, TwinHost
from .messages import DeviceMessage, IngestResult
from .stores import MemoryStore, StateStore
from .wire import Endpoint, HostChannel

__all__ = ["FleetPort", "LocalFleet", "RuntimeFleet"]


class FleetPort(Protocol):
    """The platform as a protocol adapter sees it."""

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Hand decoded device messages to their twins (waits under backpressure)."""
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


async def _result(ref: Any) -> Any:
    """Await a Ray ObjectRef from any event loop, raising twinfleet's errors as themselves."""
    try:
        return await asyncio.wrap_future(ref.future())
    except RayTaskError as err:
        if isinstance(err.cause, TwinfleetError):
            raise err.cause from None
        raise


class _PortBase:
    """What both fleets share: rejection bookkeeping and the event iterator."""

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


class LocalFleet(_PortBase):
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
    ) -> LocalFleet:
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


class _Routes(Protocol):
    """What ``RuntimeFleet`` needs: a ``Runtime``, or a ``FleetClient`` in another process."""

    @property
    def hub(self) -> Any:
        """The event hub actor."""
        ...

    def owner_of(self, twin_id: str) -> Any:
        """The host actor of a twin."""
        ...

    def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Route messages to hosts (blocking under backpressure)."""
        ...

    def flush_twin(self, twin_id: str) -> None:
        """Wait until the messages routed so far to this twin's host are applied."""
        ...


class RuntimeFleet(_PortBase):
    """The platform behind a ``Runtime`` (or a ``FleetClient``): hosts and hub on Ray."""

    def __init__(self, runtime: _Routes, *, direct: bool = True) -> None:
        super().__init__()
        self.runtime = runtime
        self.direct = direct
        # asyncio streams belong to one event loop: one channel per host and loop.
        self._channels: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, HostChannel]
        ] = weakref.WeakKeyDictionary()

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        """Route the messages (in a worker thread: the router blocks under backpressure)."""
        return await asyncio.to_thread(self.runtime.ingest, list(messages))

    async def call(self, device_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on the host of ``device_id`` and await its answer.

        Over the host's direct connection (``runtime/wire.py``) unless ``direct`` is off;
        the methods there take and return JSON values only.
        """
        host = self.runtime.owner_of(device_id)
        if not self.direct:
            return await _result(getattr(host, method).remote(*args, **kwargs))
        return await self._channel(host).call(method, *args, **kwargs)

    def _channel(self, host: Any) -> HostChannel:
        channels = self._channels.setdefault(asyncio.get_running_loop(), {})
        key = host._actor_id.hex()
        channel = channels.get(key)
        if channel is None:

            async def resolve() -> Endpoint:
                endpoint: Endpoint = await _result(host.endpoint.remote())
                return endpoint

            channel = channels[key] = HostChannel(resolve)
        return channel

    async def close(self) -> None:
        """Close the direct connections this fleet opened in the running loop."""
        for channel in self._channels.pop(asyncio.get_running_loop(), {}).values():
            await channel.close()

    async def device_offline(self, device_id: str, *, protocol: str) -> None:
        """Mark the twin offline now, after the device's messages still on their way."""
        await asyncio.to_thread(self.runtime.flush_twin, device_id)
        await self.call(device_id, "device_offline", device_id, protocol=protocol)

    async def desired(self, device_id: str) -> dict[str, Any]:
        """The twin's desired document."""
        doc: dict[str, Any] = await self.call(device_id, "desired", device_id)
        return doc

    async def claim_commands(
        self, device_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Queued commands, marked sent."""
        claimed: list[dict[str, Any]] = await self.call(
            device_id, "claim_commands", device_id, protocol=protocol, ids=ids
        )
        return claimed

    async def command_response(
        self, device_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the device's answer."""
        record: dict[str, Any] = await self.call(
            device_id, "command_response", device_id, command_id, dict(response)
        )
        return record

    async def _poll(self, after: int, types: Collection[str] | None, timeout: float) -> list[Event]:
        events: list[Event] = await _result(
            self.runtime.hub.poll.remote(after, types=types, timeout=timeout)
        )
        return events

    async def _last_event_id(self) -> int:
        last: int = await _result(self.runtime.hub.last_id.remote())
        return last

    async def _publish(self, events: list[Event]) -> None:
        await _result(self.runtime.hub.publish.remote(events))
