"""The Ray shell around ``TwinHost`` and ``EventHub``: the only module applying ``ray.remote``."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from .calls import HOST_METHODS
from .events import Event, EventHub
from .host import ALARM_RULES, MODEL_ASSIGNMENT, HostSettings, TwinHost
from .placement import Placement
from .stores import open_store
from .telemetry import open_telemetry
from .training import History, TrainingRequest, run_training
from .wire import Endpoint, HostServer

__all__ = ["spawn_host", "spawn_hub", "spawn_training"]


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
        store = open_store(store_url)
        super().__init__(
            host_id,
            store,
            settings=settings,
            events=_HubSink(hub) if hub is not None else None,
            telemetry=open_telemetry(telemetry_url) if telemetry_url else None,
            # A restarted host reads the families' models again, as the runtime wrote them.
            assignments={a["family"]: a for a in store.list_items(MODEL_ASSIGNMENT)},
            alarm_rules={r["family"]: r["rules"] for r in store.list_items(ALARM_RULES)},
        )
        self._server: HostServer | None = None
        self._server_lock = asyncio.Lock()

    async def endpoint(self) -> Endpoint:
        """Where this host answers direct calls (listening from the first time asked)."""
        async with self._server_lock:
            if self._server is None or self._server.endpoint is None:
                server = HostServer(self, HOST_METHODS)  # the list both transports take
                await server.start(ray.util.get_node_ip_address())  # type: ignore[no-untyped-call]
                self._server = server
            assert self._server.endpoint is not None
            return self._server.endpoint

    async def sweep(self) -> tuple[int, int]:
        """Sweep, then move the surviving heap out of the collector's way.

        A host holds millions of long-lived objects; a full collection walks them all (100 to
        150 ms for 50,000 twins, measured), stalling every call meanwhile. Objects alive after
        a young collection are frozen (``gc.freeze``): never walked again, still freed by
        reference counting when a twin is passivated (twin documents hold no cycles).
        """
        result = await super().sweep()
        gc.collect(1)
        gc.freeze()
        return result

    async def stop(self) -> int:
        """Stop answering direct calls, then stop the host (flushing every dirty twin)."""
        if self._server is not None:
            await self._server.close()
        return await super().stop()


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


class _RayTrainingHosts:
    """The fleet as a training job sees it: host actors, reached through Ray."""

    def __init__(self, hosts: Sequence[tuple[str, Any]]) -> None:
        self._hosts = dict(hosts)
        self._placement = Placement(tuple(self._hosts))

    def history(self, request: TrainingRequest) -> History:
        bounds = {"since": request.since, "until": request.until, "limit": request.limit}
        if request.twins:
            owned: dict[str, list[str]] = {}
            for twin_id in request.twins:
                owned.setdefault(self._placement.owner(twin_id), []).append(twin_id)
            refs = [
                self._hosts[host].training_history.remote(twin_ids=ids, **bounds)
                for host, ids in owned.items()
            ]
        else:
            share = -(-request.max_twins // len(self._hosts))  # each host's part, rounded up
            refs = [
                host.training_history.remote(family=request.family, max_twins=share, **bounds)
                for host in self._hosts.values()
            ]
        history: History = {}
        for part in ray.get(refs):
            history.update(part)
        return history

    def assign(
        self,
        family: str,
        assignment: Mapping[str, Any],
        states: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> int:
        owned: dict[str, dict[str, Mapping[str, Any]]] = {name: {} for name in self._hosts}
        for twin_id, state in (states or {}).items():
            owned[self._placement.owner(twin_id)][twin_id] = state
        refs = [
            host.set_family_model.remote(family, assignment, states=owned[name] or None)
            for name, host in self._hosts.items()
        ]
        return sum(ray.get(refs))

    def set_models(
        self, model: str, params: Mapping[str, Any], trained: Mapping[str, Mapping[str, Any]]
    ) -> int:
        refs = [
            self._hosts[self._placement.owner(twin_id)].set_model.remote(
                twin_id, model, params, trained=state
            )
            for twin_id, state in trained.items()
        ]
        ray.get(refs)
        return len(refs)


def _train(
    job_id: str, request: TrainingRequest, hosts: Sequence[tuple[str, Any]], store_url: str
) -> dict[str, Any]:
    store = open_store(store_url)
    try:
        return run_training(job_id, request, _RayTrainingHosts(hosts), store)
    finally:
        store.close()


_train_task = ray.remote(_train)


def spawn_training(
    job_id: str,
    request: TrainingRequest,
    *,
    hosts: Sequence[tuple[str, Any]],
    store_url: str,
    num_cpus: float = 1,
) -> Any:
    """Run a training job as a Ray task beside the hosts; the ref of its final record.

    It takes a CPU of its own in Ray's accounting (hosts take none), so jobs queue rather than
    crowd a small node; it is not retried (a failed job says why in its record).
    """
    return _train_task.options(num_cpus=num_cpus, max_retries=0).remote(
        job_id, request, tuple(hosts), store_url
    )
