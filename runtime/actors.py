"""The Ray shell around ``TwinHost`` and ``EventHub``: the only module applying ``ray.remote``."""

from __future__ import annotations

from typing import Any

import ray

from .events import Event, EventHub
from .host import HostSettings, TwinHost
from .stores import open_store
from .telemetry import open_telemetry

__all__ = ["spawn_host", "spawn_hub"]


class _HubSink:
    """Hands a host's events to the hub actor, one batch after another (keeps their order)."""

    def __init__(self, hub: Any) -> None:
        self._hub = hub

    async def publish(self, events: list[Event]) -> int:
        last: int = await self._hub.publish.remote(events)
        return last


class _RemoteTwinHost(TwinHost):
    """A ``TwinHost`` that opens its own store from a URL inside the actor process."""

    def __init__(
        self,
        host_id: str,
        store_url: str,
        settings: HostSettings,
        hub: Any | None,
        telemetry_url: str | None = None,
    ) -> None:
        super().__init__(
            host_id,
            open_store(store_url),
            settings=settings,
            events=_HubSink(hub) if hub is not None else None,
            telemetry=open_telemetry(telemetry_url) if telemetry_url else None,
        )


_TwinHostActor = ray.remote(_RemoteTwinHost)
_EventHubActor = ray.remote(EventHub)


def spawn_host(
    host_id: str,
    *,
    store_url: str,
    settings: HostSettings,
    hub: Any | None = None,
    telemetry_url: str | None = None,
    name: str | None = None,
    num_cpus: float = 0,
) -> Any:
    """Start a ``TwinHost`` Ray actor (restarted by Ray if its process dies)."""
    return _TwinHostActor.options(
        name=name,
        num_cpus=num_cpus,
        max_restarts=-1,
        max_task_retries=3,
        max_concurrency=1000,
    ).remote(host_id, store_url, settings, hub, telemetry_url)


def spawn_hub(*, capacity: int = 100_000, name: str | None = None) -> Any:
    """Start the ``EventHub`` Ray actor (long polls wait in it, hence the concurrency)."""
    return _EventHubActor.options(
        name=name, num_cpus=0, max_restarts=-1, max_concurrency=10_000
    ).remote(capacity=capacity)
