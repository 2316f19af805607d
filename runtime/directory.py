"""``HostRouting``: reach a running fleet's hosts from any process.

A ``Runtime`` owns the fleet (hosts, hub, scaling); a gateway (or an API) running in a process of
its own gets a picklable :class:`HostRoster` of it and reaches the hosts through a
``HostRouting``: its own router, the same placement, the same hosts, and :class:`HostCalls`
over them. Messages a gateway routes are applied in the gateway's own order (each router
numbers its batches).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from twinfleet.errors import InvalidPatch
from twinfleet.twins import TwinfleetError, validate_device_id

from .calls import HostCalls, RouterDirectory, transport_named
from .messages import DeviceMessage, IngestResult, Rejection
from .placement import Placement
from .router import Router, RouterSettings

__all__ = ["HostRoster", "HostRouting", "split"]


@dataclass(frozen=True, slots=True)
class HostRoster:
    """The hosts, dedicated twins and event hub of a running fleet (picklable)."""

    hosts: tuple[tuple[str, Any], ...]
    dedicated: tuple[tuple[str, Any], ...]
    hub: Any
    router: RouterSettings

    def __post_init__(self) -> None:
        if not self.hosts:
            raise ValueError("a host roster needs at least one host")


def split(
    messages: Iterable[DeviceMessage | Sequence[Any]],
) -> tuple[list[DeviceMessage], list[Rejection]]:
    """Good messages, and rejections for malformed ones (bad id, kind or payload type)."""
    good: list[DeviceMessage] = []
    rejected: list[Rejection] = []
    for raw in messages:
        msg = raw if type(raw) is DeviceMessage else DeviceMessage(*raw)
        try:
            validate_device_id(msg.device_id)
            if msg.kind not in ("telemetry", "reported"):
                raise InvalidPatch(
                    f"message kind {msg.kind!r} is not 'telemetry' or 'reported'", field="kind"
                )
            if not isinstance(msg.payload, dict):
                raise InvalidPatch("a message payload must be a JSON object", field="payload")
        except TwinfleetError as err:
            rejected.append(Rejection(str(msg.device_id), err.code, err.message))
            continue
        good.append(msg)
    return good, rejected


class HostRouting:
    """Routes messages and calls for twins to their hosts, from the process it lives in."""

    def __init__(self, view: HostRoster) -> None:
        self._lock = threading.Lock()
        self._view = view
        self._hosts = dict(view.hosts)
        self._dedicated = dict(view.dedicated)
        self._placement = Placement(tuple(self._hosts))
        self._owners: dict[str, Any] = {}
        self._router = Router(self.owner_of, settings=view.router)

    @property
    def hub(self) -> Any:
        """The fleet's event hub actor."""
        return self._view.hub

    def owner_of(self, twin_id: str) -> Any:
        """The host actor that holds ``twin_id``."""
        host = self._owners.get(twin_id)
        if host is None:
            host = self._dedicated.get(twin_id) or self._hosts[self._placement.owner(twin_id)]
            if len(self._owners) < 2_000_000:
                self._owners[twin_id] = host
        return host

    def update(self, view: HostRoster) -> None:
        """Follow the fleet after it scaled: new hosts, new placement."""
        with self._router.paused():
            self._view = view
            self._hosts = dict(view.hosts)
            self._dedicated = dict(view.dedicated)
            self._placement = Placement(tuple(self._hosts))
            self._owners.clear()

    def ingest(self, messages: Iterable[DeviceMessage | Sequence[Any]]) -> IngestResult:
        """Route messages to their hosts in batches; malformed ones are rejected here."""
        good, rejected = split(messages)
        self._router.route(good)
        return IngestResult(len(good), tuple(rejected))

    def flush_twin(self, twin_id: str) -> None:
        """Wait until the messages routed so far to this twin's host are applied."""
        self._router.flush(self.owner_of(twin_id))

    def flush(self) -> None:
        """Wait until everything routed so far is applied."""
        self._router.flush()

    @property
    def router(self) -> Router:
        """The router (its counters: applied, stale, rejected, failed, batches)."""
        return self._router

    def calls(self, *, own_writes: bool = False, transport: str = "wire") -> HostCalls:
        """:class:`HostCalls` over these hosts; ``own_writes``: reads wait for the messages
        routed here first (a gateway's)."""
        directory = RouterDirectory(
            owner_of=self.owner_of,
            virtual_hosts=lambda: (self._placement, list(self._hosts.values())),
            dedicated_hosts=lambda: list(self._dedicated.values()),
            router=self._router if own_writes else None,
        )
        return HostCalls(directory, transport_named(transport))

    def close(self) -> None:
        """Apply what is queued and stop the router's timer."""
        self._router.close()
