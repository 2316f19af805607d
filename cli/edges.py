"""The edges of ``twinfleet up``, each in a process of its own, supervised.

The embedded MQTT broker, every MQTT gateway, the CoAP endpoint and each fleet of simulated
devices run as Ray actors (``adapters/processes.py``, ``adapters/gateways.py``) kept running by
a :class:`~twinfleet.cli.supervisor.Supervisor`; none waits for another's interpreter. The
HTTP API is served from this (the driver's) process on an event loop of its own: the driver
does nothing else but watch. Gateways share the device topics through an MQTT shared
subscription, so ``--gateways N`` spreads the load.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import threading
import time
from typing import Any

import ray
import uvicorn

from twinfleet.adapters.devices import SimulatedDevicesOptions
from twinfleet.adapters.gateways import spawn_gateway
from twinfleet.adapters.mqtt import MqttSettings
from twinfleet.adapters.processes import BrokerProcess, CoapProcess, SimulatorProcess, spawn_edge
from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import Runtime
from twinfleet.runtime.telemetry import TelemetrySink

from .options import EdgeOptions
from .supervisor import Supervisor

__all__ = ["Edges", "default_gateways"]

log = logging.getLogger(__name__)


def default_gateways(cores: int | None = None) -> int:
    """Gateways for a machine of ``cores`` cores: one per core, at most four.

    Measured on 2 cores (``bench/up_mqtt.py``, a burst into 2,000 twins): two gateways took
    1.56x what one did (14,373 vs 9,195 msgs/s); the hosts need the rest of the machine.
    """
    return max(1, min(4, cores or os.cpu_count() or 1))


class Edges:
    """Starts the edges (``start``), keeps them running, and stops them (``stop``)."""

    def __init__(
        self,
        runtime: Runtime,
        options: EdgeOptions,
        tokens: TokenStore,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        self._runtime = runtime
        self._options = options
        self._tokens = tokens
        self._telemetry = telemetry
        self.supervisor = Supervisor()
        self.mqtt_url = ""
        self.coap_url = ""
        self.api_url = ""
        self.notices: list[str] = []  # expected conditions worth a line (a taken port, say)
        self.gateways = 0
        self.broker_kind = "external"
        self._api: _ApiServer | None = None

    def start(self) -> None:
        """Start broker, gateways, CoAP endpoint, API and simulated devices, in that order."""
        options = self._options
        roster = self._runtime.roster()
        supervisor = self.supervisor
        if options.mqtt:
            settings = MqttSettings.from_url(
                options.mqtt,
                ca_file=options.mqtt_ca,
                cert_file=options.mqtt_cert,
                key_file=options.mqtt_key,
            )
            gateways = options.gateways or default_gateways()
        else:
            facts = supervisor.add(
                "broker",
                lambda: spawn_edge(
                    BrokerProcess, options.host, options.broker, name="twinfleet-broker"
                ),
                _broker_starter(options.mqtt_port),
            )
            if facts.get("taken"):
                self.notices.append(
                    f"port {options.mqtt_port} is taken: the embedded MQTT broker listens on "
                    f"{facts['port']} instead"
                )
            settings = MqttSettings.from_url(facts["url"])
            gateways = options.gateways or default_gateways()
            self.broker_kind = str(facts.get("kind", ""))
        self.mqtt_url = settings.url
        for index in range(gateways):
            # A fixed id and a persistent session: a gateway restarted after its process died
            # gets what the broker kept for it; it acknowledges only what twins applied.
            gateway_settings = dataclasses.replace(
                settings, client_id=f"twinfleet-gw-{index}", persistent=True
            )
            supervisor.add(
                f"gateway-{index}",
                functools.partial(
                    spawn_gateway, roster, gateway_settings, name=f"twinfleet-gateway-{index}"
                ),
                lambda actor, facts: actor.start.remote(),
            )
        self.gateways = gateways
        coap = supervisor.add(
            "coap",
            lambda: spawn_edge(CoapProcess, roster, options.host, name="twinfleet-coap"),
            _port_starter(options.coap_port),
        )
        self.coap_url = coap["url"]
        self._api = _ApiServer(self._runtime, self._tokens, self._telemetry, options, self)
        self.api_url = self._api.start()
        for fleet in self._device_fleets():
            supervisor.add(
                f"devices-{fleet.protocol}",
                functools.partial(
                    spawn_edge,
                    SimulatorProcess,
                    roster,
                    fleet,
                    name=f"twinfleet-devices-{fleet.protocol}",
                ),
                lambda actor, facts: actor.start.remote(register=facts is None),
            )

    def _device_fleets(self) -> list[SimulatedDevicesOptions]:
        options = self._options
        if not options.simulate:
            return []
        coap = round(options.simulate * options.coap_share)
        mqtt = options.simulate - coap
        common: dict[str, Any] = {"interval_s": options.interval_s, "seed": options.seed}
        fleets = []
        if mqtt:
            fleets.append(
                SimulatedDevicesOptions(
                    devices=mqtt, protocol="mqtt", mqtt=self.mqtt_url, prefix="sim", **common
                )
            )
        if coap:
            fleets.append(
                SimulatedDevicesOptions(
                    devices=coap, protocol="coap", coap=self.coap_url, prefix="sim-coap", **common
                )
            )
        return fleets

    def stats(self) -> dict[str, Any]:
        """Counters of the edges for the fleet summary, and each edge process's stats."""
        processes = self.supervisor.stats()
        gateways = [s for name, s in processes.items() if name.startswith("gateway-")]
        coap = processes.get("coap", {})
        devices = [s for name, s in processes.items() if name.startswith("devices-")]
        return {
            "mqtt_in": sum(int(g.get("received", 0)) for g in gateways),
            "coap_in": int(coap.get("requests", 0)),
            "edge_rejected": sum(int(g.get("rejected", 0)) for g in gateways)
            + int(coap.get("rejected", 0)),
            "devices_sent": sum(int(d.get("sent", 0)) for d in devices),
            "restarts": sum(int(s.get("restarts", 0)) for s in processes.values()),
            "processes": processes,
        }

    def stop_devices(self) -> dict[str, dict[str, Any]]:
        """Stop the simulated devices (they say ``offline``); their last counters by name."""
        last: dict[str, dict[str, Any]] = {}
        for child in self.supervisor.children():
            if child.name.startswith("devices-"):
                try:
                    last[child.name] = ray.get(child.actor.stop.remote(), timeout=30)
                except Exception as err:
                    log.warning("stopping %s: %s", child.name, err)
        return last

    def drain(self, timeout_s: float = 15.0) -> bool:
        """Wait until the gateways and the CoAP endpoint have handed every message they
        took to the twins, and the twins applied them; whether they did in time."""
        deadline = time.monotonic() + timeout_s
        relays = [c for c in self.supervisor.children() if c.name.startswith(("gateway-", "coap"))]
        while time.monotonic() < deadline:
            try:
                stats = ray.get([c.actor.stats.remote() for c in relays], timeout=5)
                if all(int(s.get("queued", 0)) == 0 for s in stats):
                    ray.get([c.actor.flush.remote() for c in relays], timeout=10)
                    return True
            except Exception as err:
                log.warning("draining the edges: %s", err)
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """Stop devices, API, CoAP endpoint, gateways and broker (newest first)."""
        self.stop_devices()
        if self._api is not None:
            self._api.stop()
        self.supervisor.stop()


def _broker_starter(port: int) -> Any:
    """The broker's first start may move to a free port; a restart takes the same one."""

    def start(actor: Any, facts: dict[str, Any] | None) -> Any:
        if facts is None:
            return actor.start.remote(port, free_port_if_taken=True)
        return actor.start.remote(facts["port"])

    return start


def _port_starter(port: int) -> Any:
    """An edge's first start listens on ``port``; a restart where the first one did."""

    def start(actor: Any, facts: dict[str, Any] | None) -> Any:
        return actor.start.remote(port if facts is None else facts["port"])

    return start


class _ApiServer(threading.Thread):
    """The HTTP API on an event loop of its own in this process."""

    def __init__(
        self,
        runtime: Runtime,
        tokens: TokenStore,
        telemetry: TelemetrySink | None,
        options: EdgeOptions,
        edges: Edges,
    ) -> None:
        super().__init__(name="twinfleet-api", daemon=True)
        app = create_app(
            runtime,
            tokens,
            telemetry=telemetry,
            edges=edges,
            rate_limit=options.rate_limit,
            freeze_heap=True,  # this process serves the platform: freeze after start-up
        )
        self._server = uvicorn.Server(
            uvicorn.Config(
                app,
                host=options.host,
                port=options.port,
                log_level="warning",
                lifespan="on",  # start-up freezes the heap; shutdown closes host connections
            )
        )
        self._host = options.host
        self._ended = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> str:  # type: ignore[override]
        """Serve; returns the API's URL once it listens (raises if it could not)."""
        super().start()
        while not self._server.started:
            if self._ended.wait(0.05):
                break
        if self.error is not None:
            raise self.error
        if not self._server.started:
            raise RuntimeError("the HTTP API stopped while starting")
        servers = self._server.servers
        port = servers[0].sockets[0].getsockname()[1]
        return f"http://{self._host}:{port}"

    def run(self) -> None:
        try:
            asyncio.run(self._server.serve())
        except BaseException as err:  # a port in use, say: reported by start()
            self.error = err
        finally:
            self._ended.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish open requests and stop."""
        self._server.should_exit = True
        self.join(timeout)
