"""``MqttGateway``: devices' MQTT traffic in, desired state and commands out.

One gateway holds one MQTT connection (aiomqtt). It subscribes with shared subscriptions
(``$share/{group}/...``) so several gateways split the device traffic, reads messages as fast
as they come (Mosquitto drops QoS 1 messages for a subscriber whose queue of 1,000 is full),
decodes each with :mod:`twinfleet.adapters.payloads` and hands them to the fleet in batches.
A bad message is rejected on its own (a ``rejected`` event and a counter), never with the
batch around it. A second task follows the fleet's events: desired documents are published
retained on ``devices/{id}/desired``; queued commands for online MQTT devices are claimed
(each by one gateway only) and published on ``devices/{id}/commands/{cmd_id}``.

Everything one device sends is handled in order: telemetry, a last will and a command answer
reach the fleet in the order the broker delivered them. The connection is re-made with
exponential backoff and jitter when it drops; subscriptions are made afresh on every
connection (clean session), and publishes wait for the next connection.

With ``persistent`` (and a fixed ``client_id``) the broker keeps the gateway's session while
it is away (its subscriptions, the QoS 1 messages that arrive meanwhile) and the gateway
acknowledges a message only once its twin has applied it: a gateway process that dies loses
nothing it acknowledged; the broker sends the rest again when it comes back (a reading seen
twice is stale the second time, not applied twice).

The status topic ``devices/{id}/status`` carries ``online`` or ``offline`` (or
``{"online": bool}``): ``offline`` (typically the device's last will) marks the twin offline
at once; ``online`` counts as a sign of life (an empty reported patch), so the twin comes
online and commands queued while it was away are delivered. A retained ``online`` is old news
and ignored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import aiomqtt
import orjson
from paho.mqtt.reasoncodes import ReasonCode

from twinfleet.runtime.edge import EdgePlatform
from twinfleet.runtime.events import Event
from twinfleet.runtime.messages import DeviceMessage
from twinfleet.twins import TwinfleetError, UnsupportedFormat

from .payloads import (
    decode_command_response,
    decode_lorawan_uplink,
    decode_reported,
    decode_status,
    decode_telemetry,
    parse_topic,
)

__all__ = ["DEVICE_TOPICS", "MqttGateway", "MqttSettings"]

log = logging.getLogger(__name__)

PROTOCOL: Final = "mqtt"
DEFAULT_PORTS: Final = {"mqtt": 1883, "mqtts": 8883}
#: The topic filters a gateway reads, each with the suffix of its share group.
DEVICE_TOPICS: Final = (
    "devices/+/telemetry",
    "devices/+/reported",
    "devices/+/commands/+/response",
    "devices/+/status",
    "application/+/device/+/event/up",
)
_SHARE_SUFFIXES: Final = ("telemetry", "reported", "responses", "status", "lorawan")
_EVENT_TYPES: Final = frozenset(("desired", "command", "presence"))
_PUBLISH_TRIES: Final = 3  # publish failures on one live connection before a message is dropped
_STAT_KEYS: Final = (
    "received",
    "decoded",
    "ingested",
    "batches",
    "rejected",
    "published",
    "connects",
    "reconnects",
    "commands_delivered",
    "responses",
    "offline",
    "errors",
)


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where and how a gateway connects; build it with :meth:`from_url`. Picklable."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    client_id: str | None = None
    persistent: bool = False
    shared: bool = True
    share_group: str = "twinfleet"
    qos: int = 1
    keepalive: int = 30
    batch_size: int = 500
    batch_delay_s: float = 0.02
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise ValueError("the MQTT host must not be empty")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"the MQTT port must be an integer, not {self.port!r}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"the MQTT port must lie between 1 and 65535, not {self.port}")
        files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        for name, value in files.items():
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a file path")
        if not self.tls and any(v is not None for v in files.values()):
            given = ", ".join(k for k, v in files.items() if v is not None)
            raise ValueError(f"{given} need TLS: use an mqtts:// URL")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file (the client certificate)")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.client_id is not None and not (
            isinstance(self.client_id, str) and 0 < len(self.client_id) <= 128
        ):
            raise ValueError("client_id must be text of 1 to 128 characters")
        if self.persistent and self.client_id is None:
            raise ValueError("a persistent session needs a client_id the broker knows it by")
        group = self.share_group
        if not isinstance(group, str) or not group or any(c in group for c in "/+#"):
            raise ValueError(
                f"share_group must be non-empty text without '/', '+' or '#', not {group!r}"
            )
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, not {self.qos!r}")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int):
            raise ValueError("keepalive must be a whole number of seconds")
        if not 1 <= self.keepalive <= 65535:
            raise ValueError(f"keepalive must lie between 1 and 65535 s, not {self.keepalive}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ValueError("batch_size must be an integer")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if not 0 <= self.batch_delay_s <= 60:
            raise ValueError(f"batch_delay_s must lie between 0 and 60, not {self.batch_delay_s}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(
                "reconnect delays need 0 < reconnect_min_s <= reconnect_max_s, not "
                f"{self.reconnect_min_s} and {self.reconnect_max_s}"
            )
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be positive, not {self.timeout_s}")

    @classmethod
    def from_url(cls, url: str, **options: Any) -> MqttSettings:
        """Settings from ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://...`` and options.

        Options are the other fields by name (``ca_file``, ``cert_file``, ``key_file``,
        ``username``, ``password``, ``client_id``, ``persistent``, ``share_group``, ``shared``,
        ``qos``,
        ``keepalive``, ``batch_size``, ``batch_delay_s``, ``reconnect_min_s``,
        ``reconnect_max_s``, ``timeout_s``).
        """
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise ValueError(f"an MQTT URL starts with mqtt:// or mqtts://, not {url!r}")
        try:
            port = parts.port
        except ValueError as err:
            raise ValueError(f"the MQTT URL {url!r} has a bad port: {err}") from None
        if not parts.hostname:
            raise ValueError(f"the MQTT URL {url!r} names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(
                f"the MQTT URL {url!r} has a path or query: give options as keywords instead"
            )
        unknown = set(options) - {f for f in cls.__dataclass_fields__ if f not in ("host", "port")}
        if unknown or "tls" in options:
            bad = sorted(unknown | ({"tls"} & set(options)))
            raise ValueError(f"unknown MQTT option(s) {', '.join(bad)}")
        fields: dict[str, Any] = {
            "host": parts.hostname,
            "port": port or DEFAULT_PORTS[scheme],
            "tls": scheme == "mqtts",
        }
        if parts.username is not None:
            if "username" in options or "password" in options:
                raise ValueError("give the MQTT user either in the URL or as options, not both")
            fields["username"] = urllib.parse.unquote(parts.username)
            if parts.password is not None:
                fields["password"] = urllib.parse.unquote(parts.password)
        return cls(**fields, **options)

    @property
    def url(self) -> str:
        """The broker's URL (without credentials)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"

    def subscriptions(self) -> list[tuple[str, int]]:
        """The topic filters with their QoS; when ``shared``, each in a share group of its own
        (``$share/{group}-telemetry/devices/+/telemetry``, ...).

        One group per filter: rumqttd (the embedded broker) delivers only a part of the
        messages to a group whose members subscribe several filters (measured: 1,772 of
        4,172); Mosquitto and EMQX spread each group's messages alike either way.
        """
        if not self.shared:
            return [(topic, self.qos) for topic in DEVICE_TOPICS]
        return [
            (f"$share/{self.share_group}-{suffix}/{topic}", self.qos)
            for suffix, topic in zip(_SHARE_SUFFIXES, DEVICE_TOPICS, strict=True)
        ]

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for ``mqtts`` (server verified against ``ca_file`` or the system's
        CAs; a client certificate for mutual TLS); ``None`` without TLS."""
        if not self.tls:
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca_file)
        if self.cert_file is not None:
            context.load_cert_chain(self.cert_file, self.key_file)
        return context


class _Offline(NamedTuple):
    device_id: str


class _Response(NamedTuple):
    device_id: str
    command_id: str
    response: Mapping[str, Any]


class _Reject(NamedTuple):
    device_id: str
    code: str
    message: str


_Item = DeviceMessage | _Offline | _Response | _Reject


class MqttGateway:
    """Bridges one MQTT broker connection and a fleet (see the module's docstring).

    ``await gateway.run()`` until cancelled. ``stats`` counts what happened: ``received``,
    ``decoded``, ``ingested``, ``batches`` (handed to the fleet), ``rejected`` (and
    ``rejected:<code>`` per error code), ``published``,
    ``connects``, ``reconnects``, ``commands_delivered``, ``responses``, ``offline``,
    ``errors``.
    """

    def __init__(self, fleet: EdgePlatform, settings: MqttSettings) -> None:
        self.fleet = fleet
        self.settings = settings
        self.client_id = settings.client_id or f"twinfleet-gw-{uuid.uuid4().hex[:12]}"
        self.stats: collections.Counter[str] = collections.Counter(dict.fromkeys(_STAT_KEYS, 0))
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._events_ready = asyncio.Event()
        self._pending: list[_Item] = []
        self._pending_messages = 0
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._drained = asyncio.Event()
        self._event_cursor: int | None = None
        self._max_pending = max(10_000, 20 * settings.batch_size)
        self._closing = False
        # (connection, message id) of QoS 1 messages read, to acknowledge once applied
        self._acks: list[tuple[aiomqtt.Client, int]] = []

    # -- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve until cancelled. A TLS misconfiguration (missing or bad files) raises at once;
        connection failures are retried for ever."""
        context = self.settings.ssl_context()
        self._closing = False
        reader = asyncio.create_task(self._connection_loop(context), name="mqtt-connection")
        events = asyncio.create_task(self._events_loop(), name="mqtt-events")
        processor = asyncio.create_task(self._process_loop(), name="mqtt-ingest")
        tasks = (reader, events, processor)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raise what ended a loop (they only end by an error)
        finally:
            for task in (reader, events):
                task.cancel()
            # Messages read so far are acknowledged to the broker: hand them over before
            # stopping (bounded, in case the fleet is gone).
            self._closing = True
            self._wake.set()
            self._full.set()  # cuts a batch delay short
            await asyncio.wait({processor}, timeout=self.settings.timeout_s)
            processor.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self._client = None
            self._connected.clear()

    async def end_session(self) -> None:
        """After ``run`` ended: have the broker forget a persistent session (a clean stop).

        An offline session stays in its shared subscription and the broker keeps giving it
        messages to queue; a gateway stopped on purpose must not take a share of the traffic
        with it. Messages read before the stop were handed to the fleet by then.
        """
        if not self.settings.persistent:
            return
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            client = aiomqtt.Client(
                self.settings.host,
                self.settings.port,
                username=self.settings.username,
                password=self.settings.password,
                identifier=self.client_id,
                clean_session=True,
                timeout=self.settings.timeout_s,
                tls_context=self.settings.ssl_context(),
                logger=log,
            )
            async with client:
                pass

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until the gateway is subscribed and follows the fleet's events."""
        await asyncio.wait_for(
            asyncio.gather(self._subscribed.wait(), self._events_ready.wait()), timeout
        )

    @property
    def queued(self) -> int:
        """Messages read from the broker, not yet handed to the fleet."""
        return self._pending_messages

    @property
    def connected(self) -> bool:
        """Whether the gateway has a live, subscribed connection now."""
        return self._connected.is_set()

    # -- connection and reading ---------------------------------------------------------------

    def _new_client(self, context: ssl.SSLContext | None) -> aiomqtt.Client:
        s = self.settings
        client = aiomqtt.Client(
            s.host,
            s.port,
            username=s.username,
            password=s.password,
            identifier=self.client_id,
            clean_session=not s.persistent,
            keepalive=s.keepalive,
            timeout=s.timeout_s,
            tls_context=context,
            logger=log,
        )
        if s.persistent:
            # aiomqtt does not expose paho's manual acknowledgements: set them on paho itself.
            client._client.manual_ack_set(True)
        return client

    async def _connection_loop(self, context: ssl.SSLContext | None) -> None:
        attempt = 0
        while True:
            try:
                async with self._new_client(context) as client:
                    await self._subscribe(client)
                    attempt = 0
                    self._client = client
                    self.stats["connects"] += 1
                    if self.stats["connects"] > 1:
                        self.stats["reconnects"] += 1
                    self._connected.set()
                    self._subscribed.set()
                    log.info("MQTT gateway %s connected to %s", self.client_id, self.settings.url)
                    async for message in client.messages:
                        await self._receive(message)
            except aiomqtt.MqttError as err:
                log.warning("MQTT gateway %s: connection lost: %s", self.client_id, err)
            except Exception:  # whatever it was, a gateway keeps trying
                self.stats["errors"] += 1
                log.exception("MQTT gateway %s: connection failed", self.client_id)
            finally:
                self._client = None
                self._connected.clear()
            delay = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**attempt)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        topics = self.settings.subscriptions()
        granted = await client.subscribe(topics)
        codes = [code.value if isinstance(code, ReasonCode) else code for code in granted]
        refused = [topic for (topic, _), code in zip(topics, codes, strict=False) if code >= 0x80]
        if refused:
            raise aiomqtt.MqttError(f"the broker refused the subscriptions {refused}")

    async def _receive(self, message: aiomqtt.Message) -> None:
        """Decode one message and queue what it says; never raises for a bad message."""
        self.stats["received"] += 1
        if self.settings.persistent and message.qos > 0 and self._client is not None:
            self._acks.append((self._client, message.mid))
        topic = message.topic.value
        raw = message.payload
        body = raw if isinstance(raw, bytes) else str(raw or "").encode()
        device_id: str | None = None
        try:
            match = parse_topic(topic)
            if match is None:
                raise UnsupportedFormat(
                    f"topic {topic!r} is not one twinfleet reads", field="topic"
                )
            device_id = match.device_id
            now = time.time()
            if match.kind == "telemetry":
                self._queue(*decode_telemetry(body, device_id, protocol=PROTOCOL, received=now))
            elif match.kind == "reported":
                self._queue(decode_reported(body, device_id, protocol=PROTOCOL, received=now))
            elif match.kind == "lorawan_uplink":
                uplink = decode_lorawan_uplink(body, received=now)
                device_id = uplink.device_id
                self._queue(uplink)
            elif match.kind == "command_response":
                assert match.command_id is not None  # parse_topic guarantees it
                self._queue(_Response(device_id, match.command_id, decode_command_response(body)))
            elif decode_status(body):
                if not message.retain:  # a retained "online" is old news, not a sign of life
                    self._queue(
                        DeviceMessage(device_id, "reported", {}, protocol=PROTOCOL, received=now)
                    )
            else:
                self._queue(_Offline(device_id))
            self.stats["decoded"] += 1
        except TwinfleetError as err:
            self._queue(_Reject(device_id or topic, err.code, err.message))
        except Exception as err:  # a decoder bug must not stop the gateway
            log.exception("MQTT gateway: decoding a message on %s failed", topic)
            self._queue(_Reject(device_id or topic, "invalid_message", str(err)))
        if self._pending_messages >= self._max_pending:
            self._drained.clear()
            await self._drained.wait()  # the fleet is behind: stop reading for a while

    def _queue(self, *items: _Item) -> None:
        self._pending.extend(items)
        self._pending_messages += len(items)
        self._wake.set()
        if self._pending_messages >= self.settings.batch_size:
            self._full.set()

    # -- handing messages to the fleet --------------------------------------------------------

    async def _process_loop(self) -> None:
        delay = self.settings.batch_delay_s
        while True:
            await self._wake.wait()
            if delay > 0 and not self._full.is_set() and not self._closing:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._full.wait(), delay)
            items, self._pending = self._pending, []
            acks, self._acks = self._acks, []
            self._pending_messages = 0
            self._wake.clear()
            self._full.clear()
            self._drained.set()
            await self._handle(items)
            if acks:
                await self._acknowledge(acks)
            if self._closing and not self._pending:
                return

    async def _handle(self, items: list[_Item]) -> None:
        """Hand the items to the fleet in order: messages in batches, the rest one by one."""
        batch: list[DeviceMessage] = []
        size = self.settings.batch_size
        for item in items:
            if type(item) is DeviceMessage:
                batch.append(item)
                if len(batch) >= size:
                    await self._ingest(batch)
                    batch = []
                continue
            if batch:
                await self._ingest(batch)
                batch = []
            try:
                await self._control(item)
            except TwinfleetError as err:
                await self._reject(item.device_id, err.code, err.message)
            except Exception:
                self.stats["errors"] += 1
                log.exception("MQTT gateway: handling %r failed", item)
        if batch:
            await self._ingest(batch)

    async def _acknowledge(self, acks: list[tuple[aiomqtt.Client, int]]) -> None:
        """Acknowledge messages to the broker once their twins have applied them."""
        await self.fleet.settled()
        for client, mid in acks:
            if client is self._client:  # on a connection gone since, the broker resends
                client._client.ack(mid, 1)
        self.stats["acknowledged"] += len(acks)

    async def _control(self, item: _Item) -> None:
        if type(item) is _Reject:
            await self._reject(item.device_id, item.code, item.message)
        elif type(item) is _Offline:
            await self.fleet.device_offline(item.device_id, protocol=PROTOCOL)
            self.stats["offline"] += 1
        elif type(item) is _Response:
            await self.fleet.command_response(item.device_id, item.command_id, item.response)
            self.stats["responses"] += 1

    async def _ingest(self, batch: list[DeviceMessage]) -> None:
        try:
            result = await self.fleet.ingest(batch)
            self.stats["batches"] += 1
        except Exception:
            # The broker has these acknowledged already: they are lost, loudly.
            self.stats["errors"] += 1
            self.stats["dropped"] += len(batch)
            log.exception("MQTT gateway: the fleet refused a batch of %d messages", len(batch))
            return
        self.stats["ingested"] += result.accepted
        for rejection in result.rejected:
            await self._reject(rejection.device_id, rejection.code, rejection.message)

    async def _reject(self, device_id: str, code: str, message: str) -> None:
        self.stats["rejected"] += 1
        self.stats[f"rejected:{code}"] += 1
        log.debug("MQTT gateway: rejected a message of %s: %s (%s)", device_id, message, code)
        try:
            await self.fleet.reject(device_id, code, message, protocol=PROTOCOL)
        except Exception:
            self.stats["errors"] += 1
            log.exception("MQTT gateway: recording a rejection failed")

    # -- events: desired state and commands out -----------------------------------------------

    async def _events_loop(self) -> None:
        attempt = 0
        while True:
            try:
                if self._event_cursor is None:
                    self._event_cursor = await self.fleet.last_event_id()
                self._events_ready.set()
                stream = self.fleet.events(types=_EVENT_TYPES, after=self._event_cursor)
                try:
                    async for event in stream:
                        attempt = 0
                        await self._on_event(event)
                        self._event_cursor = event.id
                finally:
                    if isinstance(stream, AsyncGenerator):
                        await stream.aclose()
            except Exception:
                self.stats["errors"] += 1
                log.exception("MQTT gateway: following the fleet's events failed; retrying")
            delay = min(self.settings.reconnect_max_s, self.settings.reconnect_min_s * 2**attempt)
            attempt = min(attempt + 1, 30)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _on_event(self, event: Event) -> None:
        data = event.data
        try:
            if event.type == "desired":
                document = {k: data.get(k) for k in ("version", "desired", "delta")}
                await self._publish(f"devices/{event.twin_id}/desired", document, retain=True)
            elif event.type == "command":
                if (
                    data.get("status") == "queued"
                    and data.get("protocol") == PROTOCOL
                    and data.get("online")
                ):
                    await self._deliver(event.twin_id, ids=[data["id"]])
            elif (
                event.type == "presence"
                and data.get("online")
                and data.get("protocol") == PROTOCOL
                and data.get("pending_commands", 0) > 0
            ):
                await self._deliver(event.twin_id, ids=None)
        except TwinfleetError as err:
            log.warning("MQTT gateway: event %s of %s: %s", event.type, event.twin_id, err)
        except Exception:
            # One event must not stall the rest; a device's next presence retries its commands.
            self.stats["errors"] += 1
            log.exception("MQTT gateway: event %s of %s failed", event.type, event.twin_id)

    async def _deliver(self, device_id: str, *, ids: Collection[str] | None) -> None:
        """Claim queued commands (once across all gateways) and publish them."""
        for command in await self.fleet.claim_commands(device_id, protocol=PROTOCOL, ids=ids):
            body = {k: command.get(k) for k in ("name", "params", "expires_at")}
            await self._publish(f"devices/{device_id}/commands/{command['id']}", body)
            self.stats["commands_delivered"] += 1

    async def _publish(
        self, topic: str, document: Mapping[str, Any], *, retain: bool = False
    ) -> None:
        """Publish once a connection is there; a publish cut off by a drop is sent again."""
        payload = orjson.dumps(document)
        failures = 0
        while True:
            await self._connected.wait()
            client = self._client
            if client is None:
                await asyncio.sleep(0.05)
                continue
            try:
                await client.publish(topic, payload, qos=self.settings.qos, retain=retain)
            except aiomqtt.MqttError as err:
                log.info("MQTT gateway: publishing on %s failed (%s); retrying", topic, err)
                await asyncio.sleep(0.1)  # time for the reader to notice a dropped connection
                if self._client is client:
                    failures += 1  # still connected: the broker does not want this message
                    if failures >= _PUBLISH_TRIES:
                        self.stats["errors"] += 1
                        log.error("MQTT gateway: gave up publishing on %s: %s", topic, err)
                        return
                continue
            self.stats["published"] += 1
            return
