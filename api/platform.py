"""``Platform``: the twins, devices, models and events as the API's routes reach them.

Every call a route makes to the platform goes through this one object, so how the API reaches
the hosts is decided here and nowhere else; the routes never see a ``Runtime``. Every call to
the hosts, per twin or fleet-wide, goes through one :class:`~twinfleet.runtime.HostCalls`;
reading the registry and the administration that writes the store first (model assignments,
alarm rules, training) go through the sync ``Runtime`` (in a worker thread: it blocks);
events come from the hub.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from twinfleet.models import ModelRegistry
from twinfleet.runtime import Event, HostCalls, Page, RayPlatform, RayTransport, Runtime
from twinfleet.runtime.flow import FlowMeter
from twinfleet.twins.query import TwinSelector

__all__ = ["Platform"]


class Platform:
    """The platform behind ``runtime``.

    ``direct``: per-twin calls travel by the runtime's transport (the hosts' direct
    connections unless its settings say otherwise); off, as Ray actor calls.
    """

    def __init__(self, runtime: Runtime, *, direct: bool = True) -> None:
        self._runtime = runtime
        calls = runtime.calls()
        self._calls = calls if direct else HostCalls(calls.directory, RayTransport())
        self._events = RayPlatform(runtime)
        self._meter = FlowMeter()
        self._meter_lock = threading.Lock()
        self._metered_at = float("-inf")

    async def close(self) -> None:
        """Close the connections to the hosts opened in the running event loop."""
        await self._calls.close()
        await self._events.close()

    # -- ingest -----------------------------------------------------------------------------

    async def flow(self) -> dict[str, dict[str, float]]:
        """Messages/s and lag percentiles per protocol since the previous read (taken at most
        once a second; empty on the very first)."""
        return await asyncio.to_thread(self._read_flow)

    def _read_flow(self) -> dict[str, dict[str, float]]:
        with self._meter_lock:
            now = time.monotonic()
            if now - self._metered_at >= 1.0:
                stats = self._runtime.stats()
                self._meter.update([*stats["hosts"], *stats["dedicated_hosts"]], now)
                self._metered_at = now
            return self._meter.flow()

    # -- twins ------------------------------------------------------------------------------

    async def get(self, twin_id: str) -> dict[str, Any]:
        """The twin document (``TwinNotFound`` if there is no such twin)."""
        return await self._calls.get(twin_id)

    async def patch_desired(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None
    ) -> dict[str, Any]:
        """Merge-patch desired state; the document once the change is durable."""
        return await self._calls.patch_desired(twin_id, patch, expected_version=expected_version)

    async def patch_tags(
        self, twin_id: str, patch: Mapping[str, Any], *, expected_version: int | None
    ) -> dict[str, Any]:
        """Merge-patch the twin's tags; the document once the change is durable."""
        return await self._calls.patch_tags(twin_id, patch, expected_version=expected_version)

    async def query(self, selector: TwinSelector, *, after: str | None, limit: int) -> Page:
        """Twins that ``selector`` matches, in id order, a page at a time."""
        return Page(*await self._calls.query(selector, after=after, limit=limit))

    async def aggregate(self, by: str, metric: str | None) -> list[dict[str, Any]]:
        """Fleet figures per family or tag value (see ``Runtime.aggregate``)."""
        return await self._calls.aggregate(by, metric)

    # -- commands and alarms ----------------------------------------------------------------

    async def send_command(
        self, twin_id: str, command: Mapping[str, Any], *, call_id: str | None = None
    ) -> dict[str, Any]:
        """Queue a command (a ``CommandRequest``'s fields); its record, answered if the device
        answered within the command's ``timeout_s``."""
        return await self._calls.send_command(twin_id, command, call_id=call_id)

    async def get_command(self, twin_id: str, command_id: str) -> dict[str, Any]:
        """A command's record (``UnknownCommand`` if there is none)."""
        return await self._calls.get_command(twin_id, command_id)

    async def ack_alarm(self, twin_id: str, alarm_id: str, *, who: str) -> dict[str, Any]:
        """Acknowledge an open alarm of the twin as ``who``; the alarm."""
        return await self._calls.ack_alarm(twin_id, alarm_id, who=who)

    async def alarm_rules(self) -> list[dict[str, Any]]:
        """Each family's alarm rules and where they come from."""
        return await asyncio.to_thread(self._runtime.alarm_rules)

    async def set_alarm_rules(
        self, family: str, rules: Sequence[Mapping[str, Any]] | None
    ) -> dict[str, Any]:
        """Replace a family's alarm rules (None: back to its built-in ones)."""
        return await asyncio.to_thread(self._runtime.set_alarm_rules, family, rules)

    # -- devices ----------------------------------------------------------------------------

    async def device(self, device_id: str) -> dict[str, Any] | None:
        """The registry entry of a device, if it was registered."""
        return await asyncio.to_thread(self._runtime.device, device_id)

    async def devices(self, *, after: str | None, limit: int) -> list[dict[str, Any]]:
        """Registry entries in id order, after id ``after``."""
        return await asyncio.to_thread(self._runtime.devices, after=after, limit=limit)

    async def register(
        self,
        device_id: str,
        *,
        device_type: str | None,
        tags: Mapping[str, Any],
        call_id: str | None = None,
    ) -> dict[str, Any]:
        """Register a device and create its twin; the twin document."""
        return await self._calls.register(
            device_id,
            device_type=device_type,
            tags=tags,
            placement=self._runtime.settings.default_placement,
            call_id=call_id,
        )

    async def set_lifecycle(
        self, device_id: str, state: str, *, call_id: str | None = None
    ) -> dict[str, Any]:
        """Move a device to lifecycle ``state``; the twin document."""
        entry = await self.device(device_id) or {"id": device_id, "placement": "virtual"}
        return await self._calls.set_lifecycle(device_id, state, registry=entry, call_id=call_id)

    # -- models -----------------------------------------------------------------------------

    def models(self) -> ModelRegistry:
        """The models this process knows (built-ins and plugins); no host is asked."""
        return self._runtime.models()

    async def set_model(
        self, twin_id: str, model: str | None, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Give the twin a model of its own (None: back to its family's); the document."""
        return await self._calls.set_model(twin_id, model, params)

    async def model_assignments(self) -> list[dict[str, Any]]:
        """The model assigned to each family that has one."""
        return await asyncio.to_thread(self._runtime.model_assignments)

    async def assign_model(
        self, family: str, model: str | None, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Give the family's twins ``model`` (None: the built-in default); the assignment."""
        return await asyncio.to_thread(self._runtime.assign_model, family, model, params)

    async def train(
        self,
        *,
        family: str | None,
        twins: Sequence[str],
        model: str | None,
        params: Mapping[str, Any] | None,
        scope: Literal["family", "twin"],
        since: float | None,
        until: float | None,
        max_twins: int,
    ) -> dict[str, Any]:
        """Start a training job beside the hosts; the running job's record."""
        return await asyncio.to_thread(
            functools.partial(
                self._runtime.train,
                family=family,
                twins=twins,
                model=model,
                params=params,
                scope=scope,
                since=since,
                until=until,
                max_twins=max_twins,
            )
        )

    async def trainings(self, *, limit: int) -> list[dict[str, Any]]:
        """Training jobs, newest first."""
        return await asyncio.to_thread(self._runtime.trainings, limit=limit)

    async def training(self, job_id: str) -> dict[str, Any]:
        """One training job's record (``TrainingNotFound`` if there is none)."""
        return await asyncio.to_thread(self._runtime.training, job_id)

    # -- events -----------------------------------------------------------------------------

    async def last_event_id(self) -> int:
        """The id of the newest event so far."""
        return await self._events.last_event_id()

    async def poll(self, after: int, types: Collection[str] | None, timeout: float) -> list[Event]:
        """Events after id ``after`` (of ``types``), waiting up to ``timeout`` for the first."""
        return await self._events.poll(after, types, timeout)
