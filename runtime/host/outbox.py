"""``Outbox``: the events a host has to tell, handed to its event sink in order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twinfleet.runtime.events import Event, EventSink
from twinfleet.twins import Twin

from .residents import Residents

__all__ = ["Outbox", "anomaly_data", "presence_data"]


class Outbox:
    """Events of one host since it last sent them (``send``), in the order they happened."""

    def __init__(self, sink: EventSink | None, residents: Residents) -> None:
        self._sink = sink
        self._residents = residents
        self._events: list[Event] = []

    def emit(self, kind: str, twin_id: str, data: Mapping[str, Any]) -> None:
        """Keep an event for the next ``send``."""
        self._events.append(Event(kind, twin_id, data, self._residents.clock()))

    async def send(self) -> int:
        """Hand the events so far to the event sink, in order; returns how many."""
        if not self._events:
            return 0
        batch, self._events = self._events, []
        if self._sink is not None:
            await self._sink.publish(batch)
        self._residents.counters["events"] += len(batch)
        return len(batch)


def presence_data(twin: Twin) -> dict[str, Any]:
    """The data of a ``presence`` event."""
    return {
        "online": twin.online,
        "protocol": twin.protocol,
        "pending_commands": twin.pending_commands(),
    }


def anomaly_data(twin: Twin) -> dict[str, Any]:
    """The data of an ``anomaly`` event."""
    return {
        "model": twin.model.name if twin.model is not None else None,
        "score": twin.anomaly_score,
        "anomalous": twin.anomalous,
        "since": twin.anomaly_since,
    }
