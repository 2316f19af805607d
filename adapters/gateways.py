"""MQTT gateways as Ray actors of their own, so an operator adds gateways as the fleet grows.

Each gateway actor routes through a ``HostRouting`` built from the runtime's ``HostRoster``; the
gateways share the device topics through an MQTT shared subscription (``$share/<group>/...``),
so the broker spreads messages over them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from typing import Any

import ray

from twinfleet.runtime import RayPlatform
from twinfleet.runtime.directory import HostRoster, HostRouting

from .mqtt import MqttGateway, MqttSettings

__all__ = ["GatewayProcess", "spawn_gateway"]


class GatewayProcess:
    """One ``MqttGateway`` and its own router, inside the process that hosts it."""

    def __init__(self, view: HostRoster, settings: MqttSettings) -> None:
        self._client = HostRouting(view)
        self._gateway = MqttGateway(RayPlatform(self._client), settings)
        self._task: asyncio.Task[None] | None = None
        self._started_at: float | None = None

    async def start(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """Connect, subscribe, follow events; returns once the gateway is ready (idempotent:
        the supervisor calls it again after Ray restarted the process)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._gateway.run())
            self._started_at = time.time()
        ready = asyncio.ensure_future(self._gateway.wait_ready(timeout_s))
        await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        if self._task.done():
            ready.cancel()
            self._task.result()  # raises what stopped it (a TLS misconfiguration, say)
        await ready
        return {"client_id": self._gateway.client_id}

    async def stats(self) -> dict[str, Any]:
        """The gateway's counters and its router's, with queue depths."""
        router = self._client.router
        started = self._started_at
        return {
            **self._gateway.stats,
            "started": started is not None,
            "pid": os.getpid(),
            "uptime_s": 0.0 if started is None else time.time() - started,
            "queued": self._gateway.queued,
            "routed_buffered": router.buffered,
            "routed_in_flight": router.in_flight,
            "routed_applied": router.applied,
            "routed_failed": router.failed,
            "connected": self._gateway.connected,
        }

    async def flush(self) -> None:
        """Wait until every message read so far is applied by its twin."""
        await asyncio.to_thread(self._client.flush)

    async def stop(self) -> None:
        """Hand over what was read, then disconnect (ending a persistent session)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self._gateway.end_session()
        await asyncio.to_thread(self._client.close)


_GatewayActor = ray.remote(GatewayProcess)


def spawn_gateway(view: HostRoster, settings: MqttSettings, *, name: str | None = None) -> Any:
    """Start a gateway actor (call ``start`` on it); Ray restarts it if its process dies."""
    return _GatewayActor.options(
        name=name, num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=100
    ).remote(view, settings)
