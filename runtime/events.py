"""Events: what happened to twins, for gateways (desired to publish, commands to deliver),
the API's event stream and alarms.

An :class:`EventHub` keeps the newest events in a ring buffer with increasing ids, so a reader
polls "everything after id N" and can resume where it stopped (SSE ``Last-Event-ID``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Literal, NamedTuple, Protocol, get_args

__all__ = ["EVENT_TYPES", "Event", "EventHub", "EventSink", "EventType"]

EventType = Literal["desired", "presence", "anomaly", "alarm", "command", "rejected"]
EVENT_TYPES: frozenset[str] = frozenset(get_args(EventType))


class Event(NamedTuple):
    """One event. ``id`` is assigned by the hub (0 until then); ``data`` is JSON-ready.

    - ``desired``: ``{"version", "desired", "delta"}`` after a desired change;
    - ``presence``: ``{"online", "protocol", "pending_commands"}`` when a twin comes or goes;
    - ``anomaly``: ``{"model", "score", "anomalous", "since"}`` when the verdict flips;
    - ``alarm``: the alarm record (``id``, ``rule``, ``state``, ...) when it is raised,
      acknowledged or cleared;
    - ``command``: the command record (``id``, ``name``, ``params``, ``status``, ...) on
      every status change, with ``protocol`` and ``online`` of the twin;
    - ``rejected``: ``{"code", "message", "protocol"}`` for a device message refused.
    """

    type: str
    twin_id: str
    data: Mapping[str, Any]
    ts: float = 0.0
    id: int = 0


class EventSink(Protocol):
    """Where a host hands its events (an ``EventHub``, or the hub's Ray actor)."""

    async def publish(self, events: list[Event]) -> int:
        """Take events in order; returns the id of the last one."""
        ...


class EventHub:
    """Keeps the newest ``capacity`` events and lets readers wait for new ones (plain logic)."""

    def __init__(self, *, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._next_id = 1
        self._changed = asyncio.Condition()

    async def publish(self, events: Iterable[Event | tuple[Any, ...]]) -> int:
        """Append events (in order), numbering them; returns the last id given."""
        async with self._changed:
            now = time.time()
            for raw in events:
                event = raw if type(raw) is Event else Event(*raw)
                self._events.append(event._replace(id=self._next_id, ts=event.ts or now))
                self._next_id += 1
            self._changed.notify_all()
            return self._next_id - 1

    async def poll(
        self,
        after: int = 0,
        *,
        types: Collection[str] | None = None,
        twin_id: str | None = None,
        timeout: float = 0.0,
        limit: int = 1000,
    ) -> list[Event]:
        """Events with id > ``after`` (filtered), waiting up to ``timeout`` s for the first."""
        deadline = time.monotonic() + timeout
        while True:
            found = self._after(after, types, twin_id, limit)
            remaining = deadline - time.monotonic()
            if found or remaining <= 0:
                return found
            after = max(after, self._next_id - 1)  # nothing up to here matched
            async with self._changed:
                try:
                    await asyncio.wait_for(self._changed.wait(), remaining)
                except TimeoutError:
                    return self._after(after, types, twin_id, limit)

    def _after(
        self, after: int, types: Collection[str] | None, twin_id: str | None, limit: int
    ) -> list[Event]:
        events = self._events
        if not events or events[-1].id <= after:
            return []
        start = max(0, after - events[0].id + 1)  # ids are consecutive inside the buffer
        out: list[Event] = []
        for i in range(start, len(events)):
            event = events[i]
            if (types is None or event.type in types) and (
                twin_id is None or event.twin_id == twin_id
            ):
                out.append(event)
                if len(out) >= limit:
                    break
        return out

    async def last_id(self) -> int:
        """The id of the newest event (0 if none yet)."""
        return self._next_id - 1
