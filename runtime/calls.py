"""``HostCalls``: the one way to call a fleet's hosts, for every caller.

The sync :class:`~twinfleet.runtime.Runtime` facade, the HTTP API, the CLI and the protocol
edges all reach twins through a :class:`HostCalls`: typed async methods, one per host call,
each with the same semantics, errors and allowlist whatever carries it. What carries a call is
a :class:`HostTransport` (one method, like an httpx transport), chosen once:

- :class:`WireTransport` (the default): the hosts' direct TCP connections
  (``runtime/wire.py``), 0.1 ms a round trip;
- :class:`RayTransport`: Ray actor calls (2-9 ms), for networks where host ports are closed.

Calls that concern the whole fleet (queries, aggregates) ask every host at once over Ray on
both: they carry Python objects (selectors, placements), not JSON.

**Errors.** A host's ``TwinfleetError`` is raised as itself on both transports; anything else a
host raises is a bug and arrives as :class:`~twinfleet.errors.InternalError` (HTTP 500).

**Exactly once.** Every call that is not idempotent (:data:`NON_IDEMPOTENT`: commands,
registrations, lifecycle moves, patches) carries a ``call_id`` made here unless the caller's
edge passed one (an HTTP ``Idempotency-Key``, say). The host remembers recent ids and answers a
repeated one with the first answer, so a call resent after a lost connection, by the wire or by
Ray's task retries, takes effect once.

**Read-your-writes** (docs/api.md): a write is answered once it is applied and durable, so every
later call from anyone sees it. A caller that also routes device messages (a ``Runtime``, a
gateway) sees its own messages too: before a call to a twin's host, the messages its own router
queued for that host are applied (:meth:`HostDirectory.own_writes`); before a fleet query, all of
them. Messages routed by other processes are seen once their host has applied them.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol

from ray.exceptions import RayActorError, RayTaskError

from twinfleet.errors import ConnectionLost, InternalError, InvalidRequest, TwinfleetError
from twinfleet.twins import validate_device_id
from twinfleet.twins.query import TwinSelector

from .host import QueryPage
from .placement import Placement
from .router import Router
from .wire import Endpoint, HostChannel

__all__ = [
    "HOST_METHODS",
    "NON_IDEMPOTENT",
    "HostCalls",
    "HostDirectory",
    "HostTransport",
    "RayTransport",
    "RouterDirectory",
    "WireTransport",
    "await_ref",
    "merge_pages",
    "transport_named",
]

# The per-twin host methods a caller may reach, on either transport. Ingest batches,
# fleet-wide queries and administration are the runtime's own Ray calls.
HOST_METHODS: frozenset[str] = frozenset(
    (
        "get",
        "desired",
        "patch_desired",
        "patch_tags",
        "send_command",
        "get_command",
        "claim_commands",
        "command_response",
        "device_offline",
        "register",
        "set_lifecycle",
        "set_model",
        "ack_alarm",
    )
)
# Of those, the calls whose second application would differ from the first: they carry a
# call id, and the host answers a repeated id with the first answer.
NON_IDEMPOTENT: frozenset[str] = frozenset(
    ("send_command", "register", "set_lifecycle", "patch_desired", "patch_tags")
)


async def await_ref(ref: Any) -> Any:
    """Await a Ray ObjectRef from any event loop, with twinfleet's error semantics.

    A host's ``TwinfleetError`` is raised as itself; any other failure of the task is an
    :class:`InternalError`; a host that died and was not restarted is :class:`ConnectionLost`.
    """
    try:
        return await asyncio.wrap_future(ref.future())
    except RayTaskError as err:
        cause = err.cause
        if isinstance(cause, TwinfleetError):
            raise cause from None
        raise InternalError(f"a host failed: {type(cause).__name__}: {cause}") from err
    except RayActorError as err:
        raise ConnectionLost(f"the host is gone: {err}") from err


def _check_method(method: str) -> None:
    if method not in HOST_METHODS:
        raise InternalError(f"{method!r} is not a host call")


class HostTransport(Protocol):
    """Carries one call to one host and returns its answer (or raises its error)."""

    async def call(
        self, host: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Call ``method`` of host actor ``host``; ``method`` is in :data:`HOST_METHODS`."""
        ...

    async def close(self) -> None:
        """Release the connections opened in the running event loop."""
        ...


class RayTransport:
    """Host calls as Ray actor calls (Ray resends them to a restarted host)."""

    async def call(
        self, host: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """One actor call, awaited (only the methods the wire would take, too)."""
        _check_method(method)
        return await await_ref(getattr(host, method).remote(*args, **kwargs))

    async def close(self) -> None:
        """Nothing to release: Ray owns the connections."""


class WireTransport:
    """Host calls over the hosts' direct TCP connections (``runtime/wire.py``).

    A call whose connection is lost is sent again on a new one (after Ray says where the host,
    perhaps restarted, now listens); the calls that are not idempotent carry a call id, so the
    host applies them once. Connections belong to one event loop: one channel per host and loop.
    """

    def __init__(self) -> None:
        self._channels: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, HostChannel]
        ] = weakref.WeakKeyDictionary()

    async def call(
        self, host: Any, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """One call over the host's connection in the running loop."""
        _check_method(method)  # the host checks it too, against the same list
        resend = method not in NON_IDEMPOTENT or kwargs.get("call_id") is not None
        return await self._channel(host).call(method, args, kwargs, resend=resend)

    def _channel(self, host: Any) -> HostChannel:
        channels = self._channels.setdefault(asyncio.get_running_loop(), {})
        key = host._actor_id.hex()
        channel = channels.get(key)
        if channel is None:

            async def resolve() -> Endpoint:
                endpoint: Endpoint = await await_ref(host.endpoint.remote())
                return endpoint

            channel = channels[key] = HostChannel(resolve)
        return channel

    async def close(self) -> None:
        """Close the connections opened in the running loop."""
        for channel in self._channels.pop(asyncio.get_running_loop(), {}).values():
            await channel.close()


def transport_named(name: str) -> HostTransport:
    """The transport ``"wire"`` (direct connections) or ``"ray"`` (actor calls)."""
    if name == "wire":
        return WireTransport()
    if name == "ray":
        return RayTransport()
    raise ValueError(f"host calls go by 'wire' or 'ray', not {name!r}")


class HostDirectory(Protocol):
    """Where a fleet's twins live, as a caller of their hosts needs to know it."""

    def owner_of(self, twin_id: str) -> Any:
        """The host actor that holds ``twin_id``."""
        ...

    def virtual_hosts(self) -> tuple[Placement, Sequence[Any]]:
        """The placement of virtual twins and its host actors."""
        ...

    def dedicated_hosts(self) -> Sequence[Any]:
        """The host actors of twins placed in actors of their own."""
        ...

    async def own_writes(self, host: Any | None) -> None:
        """Wait until the messages this caller routed (to ``host``, or to any) are applied.

        A caller that routes no messages returns at once.
        """
        ...

    async def place(self, device_id: str, placement: str) -> None:
        """Put ``device_id`` where ``placement`` says before it is registered there."""
        ...


class RouterDirectory:
    """A :class:`HostDirectory` over hosts known in this process and, optionally, the router
    whose messages a caller wants to see first (the ``Runtime``'s, a ``HostRouting``'s).

    The getters are asked on every call, so the directory follows a fleet that scales.
    """

    def __init__(
        self,
        *,
        owner_of: Callable[[str], Any],
        virtual_hosts: Callable[[], tuple[Placement, Sequence[Any]]],
        dedicated_hosts: Callable[[], Sequence[Any]],
        router: Router | None,
        place: Callable[[str, str], None] | None = None,
    ) -> None:
        self.owner_of = owner_of
        self.virtual_hosts = virtual_hosts
        self.dedicated_hosts = dedicated_hosts
        self._router = router
        self._place = place

    async def own_writes(self, host: Any | None) -> None:
        """Wait for the messages routed through the router (if one was given)."""
        router = self._router
        if router is not None and router.has_pending(host):
            await asyncio.to_thread(router.flush, host)

    async def place(self, device_id: str, placement: str) -> None:
        """Give a device placed ``dedicated`` its host, where this process can spawn one."""
        if placement != "dedicated":
            return
        if self._place is None:
            if self.owner_of(device_id) in self.dedicated_hosts():
                return
            raise InvalidRequest(
                "a device is placed in a host of its own through the runtime's process",
                field="placement",
            )
        await asyncio.to_thread(self._place, device_id, placement)


def merge_pages(pages: Sequence[QueryPage], limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """One page out of every host's page: live documents win over stored ones."""
    merged: dict[str, dict[str, Any]] = {}
    for page in pages:
        for doc in page.items:
            if doc["id"] not in merged or doc["id"] in page.live:
                merged[doc["id"]] = doc
    ids = sorted(merged)
    items = [merged[i] for i in ids[:limit]]
    more = len(ids) > limit or any(len(p.items) >= limit for p in pages)
    return items, items[-1]["id"] if items and more else None


class HostCalls:
    """Typed async calls to the hosts of a fleet, over one transport chosen once."""

    def __init__(self, directory: HostDirectory, transport: HostTransport | None = None) -> None:
        self.directory = directory
        self.transport: HostTransport = transport or WireTransport()

    async def _call(self, twin_id: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if method in NON_IDEMPOTENT and kwargs.get("call_id") is None:
            kwargs["call_id"] = uuid.uuid4().hex
        host = self.directory.owner_of(twin_id)
        await self.directory.own_writes(host)
        return await self.transport.call(host, method, args, kwargs)

    async def close(self) -> None:
        """Release the transport's connections in the running loop."""
        await self.transport.close()

    # -- twins --------------------------------------------------------------------------------

    async def get(self, twin_id: str) -> dict[str, Any]:
        """The twin document (``TwinNotFound`` if there is no such twin)."""
        doc: dict[str, Any] = await self._call(validate_device_id(twin_id), "get", twin_id)
        return doc

    async def desired(self, twin_id: str) -> dict[str, Any]:
        """``{"version", "desired", "delta"}``: what the device is told."""
        doc: dict[str, Any] = await self._call(validate_device_id(twin_id), "desired", twin_id)
        return doc

    async def patch_desired(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch desired state; answered once durable."""
        return await self._patch("patch_desired", twin_id, patch, expected_version, call_id)

    async def patch_tags(
        self,
        twin_id: str,
        patch: Mapping[str, Any],
        *,
        expected_version: int | None = None,
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Merge-patch tags; answered once durable."""
        return await self._patch("patch_tags", twin_id, patch, expected_version, call_id)

    async def _patch(
        self,
        method: str,
        twin_id: str,
        patch: Mapping[str, Any],
        expected_version: int | None,
        call_id: str | None,
    ) -> dict[str, Any]:
        doc: dict[str, Any] = await self._call(
            validate_device_id(twin_id),
            method,
            twin_id,
            dict(patch),
            expected_version=expected_version,
            call_id=call_id,
        )
        return doc

    async def set_model(
        self, twin_id: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Give one twin a model of its own (None: its family's again); the twin document."""
        doc: dict[str, Any] = await self._call(
            validate_device_id(twin_id),
            "set_model",
            twin_id,
            model,
            None if params is None else dict(params),
        )
        return doc

    async def ack_alarm(self, twin_id: str, alarm_id: str, *, who: str) -> dict[str, Any]:
        """Acknowledge an alarm of a twin; the alarm record."""
        alarm: dict[str, Any] = await self._call(
            validate_device_id(twin_id), "ack_alarm", twin_id, alarm_id, who=who
        )
        return alarm

    # -- devices ------------------------------------------------------------------------------

    async def register(
        self,
        device_id: str,
        *,
        device_type: str | None = None,
        tags: Mapping[str, Any] | None = None,
        placement: str = "virtual",
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Register a device durably and create its twin (state ``registered``)."""
        validate_device_id(device_id)
        if placement not in ("virtual", "dedicated"):
            raise InvalidRequest("placement is 'virtual' or 'dedicated'", field="placement")
        await self.directory.place(device_id, placement)
        entry = {
            "id": device_id,
            "type": device_type,
            "tags": dict(tags or {}),
            "placement": placement,
            "lifecycle": "registered",
        }
        doc: dict[str, Any] = await self._call(device_id, "register", entry, call_id=call_id)
        return doc

    async def set_lifecycle(
        self,
        device_id: str,
        state: str,
        *,
        registry: Mapping[str, Any],
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Move a device to ``state`` (suspended, active, decommissioned), with its registry
        entry, durably; the twin document."""
        doc: dict[str, Any] = await self._call(
            validate_device_id(device_id),
            "set_lifecycle",
            device_id,
            state,
            registry=dict(registry),
            call_id=call_id,
        )
        return doc

    async def device_offline(self, device_id: str, *, protocol: str) -> bool:
        """Mark the twin offline now (after this caller's messages to it)."""
        gone: bool = await self._call(
            validate_device_id(device_id), "device_offline", device_id, protocol=protocol
        )
        return gone

    # -- commands -----------------------------------------------------------------------------

    async def send_command(
        self, device_id: str, request: Mapping[str, Any], *, call_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a command durably and wait up to its ``timeout_s`` for the answer."""
        record: dict[str, Any] = await self._call(
            validate_device_id(device_id), "send_command", device_id, dict(request), call_id=call_id
        )
        return record

    async def get_command(self, device_id: str, command_id: str) -> dict[str, Any]:
        """The record of a command sent earlier."""
        record: dict[str, Any] = await self._call(
            validate_device_id(device_id), "get_command", device_id, command_id
        )
        return record

    async def claim_commands(
        self, device_id: str, *, protocol: str, ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Mark queued commands (all, or those ``ids``) sent and return them."""
        claimed: list[dict[str, Any]] = await self._call(
            validate_device_id(device_id),
            "claim_commands",
            device_id,
            protocol=protocol,
            ids=None if ids is None else list(ids),
        )
        return claimed

    async def command_response(
        self, device_id: str, command_id: str, response: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Record the device's answer to a command; the command record."""
        record: dict[str, Any] = await self._call(
            validate_device_id(device_id), "command_response", device_id, command_id, dict(response)
        )
        return record

    # -- the whole fleet ----------------------------------------------------------------------

    async def query(
        self, selector: TwinSelector, *, after: str | None = None, limit: int = 100
    ) -> tuple[list[dict[str, Any]], str | None]:
        """Twins matching ``selector`` with id > ``after``, in id order: (items, next)."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1", field="limit")
        await self.directory.own_writes(None)
        placement, hosts = self.directory.virtual_hosts()
        refs = [
            h.query.remote(selector, after=after, limit=limit, placement=placement) for h in hosts
        ] + [
            h.query.remote(selector, after=after, limit=limit, include_stored=False)
            for h in self.directory.dedicated_hosts()
        ]
        pages: list[QueryPage] = list(await asyncio.gather(*(await_ref(r) for r in refs)))
        return merge_pages(pages, limit)

    async def aggregate(
        self, by: str = "family", metric: str | None = None
    ) -> list[dict[str, Any]]:
        """Fleet figures per family (``by="family"``) or tag value (``by="tag:site"``)."""
        if by != "family" and not (by.startswith("tag:") and len(by) > 4):
            raise InvalidRequest("aggregate by 'family' or 'tag:<key>'", field="by")
        await self.directory.own_writes(None)
        _, hosts = self.directory.virtual_hosts()
        everyone = [*hosts, *self.directory.dedicated_hosts()]
        parts = await asyncio.gather(*(await_ref(h.aggregate.remote(by, metric)) for h in everyone))
        merged: dict[str, list[float]] = {}
        for part in parts:
            for key, values in part.items():
                total = merged.setdefault(key, [0.0] * len(values))
                for i, v in enumerate(values):
                    total[i] += v
        return [
            {
                "group": key,
                "twins": int(v[0]),
                "online": int(v[1]),
                "anomalous": int(v[2]),
                "metric": metric,
                "mean": v[3] / v[4] if v[4] else None,
                "reporting": int(v[4]),
            }
            for key, v in sorted(merged.items())
        ]
