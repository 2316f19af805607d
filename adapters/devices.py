"""Simulated devices that talk to a real MQTT broker or CoAP endpoint the way real devices do.

The device side of the external contract (prefix ``devices``), per device ``{id}``:

- telemetry: a JSON object of measurements with ``ts`` (Unix seconds) on
  ``devices/{id}/telemetry``, QoS 1, every ``sample_interval`` seconds;
- reported state: JSON merge patches on ``devices/{id}/reported``: firmware and applied config
  (``{"firmware": {"version": ...}, "config": {"sample_interval": ...}}``) once per connect,
  and ``{"config": {"sample_interval": ...}}`` after each applied desired change or interval
  command;
- desired: subscribed on ``devices/{id}/desired`` (retained
  ``{"version": N, "desired": {...}, "delta": {...}}``); ``desired.config.sample_interval`` or
  ``desired.sample_interval`` (seconds) sets the reporting rate;
- commands: subscribed on ``devices/{id}/commands/+`` (QoS 1,
  ``{"name", "params", "expires_at"}``), answered on ``.../commands/{cmd_id}/response`` with
  ``{"status": "ok", "result": {...}}`` or ``{"status": "error", "error": "..."}``;
  ``ping``, ``reboot`` and ``set_interval {"seconds"}`` are understood;
- presence: ``online`` on ``devices/{id}/status`` (QoS 1, not retained) once connected,
  ``offline`` there on a clean stop.

Many devices share one MQTT connection (``connections``, default ``min(devices, 100)``), so
10,000 devices run from one process. A connection's last will can name one topic only, so
only a connection that carries a single device sets the per-device last will
(``devices/{id}/status`` = ``offline``): per-device wills need ``connections == devices``.
A multiplexed connection that dies says nothing; the platform's presence timeout notices.

Each connection is one asyncio loop: every tick it takes the devices that are due from a numpy
schedule and generates their readings in one batch per family (``SignalSimulator``).

Over CoAP (``protocol="coap"``) devices POST telemetry as JSON (content format 50,
non-confirmable) to ``coap://host:port/devices/{id}/telemetry``, POST reported state
(confirmable) to ``/devices/{id}/reported``, and poll ``GET /devices/{id}/desired`` every
``desired_poll_s``; commands and presence are MQTT-only here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import ssl
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple
from urllib.parse import unquote, urlsplit

import aiocoap
import aiomqtt
import numpy as np
import orjson

from twinfleet.adapters.coap import widen_receive_buffers
from twinfleet.adapters.defaults import DEFAULT_COAP_URL, DEFAULT_MQTT_URL
from twinfleet.adapters.simulator import Anomaly, SignalSimulator
from twinfleet.runtime.messages import DeviceMessage
from twinfleet.twins import FAMILIES

__all__ = [
    "DEFAULT_COAP_URL",
    "DEFAULT_MQTT_URL",
    "BrokerAddress",
    "CommandAnswer",
    "DesiredUpdate",
    "LabelWriter",
    "SimulatedDevices",
    "SimulatedDevicesOptions",
    "SimulatedDevicesStats",
    "answer_command",
    "parse_desired",
    "parse_mqtt_url",
    "read_labels",
    "reported_config",
]

log = logging.getLogger(__name__)

JSON_CONTENT_FORMAT = 50
DEFAULT_CONNECTIONS = 100
SUBSCRIBE_CHUNK = 100  # topics per SUBSCRIBE packet
MAX_PAUSE_S = 1.0  # a connection loop looks at its schedule at least this often
# First connects spread over this many seconds per 1,000 devices (at most 5 s): no herd.
CONNECT_SPREAD_PER_1000_S = 0.5
MAX_CONNECT_SPREAD_S = 5.0
COAP_DEVICES_PER_SOCKET = 50  # simulated CoAP devices sharing one UDP socket
FIRST_BACKOFF_S, MAX_BACKOFF_S = 0.5, 30.0


# ---------------------------------------------------------------------------------------------
# options and counters


class BrokerAddress(NamedTuple):
    """Where an MQTT broker is, parsed from ``mqtt://[user[:password]@]host[:port]``."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


def parse_mqtt_url(url: str) -> BrokerAddress:
    """Parse an ``mqtt://`` (or ``mqtts://``, TLS) broker URL; ``ValueError`` if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in {"mqtt", "mqtts", "tcp"} or not parts.hostname:
        raise ValueError(f"not an MQTT broker URL (mqtt://host:port): {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=parts.port or (8883 if tls else 1883),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )


def _coap_base(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "coap" or not parts.hostname:
        raise ValueError(f"not a CoAP endpoint URL (coap://host:port): {url!r}")
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class SimulatedDevicesOptions:
    """What to simulate and where to send it.

    ``interval_s`` overrides every device's sample interval (default: its family's report
    interval); ``connections`` is the number of MQTT connections the devices share (default
    ``min(devices, 100)``; equal to ``devices`` for a last will per device); ``prefix`` starts
    every device id; ``labels`` receives each injected anomaly as a JSON line; ``tick_s`` is
    the scheduling granularity (readings due within one tick go out together).
    """

    devices: int
    protocol: Literal["mqtt", "coap"] = "mqtt"
    mqtt: str = DEFAULT_MQTT_URL
    coap: str = DEFAULT_COAP_URL
    interval_s: float | None = None
    connections: int | None = None
    prefix: str = "sim"
    topic_prefix: str = "devices"
    seed: int = 0
    anomaly_rate: float = 0.0005
    labels: Path | None = None
    firmware: str = "1.0.0"
    tick_s: float = 0.1
    desired_poll_s: float = 30.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.devices < 1:
            raise ValueError("simulate at least one device")
        if self.protocol not in {"mqtt", "coap"}:
            raise ValueError(f"protocol must be 'mqtt' or 'coap', not {self.protocol!r}")
        parse_mqtt_url(self.mqtt)
        _coap_base(self.coap)
        if self.interval_s is not None and not (
            math.isfinite(self.interval_s) and self.interval_s > 0
        ):
            raise ValueError("interval must be a positive number of seconds")
        if self.connections is not None and not 1 <= self.connections <= self.devices:
            raise ValueError("connections must be between 1 and the number of devices")
        if not self.prefix or "/" in self.prefix or "+" in self.prefix or "#" in self.prefix:
            raise ValueError("prefix must be non-empty and free of '/', '+' and '#'")
        if not self.topic_prefix or any(c in self.topic_prefix for c in "+#"):
            raise ValueError("topic_prefix must be non-empty and free of '+' and '#'")
        for name in ("tick_s", "desired_poll_s", "timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds")

    @property
    def connection_count(self) -> int:
        """How many MQTT connections (CoAP: worker loops) carry the devices."""
        return self.connections or min(self.devices, DEFAULT_CONNECTIONS)


@dataclass(slots=True)
class SimulatedDevicesStats:
    """Running counters of a fleet; ``as_dict`` for a summary."""

    devices: int = 0
    connected: int = 0  # MQTT connections up right now
    online: int = 0  # devices announced ``online`` right now
    sent: int = 0  # telemetry messages acknowledged (PUBACK, or a CoAP 2.xx)
    failed: int = 0  # telemetry refused or unanswered (CoAP)
    reported: int = 0  # reported-state patches acknowledged
    announced: int = 0  # "online" announcements acknowledged (MQTT)
    commands_answered: int = 0
    desired_applied: int = 0
    anomalies: int = 0
    reconnects: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# what a device does with a desired document or a command (pure, no I/O)


def _seconds(value: Any) -> float | None:
    """``value`` as a usable sample interval, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and seconds > 0 else None


class DesiredUpdate(NamedTuple):
    """What a desired message asks of a device: its version and a new sample interval.

    ``top_level`` says the interval came as ``desired.sample_interval`` rather than
    ``desired.config.sample_interval``: the device then reports it at both places, so the
    twin's delta clears whichever path the platform used.
    """

    version: int | None
    sample_interval: float | None
    top_level: bool = False


def parse_desired(payload: bytes) -> DesiredUpdate | None:
    """Read a ``{"version", "desired", "delta"}`` message; None if empty or malformed."""
    if not payload:
        return None  # a cleared retained message
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict) or not isinstance(document.get("desired"), dict):
        return None
    version = document.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        version = None
    desired = document["desired"]
    config = desired.get("config")
    nested = _seconds(config.get("sample_interval")) if isinstance(config, dict) else None
    if nested is not None:
        return DesiredUpdate(version, nested)
    top = _seconds(desired.get("sample_interval"))
    return DesiredUpdate(version, top, top_level=top is not None)


def reported_config(sample_interval: float, *, top_level: bool = False) -> dict[str, Any]:
    """The reported-state patch announcing an applied sample interval."""
    patch: dict[str, Any] = {"config": {"sample_interval": sample_interval}}
    if top_level:
        patch["sample_interval"] = sample_interval
    return patch


class CommandAnswer(NamedTuple):
    """A device's answer to one command, and the sample interval it now applies, if changed."""

    response: dict[str, Any]
    sample_interval: float | None = None


def _error(message: str) -> CommandAnswer:
    return CommandAnswer({"status": "error", "error": message})


def answer_command(payload: bytes, *, now: float) -> CommandAnswer:
    """What a simulated device answers to ``{"name", "params", "expires_at"}``."""
    try:
        command = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _error("malformed command: not JSON")
    if not isinstance(command, dict) or not isinstance(command.get("name"), str):
        return _error("malformed command: expected an object with a 'name'")
    params = command.get("params") or {}
    if not isinstance(params, dict):
        return _error("malformed command: 'params' must be an object")
    expires_at = command.get("expires_at")
    if (
        not isinstance(expires_at, bool)
        and isinstance(expires_at, int | float)
        and expires_at < now
    ):
        return _error("command expired")
    name = command["name"]
    if name == "ping":
        return CommandAnswer({"status": "ok", "result": {"pong": True}})
    if name == "reboot":
        return CommandAnswer({"status": "ok", "result": {}})
    if name == "set_interval":
        seconds = _seconds(params.get("seconds"))
        if seconds is None:
            return _error("set_interval needs params.seconds, a positive number")
        return CommandAnswer({"status": "ok", "result": {"sample_interval": seconds}}, seconds)
    return _error(f"unknown command {name!r}")


# ---------------------------------------------------------------------------------------------
# anomaly labels


def _label_line(anomaly: Anomaly) -> str:
    record = anomaly._asdict()
    if math.isinf(anomaly.end):
        record["end"] = None  # an open-ended drift; JSON has no Infinity
    return json.dumps(record)


class LabelWriter:
    """Writes each injected anomaly as one JSON line as it happens (the file is truncated).

    A line: ``{"device_id", "metric", "kind", "start", "end"}``, times in Unix seconds,
    ``end`` null for a drift that does not end.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.written = 0
        self._file = path.open("w", encoding="utf-8")

    def __call__(self, anomaly: Anomaly) -> None:
        """Write one label and flush it, so a reader sees it at once."""
        self._file.write(_label_line(anomaly) + "\n")
        self._file.flush()
        self.written += 1

    def close(self) -> None:
        """Close the file."""
        self._file.close()


def read_labels(path: Path) -> list[Anomaly]:
    """The anomalies in a labels file written by ``LabelWriter``."""
    labels = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            end = math.inf if record["end"] is None else float(record["end"])
            labels.append(
                Anomaly(
                    record["device_id"],
                    record["metric"],
                    record["kind"],
                    float(record["start"]),
                    end,
                )
            )
    return labels


# ---------------------------------------------------------------------------------------------
# scheduling


class _Schedule:
    """When each device of one connection reports next: numpy arrays, no timer per device."""

    def __init__(self, intervals: np.ndarray, phases: np.ndarray) -> None:
        self.interval = intervals.astype(float)
        self._phases = phases
        self.due = np.zeros_like(self.interval)

    def start(self, now: float) -> None:
        """Spread the first readings over one interval (``phases`` are fractions of it)."""
        self.due = now + self.interval * self._phases

    def take(self, now: float) -> list[int]:
        """The devices due at ``now``, rescheduled one interval on (missed slots are skipped)."""
        idx = np.flatnonzero(self.due <= now)
        if idx.size:
            step = self.interval[idx]
            following = self.due[idx] + step
            behind = following <= now
            following[behind] = now + step[behind]
            self.due[idx] = following
        return [int(i) for i in idx]

    def set_interval(self, i: int, seconds: float, now: float) -> None:
        """Report every ``seconds`` from now on; a shorter interval takes effect at once."""
        self.interval[i] = seconds
        self.due[i] = min(float(self.due[i]), now + seconds)

    def delay(self, now: float) -> float:
        """Seconds until the next device is due."""
        return float(self.due.min()) - now


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------------------------------
# connections


class _Worker:
    """The devices of one connection: their schedule, desired versions and shared counters."""

    def __init__(
        self,
        fleet: SimulatedDevices,
        number: int,
        ids: list[str],
        intervals: np.ndarray,
        phases: np.ndarray,
    ) -> None:
        self.fleet = fleet
        self.options = fleet.options
        self.stats = fleet.stats
        self.number = number
        self.ids = ids
        self.index = {device: i for i, device in enumerate(ids)}
        self.schedule = _Schedule(intervals, phases)
        self.versions = [-1] * len(ids)  # last desired version applied, per device
        self.wake = asyncio.Event()

    def topic(self, device: str, leaf: str) -> str:
        return f"{self.options.topic_prefix}/{device}/{leaf}"

    def due_readings(self) -> list[DeviceMessage]:
        due = self.schedule.take(time.monotonic())
        if not due:
            return []
        return self.fleet.simulator.readings_for([self.ids[i] for i in due], now=time.time())

    def telemetry_body(self, message: DeviceMessage) -> bytes:
        ts = message.ts if message.ts is not None else time.time()
        return orjson.dumps({**message.payload, "ts": round(ts, 3)})

    def greeting(self, i: int) -> dict[str, Any]:
        """The reported patch a device sends when it (re)connects."""
        return {
            "firmware": {"version": self.options.firmware},
            "config": {"sample_interval": float(self.schedule.interval[i])},
        }

    def set_interval(self, i: int, seconds: float) -> None:
        self.schedule.set_interval(i, seconds, time.monotonic())
        self.wake.set()

    def on_desired(self, i: int, payload: bytes) -> dict[str, Any] | None:
        """Apply a desired message; the reported patch to send, or None if nothing changed."""
        update = parse_desired(payload)
        if update is None or update.sample_interval is None:
            return None
        if update.version is not None:
            if update.version <= self.versions[i]:
                return None  # the retained message again, after a reconnect
            self.versions[i] = update.version
        self.set_interval(i, update.sample_interval)
        self.stats.desired_applied += 1
        return reported_config(update.sample_interval, top_level=update.top_level)

    async def pause(self, stopping: asyncio.Event, *deadlines: float) -> None:
        """Sleep until the next deadline (at least one tick, at most a second) or a wake-up."""
        if stopping.is_set():
            return
        seconds = min(max(min(deadlines), self.options.tick_s), MAX_PAUSE_S)
        self.wake.clear()
        handle = asyncio.get_running_loop().call_later(seconds, self.wake.set)
        try:
            await self.wake.wait()
        finally:
            handle.cancel()

    async def run(self, stopping: asyncio.Event) -> None:
        raise NotImplementedError


class _MqttConnection(_Worker):
    """One MQTT connection carrying several devices; reconnects with backoff until stopped."""

    def __init__(self, *args: Any, broker: BrokerAddress, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.broker = broker
        self.client_id = (
            self.ids[0] if len(self.ids) == 1 else f"{self.options.prefix}-conn-{self.number:05d}"
        )
        self._online = False

    def _client(self) -> aiomqtt.Client:
        will = None
        if len(self.ids) == 1:
            will = aiomqtt.Will(self.topic(self.ids[0], "status"), b"offline", qos=1, retain=False)
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            username=self.broker.username,
            password=self.broker.password,
            identifier=self.client_id,
            will=will,
            clean_session=True,
            keepalive=30,
            timeout=self.options.timeout_s,
            max_inflight_messages=min(max(20, 2 * len(self.ids)), 1000),
            tls_context=ssl.create_default_context() if self.broker.tls else None,
        )
        # Every due device's reading is in flight at once by design: no warning for that.
        client.pending_calls_threshold = 4 * len(self.ids) + 100
        return client

    def _set_online(self, online: bool) -> None:
        if online != self._online:
            self._online = online
            self.stats.online += len(self.ids) if online else -len(self.ids)

    async def run(self, stopping: asyncio.Event) -> None:
        # Connections start one after the other: a hundred subscribing and announcing at
        # once stalled this process's loop for tens of seconds (readings 27 s late, timeouts).
        count = len(self.fleet._workers)
        devices = self.options.devices
        spread = min(MAX_CONNECT_SPREAD_S, CONNECT_SPREAD_PER_1000_S * devices / 1000)
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(stopping.wait(), spread * self.number / max(count, 1))
        backoff = FIRST_BACKOFF_S
        while not stopping.is_set():
            try:
                async with self._client() as client:
                    backoff = FIRST_BACKOFF_S
                    await self._session(client, stopping)
            except aiomqtt.MqttError as err:
                if stopping.is_set():
                    return
                self.stats.reconnects += 1
                self.fleet.warn(f"MQTT connection {self.client_id}: {err}; reconnecting")
                await self.pause(stopping, backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _session(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        self.stats.connected += 1
        try:
            topics = [(self.topic(d, "desired"), 1) for d in self.ids]
            topics += [(self.topic(d, "commands/+"), 1) for d in self.ids]
            for chunk in _chunks(topics, SUBSCRIBE_CHUNK):
                await client.subscribe(list(chunk))
            await self._announce(client)
            # Readings start once the device is connected: none pile up while it is not.
            self.schedule.start(time.monotonic())
            # listen only after the greeting: a retained desired then reports after it
            listener = asyncio.create_task(self._listen(client))
            reporter = asyncio.create_task(self._report(client, stopping))
            try:
                done, _ = await asyncio.wait(
                    {listener, reporter}, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (listener, reporter):
                    task.cancel()
                await asyncio.gather(listener, reporter, return_exceptions=True)
            for task in done:
                if not task.cancelled() and (err := task.exception()) is not None:
                    raise err
            if listener in done:
                raise aiomqtt.MqttError("the broker closed the message stream")
            await self._goodbye(client)
        finally:
            self.stats.connected -= 1
            self._set_online(False)

    async def _publish(self, client: aiomqtt.Client, topic: str, payload: bytes) -> None:
        await client.publish(topic, payload, qos=1)

    async def _reported(self, client: aiomqtt.Client, device: str, patch: Any) -> None:
        await self._publish(client, self.topic(device, "reported"), orjson.dumps(patch))
        self.stats.reported += 1

    async def _announce(self, client: aiomqtt.Client) -> None:
        await asyncio.gather(
            *(self._publish(client, self.topic(d, "status"), b"online") for d in self.ids)
        )
        self.stats.announced += len(self.ids)
        self._set_online(True)
        await asyncio.gather(
            *(self._reported(client, d, self.greeting(i)) for i, d in enumerate(self.ids))
        )

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """Say ``offline`` for every device: a clean disconnect does not fire the last will."""
        try:
            await asyncio.wait_for(
                asyncio.gather(
                    *(self._publish(client, self.topic(d, "status"), b"offline") for d in self.ids)
                ),
                self.options.timeout_s,
            )
        except (TimeoutError, asyncio.TimeoutError, aiomqtt.MqttError) as err:
            log.warning("%s: could not say offline for all devices: %s", self.client_id, err)
        self._set_online(False)

    async def _report(self, client: aiomqtt.Client, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            readings = self.due_readings()
            if readings:
                results = await asyncio.gather(
                    *(self._telemetry(client, m) for m in readings), return_exceptions=True
                )
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
            await self.pause(stopping, self.schedule.delay(time.monotonic()))

    async def _telemetry(self, client: aiomqtt.Client, message: DeviceMessage) -> None:
        topic = self.topic(message.device_id, "telemetry")
        await self._publish(client, topic, self.telemetry_body(message))
        self.stats.sent += 1

    async def _listen(self, client: aiomqtt.Client) -> None:
        prefix = self.options.topic_prefix + "/"
        async for message in client.messages:
            topic = message.topic.value
            if not topic.startswith(prefix):
                continue
            parts = topic[len(prefix) :].split("/")
            i = self.index.get(parts[0])
            if i is None:
                continue
            raw = message.payload
            payload = raw if isinstance(raw, bytes) else str(raw or "").encode()
            device = parts[0]
            if parts[1:] == ["desired"]:
                patch = self.on_desired(i, payload)
                if patch is not None:
                    await self._reported(client, device, patch)
            elif len(parts) == 3 and parts[1] == "commands":
                answer = answer_command(payload, now=time.time())
                if answer.sample_interval is not None:
                    self.set_interval(i, answer.sample_interval)
                await self._publish(
                    client,
                    self.topic(device, f"commands/{parts[2]}/response"),
                    orjson.dumps(answer.response),
                )
                self.stats.commands_answered += 1
                if answer.sample_interval is not None:
                    await self._reported(client, device, reported_config(answer.sample_interval))


class _CoapWorker(_Worker):
    """Devices of one worker loop sending over CoAP through the fleet's client context."""

    def __init__(self, *args: Any, context: Any, base: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.context = context
        self.base = base
        polls = np.full(len(self.ids), self.options.desired_poll_s)
        self.polls = _Schedule(polls, np.linspace(0.0, 1.0, len(self.ids), endpoint=False))

    async def _request(
        self, code: Any, device: str, leaf: str, payload: bytes = b"", *, confirmable: bool
    ) -> Any:
        """The response, or None when it failed or timed out."""
        options: dict[str, Any] = {}
        if payload:
            options["content_format"] = JSON_CONTENT_FORMAT
        else:
            options["accept"] = JSON_CONTENT_FORMAT
        if hasattr(aiocoap, "Reliable"):  # aiocoap >= 0.4.8; mtype is deprecated there
            options["transport_tuning"] = aiocoap.Reliable if confirmable else aiocoap.Unreliable
        else:
            options["mtype"] = aiocoap.CON if confirmable else aiocoap.NON
        request = aiocoap.Message(
            code=code,
            uri=f"{self.base}/devices/{device}/{leaf}",
            payload=payload,
            **options,
        )
        try:
            return await asyncio.wait_for(
                self.context.request(request).response, self.options.timeout_s
            )
        except (TimeoutError, asyncio.TimeoutError, aiocoap.error.Error, OSError) as err:
            log.debug("CoAP %s %s/%s failed: %r", code, device, leaf, err)
            return None

    async def _reported(self, device: str, patch: Any) -> None:
        response = await self._request(
            aiocoap.POST, device, "reported", orjson.dumps(patch), confirmable=True
        )
        if response is not None and response.code.is_successful():
            self.stats.reported += 1

    async def _telemetry(self, message: DeviceMessage) -> None:
        response = await self._request(
            aiocoap.POST,
            message.device_id,
            "telemetry",
            self.telemetry_body(message),
            confirmable=False,
        )
        if response is not None and response.code.is_successful():
            self.stats.sent += 1
        else:
            self.stats.failed += 1

    async def _poll(self, i: int) -> None:
        device = self.ids[i]
        response = await self._request(aiocoap.GET, device, "desired", confirmable=True)
        if response is None or not response.code.is_successful():
            return  # 4.04: no desired state yet
        patch = self.on_desired(i, response.payload)
        if patch is not None:
            await self._reported(device, patch)

    async def run(self, stopping: asyncio.Event) -> None:
        now = time.monotonic()
        self.polls.start(now)
        await asyncio.gather(*(self._reported(d, self.greeting(i)) for i, d in enumerate(self.ids)))
        # Each request on its own: one whose answer is slow or lost (UDP) must not hold back
        # the other devices' readings (it did: 8 s gaps, devices seen offline).
        pending: set[asyncio.Task[None]] = set()
        limit = 4 * len(self.ids) + 16
        try:
            while not stopping.is_set():
                work = [self._telemetry(m) for m in self.due_readings()]
                work += [self._poll(i) for i in self.polls.take(time.monotonic())]
                for request in work:
                    while len(pending) >= limit:
                        await asyncio.wait(set(pending), return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.create_task(request)
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                now = time.monotonic()
                await self.pause(stopping, self.schedule.delay(now), self.polls.delay(now))
        finally:
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# the fleet


class SimulatedDevices:
    """Simulated devices over MQTT (or CoAP) from one process and one event loop.

    ``await fleet.run(duration_s=...)`` runs until ``stop()`` or the duration; or use
    ``async with SimulatedDevices(options) as fleet:`` to run it in the background, stopped
    cleanly (devices say ``offline``) on exit.
    """

    def __init__(self, options: SimulatedDevicesOptions) -> None:
        self.options = options
        self.stats = SimulatedDevicesStats(devices=options.devices)
        self._labels: LabelWriter | None = None
        self.simulator = SignalSimulator(
            options.devices,
            seed=options.seed,
            prefix=options.prefix,
            anomaly_rate=options.anomaly_rate,
            start=time.time(),
            on_anomaly=self._on_anomaly,
        )
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[SimulatedDevicesStats] | None = None
        self._warned: set[str] = set()
        self._workers: list[_Worker] = []
        self._where: dict[str, tuple[int, int]] = {}
        self._coap_contexts: list[Any] = []
        devices = self.simulator.devices
        # spread each family's first readings evenly over its interval
        per_family: dict[str, int] = {}
        for _, family in devices:
            per_family[family] = per_family.get(family, 0) + 1
        seen: dict[str, int] = {}
        self._plan: list[tuple[str, float, float]] = []  # (id, interval, phase)
        for device, family in devices:
            j = seen[family] = seen.get(family, -1) + 1
            interval = options.interval_s or FAMILIES[family].report_interval_s
            self._plan.append((device, interval, j / per_family[family]))

    @property
    def device_ids(self) -> list[str]:
        """Every simulated device id."""
        return [device for device, _, _ in self._plan]

    def sample_interval(self, device_id: str) -> float:
        """The sample interval a device applies now, in seconds."""
        if not self._workers:
            for device, interval, _ in self._plan:
                if device == device_id:
                    return interval
            raise KeyError(device_id)
        w, i = self._where[device_id]
        return float(self._workers[w].schedule.interval[i])

    def stop(self) -> None:
        """Ask every connection to stop cleanly (safe to call from a signal handler)."""
        self._stopping.set()
        for worker in self._workers:
            worker.wake.set()

    def warn(self, message: str) -> None:
        """Log a connection problem once per distinct message (not once per connection)."""
        key = message.split(":", 1)[-1]
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _on_anomaly(self, anomaly: Anomaly) -> None:
        self.stats.anomalies += 1
        if self._labels is not None:
            self._labels(anomaly)

    def _build(self) -> None:
        count = self.options.connection_count
        broker = parse_mqtt_url(self.options.mqtt)
        base = _coap_base(self.options.coap)
        for number in range(count):
            plan = self._plan[number::count]
            ids = [device for device, _, _ in plan]
            intervals = np.array([interval for _, interval, _ in plan])
            phases = np.array([phase for _, _, phase in plan])
            worker: _Worker
            if self.options.protocol == "mqtt":
                worker = _MqttConnection(self, number, ids, intervals, phases, broker=broker)
            else:
                # A UDP socket (a source port) per group of devices, as real devices have one
                # each: CoAP message ids are 16 bits per endpoint, and one socket for thousands
                # of devices reused them within the exchange lifetime: the endpoint took the
                # repeats for duplicates (62,023 of 166,300 readings lost at 5,000 devices).
                context = self._coap_contexts[number % len(self._coap_contexts)]
                worker = _CoapWorker(
                    self, number, ids, intervals, phases, context=context, base=base
                )
            self._workers.append(worker)
            for i, device in enumerate(ids):
                self._where[device] = (number, i)

    async def run(self, *, duration_s: float | None = None) -> SimulatedDevicesStats:
        """Run every device until ``stop()`` (or ``duration_s``), then stop them cleanly."""
        if self._workers:
            raise RuntimeError("a SimulatedDevices runs once")
        loop = asyncio.get_running_loop()
        timer = loop.call_later(duration_s, self.stop) if duration_s is not None else None
        if self.options.labels is not None:
            self._labels = LabelWriter(self.options.labels)
        try:
            if self.options.protocol == "coap":
                for _ in range(-(-self.options.devices // COAP_DEVICES_PER_SOCKET)):
                    context = await aiocoap.Context.create_client_context()
                    widen_receive_buffers(context)
                    self._coap_contexts.append(context)
            self._build()
            now = time.monotonic()
            for worker in self._workers:
                worker.schedule.start(now)
            if self._stopping.is_set():
                return self.stats
            tasks = [asyncio.create_task(w.run(self._stopping)) for w in self._workers]
            try:
                await asyncio.gather(*tasks)
            finally:
                self.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if timer is not None:
                timer.cancel()
            for context in self._coap_contexts:
                await context.shutdown()
            if self._labels is not None:
                self._labels.close()
        return self.stats

    async def __aenter__(self) -> SimulatedDevices:
        self._task = asyncio.create_task(self.run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.stop()
        if self._task is not None:
            await self._task
