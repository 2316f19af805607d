"""The asyncio side of ``twinfleet up``: MQTT broker and gateway, CoAP endpoint, simulated
devices, all on one event loop in a thread of their own."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
from typing import Any

import uvicorn

from twinfleet.adapters.broker import EmbeddedBroker
from twinfleet.adapters.coap import CoapEndpoint
from twinfleet.adapters.devices import SimulatedDevices, SimulatedDevicesOptions
from twinfleet.adapters.mqtt import MqttGateway, MqttSettings
from twinfleet.api.app import create_app
from twinfleet.api.auth import TokenStore
from twinfleet.runtime import RayPlatform, Runtime
from twinfleet.runtime.telemetry import TelemetrySink

from .options import EdgeOptions

__all__ = ["Edges"]

log = logging.getLogger(__name__)


class Edges(threading.Thread):
    """Runs the edges until ``stop()``; ``ready`` is set once devices can connect."""

    def __init__(
        self,
        runtime: Runtime,
        options: EdgeOptions,
        tokens: TokenStore,
        telemetry: TelemetrySink | None = None,
    ) -> None:
        super().__init__(name="twinfleet-edges", daemon=True)
        self._runtime = runtime
        self._tokens = tokens
        self._telemetry = telemetry
        self.api_url = ""
        self._options = options
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.mqtt_url = ""
        self.coap_url = ""
        self.gateway: MqttGateway | None = None
        self.coap: CoapEndpoint | None = None
        self.devices: list[SimulatedDevices] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as err:  # reported to the main thread, which stops the platform
            self.error = err
            self.ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        options = self._options
        fleet = RayPlatform(self._runtime)
        async with contextlib.AsyncExitStack() as stack:
            if options.mqtt:
                settings = MqttSettings.from_url(
                    options.mqtt,
                    ca_file=options.mqtt_ca,
                    cert_file=options.mqtt_cert,
                    key_file=options.mqtt_key,
                )
            else:
                broker = await _embedded_broker(options)
                stack.push_async_callback(broker.stop)
                settings = broker.settings()
            self.mqtt_url = settings.url
            self.gateway = MqttGateway(fleet, settings)
            gateway_run = asyncio.create_task(self.gateway.run(), name="mqtt-gateway")
            stack.push_async_callback(_cancel, gateway_run)
            await _ready(self.gateway, gateway_run)
            self.coap = await stack.enter_async_context(
                CoapEndpoint(fleet, host=options.host, port=options.coap_port)
            )
            self.coap_url = f"coap://{options.host}:{self.coap.port}"
            await self._serve_api(stack)
            for fleet_options in self._device_fleets():
                devices = SimulatedDevices(fleet_options)
                await _register(fleet, devices)
                self.devices.append(await stack.enter_async_context(devices))
            self.ready.set()
            await self._stopping.wait()

    async def _serve_api(self, stack: contextlib.AsyncExitStack) -> None:
        options = self._options
        config = uvicorn.Config(
            create_app(
                self._runtime,
                self._tokens,
                telemetry=self._telemetry,
                rate_limit=self._options.rate_limit,
                freeze_heap=True,  # this process serves the platform: freeze after start-up
            ),
            host=options.host,
            port=options.port,
            log_level="warning",
            lifespan="on",  # start-up freezes the heap; shutdown closes the host connections
        )
        server = uvicorn.Server(config)
        serving = asyncio.create_task(server.serve(), name="http-api")

        async def shutdown() -> None:
            server.should_exit = True
            await asyncio.wait({serving}, timeout=10)

        stack.push_async_callback(shutdown)
        while not server.started:
            if serving.done():
                serving.result()  # a port in use, say
                raise RuntimeError("the HTTP API stopped while starting")
            await asyncio.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else options.port
        self.api_url = f"http://{options.host}:{port}"

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

    def stats(self) -> dict[str, int]:
        """Counters of the edges, for the fleet summary."""
        gateway = self.gateway.stats if self.gateway is not None else {}
        coap = self.coap.stats if self.coap is not None else {}
        return {
            "mqtt_in": int(gateway.get("received", 0)),
            "coap_in": int(coap.get("requests", 0)),
            "edge_rejected": int(gateway.get("rejected", 0)) + int(coap.get("rejected", 0)),
            "devices_sent": sum(d.stats.sent for d in self.devices),
        }

    def stop(self, timeout: float = 30.0) -> None:
        """Stop devices, endpoint, gateway and broker (in that order), then the loop."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self.join(timeout)


async def _embedded_broker(options: EdgeOptions) -> EmbeddedBroker:
    """A started embedded broker on the asked port, or on a free one if that is taken."""
    broker = EmbeddedBroker(host=options.host, port=options.mqtt_port)
    try:
        await broker.start()
    except Exception as err:  # amqtt wraps the OSError of bind in its BrokerError
        cause = err if isinstance(err, OSError) else err.__cause__
        if not isinstance(cause, OSError) or cause.errno != errno.EADDRINUSE:
            raise
        log.warning("port %d is taken; the embedded broker takes a free one", options.mqtt_port)
        broker = EmbeddedBroker(host=options.host, port=0)
        await broker.start()
    return broker


async def _register(fleet: RayPlatform, devices: SimulatedDevices) -> None:
    """Register simulated devices with their families, so their twins know what they are."""
    gate = asyncio.Semaphore(32)

    async def one(device_id: str) -> None:
        async with gate:
            await fleet.calls.register(
                device_id,
                device_type=devices.simulator.family(device_id),
                tags={"simulated": True},
            )

    await asyncio.gather(*(one(i) for i in devices.device_ids))


async def _ready(gateway: MqttGateway, running: asyncio.Task[None]) -> None:
    ready = asyncio.ensure_future(gateway.wait_ready(30.0))
    await asyncio.wait({ready, running}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        ready.cancel()
        running.result()
    await ready


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
