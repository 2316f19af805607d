"""The edges as processes of their own: plain classes with one async ``start``/``stats``/``stop``
each, which :func:`spawn_edge` makes into Ray actors that Ray restarts when their process dies.

Each edge reaches the hosts through a ``HostRouting`` of its own (a picklable ``HostRoster``
of the running fleet), so none of them waits for another's interpreter. ``start`` is
idempotent and is called again by the supervisor after a restart (``stats()["started"]`` is
false in a fresh process); what it returns (a port, a URL) is what the supervisor remembers.

- :class:`BrokerProcess`: the embedded MQTT broker (Mosquitto or rumqttd, in a child process
  of this actor) when the user gives no ``--mqtt``.
- :class:`CoapProcess`: the CoAP endpoint.
- :class:`SimulatorProcess`: simulated devices (one fleet of one protocol per process).

MQTT gateways are :class:`twinfleet.adapters.gateways.GatewayProcess`, spawned the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import time
from typing import Any

import ray

from twinfleet.runtime import RayPlatform
from twinfleet.runtime.directory import HostRoster, HostRouting

from .broker import EmbeddedBroker
from .coap import CoapEndpoint
from .devices import SimulatedDevices, SimulatedDevicesOptions

__all__ = ["BrokerProcess", "CoapProcess", "SimulatorProcess", "spawn_edge"]

log = logging.getLogger(__name__)


class _Edge:
    """What every edge process shares: when it started, and its pid for the summary."""

    def __init__(self) -> None:
        self._started_at: float | None = None
        self._lock = asyncio.Lock()

    def _facts(self) -> dict[str, Any]:
        return {
            "started": self._started_at is not None,
            "pid": os.getpid(),
            "uptime_s": 0.0 if self._started_at is None else time.time() - self._started_at,
        }


class BrokerProcess(_Edge):
    """The embedded MQTT broker, in a process of its own."""

    def __init__(self, host: str, kind: str = "auto") -> None:
        super().__init__()
        self._host = host
        self._kind = kind
        self._broker: EmbeddedBroker | None = None

    async def start(self, port: int, *, free_port_if_taken: bool = False) -> dict[str, Any]:
        """Listen on ``port`` (or, if taken and allowed, on a free one); returns ``url``."""
        async with self._lock:
            if self._broker is None:
                broker = EmbeddedBroker(host=self._host, port=port, kind=self._kind)
                try:
                    await broker.start()
                except OSError as err:
                    if not (free_port_if_taken and err.errno == errno.EADDRINUSE):
                        raise
                    broker = EmbeddedBroker(host=self._host, port=0, kind=self._kind)
                    await broker.start()
                self._broker = broker
                self._started_at = time.time()
            return {
                "kind": self._broker.kind,
                "url": self._broker.url,
                "port": self._broker.port,
                "taken": port not in (0, self._broker.port),
            }

    async def stats(self) -> dict[str, Any]:
        """Whether it runs, and where; a broker process that died counts as not started, so
        the supervisor starts it again."""
        if self._broker is not None and not self._broker.running():
            log.warning("the embedded MQTT broker's process died")
            await self._broker.stop()
            self._broker = None
            self._started_at = None
        facts = self._facts()
        if self._broker is not None:
            facts["url"] = self._broker.url
            facts["broker_pid"] = self._broker.pid
        return facts

    async def stop(self) -> None:
        """Disconnect everyone and stop listening."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()


class CoapProcess(_Edge):
    """The CoAP endpoint, with a router of its own to the hosts."""

    def __init__(self, roster: HostRoster, host: str) -> None:
        super().__init__()
        self._routing = HostRouting(roster)
        self._host = host
        self._stack = contextlib.AsyncExitStack()
        self._endpoint: CoapEndpoint | None = None

    async def start(self, port: int) -> dict[str, Any]:
        """Listen on ``port`` (0: a free one); returns ``port`` and ``url``."""
        async with self._lock:
            if self._endpoint is None:
                endpoint = CoapEndpoint(RayPlatform(self._routing), host=self._host, port=port)
                self._endpoint = await self._stack.enter_async_context(endpoint)
                self._started_at = time.time()
            port = self._endpoint.port
            return {"port": port, "url": f"coap://{self._host}:{port}"}

    async def stats(self) -> dict[str, Any]:
        """The endpoint's counters and its router's."""
        facts = self._facts()
        if self._endpoint is not None:
            facts.update(self._endpoint.stats)
            facts["queued"] = self._routing.router.buffered
        return facts

    async def flush(self) -> None:
        """Wait until every message accepted so far is applied by its twin."""
        await asyncio.to_thread(self._routing.flush)

    async def stop(self) -> None:
        """Stop answering, then hand over what was accepted."""
        await self._stack.aclose()
        self._endpoint = None
        await asyncio.to_thread(self._routing.close)


class SimulatorProcess(_Edge):
    """Simulated devices of one protocol, registered with their families on first start."""

    def __init__(self, roster: HostRoster, options: SimulatedDevicesOptions) -> None:
        super().__init__()
        self._routing = HostRouting(roster)
        self._options = options
        self._devices: SimulatedDevices | None = None
        self._stack = contextlib.AsyncExitStack()

    async def start(self, *, register: bool = True) -> dict[str, Any]:
        """Register the devices (if asked) and run them; returns how many there are."""
        async with self._lock:
            if self._devices is None:
                devices = SimulatedDevices(self._options)
                if register:
                    await _register(self._routing, devices)
                self._devices = await self._stack.enter_async_context(devices)
                self._started_at = time.time()
            return {"devices": self._options.devices, "protocol": self._options.protocol}

    async def stats(self) -> dict[str, Any]:
        """The devices' counters (sent, failed, connected, ...)."""
        facts = self._facts()
        if self._devices is not None:
            facts.update(self._devices.stats.as_dict())
            facts["protocol"] = self._options.protocol
        return facts

    async def stop(self) -> dict[str, Any]:
        """Stop the devices cleanly (they say ``offline``); returns their last counters."""
        last = await self.stats()
        await self._stack.aclose()
        if self._devices is not None:
            last.update(self._devices.stats.as_dict())
        self._devices = None
        await asyncio.to_thread(self._routing.close)
        return last


async def _register(routing: HostRouting, devices: SimulatedDevices) -> None:
    """Register simulated devices with their families, so their twins know what they are."""
    calls = routing.calls()
    gate = asyncio.Semaphore(32)

    async def one(device_id: str) -> None:
        async with gate:
            await calls.register(
                device_id,
                device_type=devices.simulator.family(device_id),
                tags={"simulated": True},
            )

    try:
        await asyncio.gather(*(one(i) for i in devices.device_ids))
    finally:
        await calls.close()


def spawn_edge(cls: type, *args: Any, name: str | None = None) -> Any:
    """An edge class as a Ray actor in a process of its own, restarted by Ray when it dies
    (call ``start`` again then: the supervisor does)."""
    return (
        ray.remote(cls)
        .options(name=name, num_cpus=0, max_restarts=-1, max_task_retries=0, max_concurrency=100)
        .remote(*args)
    )
