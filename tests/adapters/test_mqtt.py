"""The MQTT gateway against the shared Mosquitto (127.0.0.1:1883) and private ones.

The shared broker also carries other runs' traffic: every test uses device ids and a share
group of its own, looks only at its own devices, and clears the retained messages it makes.
Tests that restart a broker or need TLS start a private Mosquitto on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import pickle
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from helpers import PrivateMosquitto, eventually, free_port, next_message, port_open

from twinfleet.adapters.mqtt import DEVICE_TOPICS, MqttGateway, MqttSettings
from twinfleet.runtime.edge import InProcessPlatform, RayPlatform
from twinfleet.runtime.messages import DeviceMessage, IngestResult
from twinfleet.twins import MAX_PAYLOAD_BYTES

SHARED_HOST = "127.0.0.1"
SHARED_PORT = 1883
SHARED_URL = f"mqtt://{SHARED_HOST}:{SHARED_PORT}"
# With TLS 1.3 a refused client certificate shows only after the handshake, and aiomqtt then
# waits for a CONNACK that never comes: a refused client fails by this timeout.
REFUSAL_S = 1.5


# -- helpers ----------------------------------------------------------------------------------


async def stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


class RecordingPlatform:
    """A fleet that remembers which device messages went through it (for one gateway)."""

    def __init__(self, inner: InProcessPlatform) -> None:
        self.inner = inner
        self.seen: list[DeviceMessage] = []

    async def ingest(self, messages: Sequence[DeviceMessage]) -> IngestResult:
        self.seen.extend(messages)
        return await self.inner.ingest(messages)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def settings_for(url: str = SHARED_URL, **options: Any) -> MqttSettings:
    """Gateway settings with a share group of this test's own and short delays."""
    options.setdefault("share_group", f"tftest-{uuid.uuid4().hex[:8]}")
    options.setdefault("batch_delay_s", 0.005)
    options.setdefault("reconnect_min_s", 0.05)
    options.setdefault("reconnect_max_s", 0.5)
    return MqttSettings.from_url(url, **options)


def device(port: int = SHARED_PORT, **options: Any) -> aiomqtt.Client:
    return aiomqtt.Client(SHARED_HOST, port, **options)


async def publish_json(client: aiomqtt.Client, topic: str, body: Any, **options: Any) -> None:
    await client.publish(topic, orjson.dumps(body), qos=1, **options)


async def twin(fleet: InProcessPlatform, device_id: str) -> dict[str, Any]:
    return await fleet.host.get(device_id)


async def rejected_events(fleet: InProcessPlatform, twin_id: str) -> list[Any]:
    await fleet.host.send_events()
    return await fleet.hub.poll(0, types={"rejected"}, twin_id=twin_id)


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def shared_broker() -> str:
    """The shared Mosquitto's URL (scripts/test.sh starts it when it is down)."""
    if not port_open(SHARED_HOST, SHARED_PORT):
        pytest.fail(f"Mosquitto is not running on {SHARED_HOST}:{SHARED_PORT}")
    return SHARED_URL


@pytest.fixture
def prefix() -> str:
    """A device-id prefix of this test's own."""
    return f"tf{uuid.uuid4().hex[:8]}-"


@pytest.fixture
async def fleet() -> AsyncIterator[InProcessPlatform]:
    fleet = InProcessPlatform.create()
    await fleet.host.start()
    yield fleet
    await fleet.host.stop()


GatewayStarter = Callable[..., Awaitable[MqttGateway]]


@pytest.fixture
async def start_gateway() -> AsyncIterator[GatewayStarter]:
    """Starts gateways as tasks (ready when returned); cancels them afterwards."""
    tasks: list[asyncio.Task[None]] = []

    async def start(fleet: Any, settings: MqttSettings, *, ready: bool = True) -> MqttGateway:
        gateway = MqttGateway(fleet, settings)
        task = asyncio.create_task(gateway.run())
        tasks.append(task)
        if ready:
            waiter = asyncio.create_task(gateway.wait_ready())
            await asyncio.wait({waiter, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
            assert waiter.done(), "the gateway did not get ready"
        return gateway

    yield start
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def retained() -> AsyncIterator[list[str]]:
    """Topics whose retained message the test leaves behind: cleared afterwards."""
    topics: list[str] = []
    yield topics
    if topics and port_open(SHARED_HOST, SHARED_PORT):
        async with device() as client:
            for topic in topics:
                await client.publish(topic, b"", qos=1, retain=True)


# -- settings ---------------------------------------------------------------------------------


def test_settings_from_url() -> None:
    plain = MqttSettings.from_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls, plain.qos) == ("broker.local", 1883, False, 1)
    assert plain.shared
    assert plain.share_group == "twinfleet"
    secure = MqttSettings.from_url(
        "mqtts://user:p%40ss@10.0.0.5", ca_file="/ca.pem", cert_file="/c.pem", key_file="/k.pem"
    )
    assert (secure.port, secure.tls, secure.username, secure.password) == (
        8883,
        True,
        "user",
        "p@ss",
    )
    assert "p@ss" not in repr(secure)
    assert secure.url == "mqtts://10.0.0.5:8883"
    tuned = MqttSettings.from_url(
        "mqtt://h:1884", share_group="g1", qos=0, batch_size=10, batch_delay_s=0, client_id="gw-1"
    )
    assert (tuned.port, tuned.share_group, tuned.qos, tuned.batch_size) == (1884, "g1", 0, 10)
    assert pickle.loads(pickle.dumps(secure)) == secure  # a Ray actor can be handed it


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("http://h", {}, "mqtt:// or mqtts://"),
        ("mqtt://", {}, "names no host"),
        ("mqtt://h:99999", {}, "bad port"),
        ("mqtt://h/devices", {}, "path or query"),
        ("mqtt://h", {"ca_file": "/ca.pem"}, "need TLS"),
        ("mqtts://h", {"key_file": "/k.pem"}, "key_file needs cert_file"),
        ("mqtt://h", {"password": "x"}, "password needs a username"),
        ("mqtt://u@h", {"username": "v"}, "either in the URL"),
        ("mqtt://h", {"share_group": "a/b"}, "share_group"),
        ("mqtt://h", {"share_group": ""}, "share_group"),
        ("mqtt://h", {"qos": 3}, "qos"),
        ("mqtt://h", {"keepalive": 0}, "keepalive"),
        ("mqtt://h", {"batch_size": 0}, "batch_size"),
        ("mqtt://h", {"batch_delay_s": -1}, "batch_delay_s"),
        ("mqtt://h", {"reconnect_min_s": 5, "reconnect_max_s": 1}, "reconnect"),
        ("mqtt://h", {"tls": True}, "unknown"),
        ("mqtt://h", {"colour": "red"}, "unknown"),
    ],
)
def test_settings_refuse_bad_input(url: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MqttSettings.from_url(url, **options)


def test_subscriptions_are_shared_unless_told_otherwise() -> None:
    shared = MqttSettings.from_url("mqtt://h", share_group="grp")
    assert shared.subscriptions() == [
        ("$share/grp-telemetry/devices/+/telemetry", 1),
        ("$share/grp-reported/devices/+/reported", 1),
        ("$share/grp-responses/devices/+/commands/+/response", 1),
        ("$share/grp-status/devices/+/status", 1),
        ("$share/grp-lorawan/application/+/device/+/event/up", 1),
    ]
    plain = MqttSettings.from_url("mqtt://h", shared=False, qos=0)
    assert plain.subscriptions() == [(t, 0) for t in DEVICE_TOPICS]


# -- device messages in -----------------------------------------------------------------------


@pytest.mark.services
async def test_device_messages_reach_twins(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    await start_gateway(fleet, settings_for(shared_broker))
    sensor, senml, meter = f"{prefix}sensor", f"{prefix}senml", f"{prefix}meter"
    dev_eui = f"{prefix}0004a30b001c0530"
    async with device() as client:
        await publish_json(client, f"devices/{sensor}/telemetry", {"temperature": 21.5})
        await publish_json(client, f"devices/{sensor}/reported", {"firmware": "1.2.0"})
        await publish_json(
            client,
            f"devices/{senml}/telemetry",
            [{"bn": "urn:dev:x:", "n": "humidity", "v": 40.5}, {"n": "door", "vb": True}],
        )
        uplink = {
            "deviceInfo": {"devEui": dev_eui, "applicationId": "app-1"},
            "time": "2024-05-01T12:00:00.123456789Z",
            "object": {"energy_kwh": 1042.5},
        }
        await publish_json(client, f"application/app-1/device/{dev_eui}/event/up", uplink)
        await publish_json(client, f"devices/{meter}/status", {"online": True})

    doc = await eventually(lambda: twin(fleet, sensor), what="sensor twin")
    await eventually(lambda: _reported(fleet, sensor, "firmware"), what="reported firmware")
    doc = await twin(fleet, sensor)
    assert doc["reported"]["temperature"] == 21.5
    assert doc["reported"]["firmware"] == "1.2.0"
    assert doc["connectivity"]["online"] is True
    assert doc["connectivity"]["protocol"] == "mqtt"
    doc = await eventually(lambda: twin(fleet, senml), what="SenML twin")
    assert doc["reported"] == {"humidity": 40.5, "door": True}
    doc = await eventually(lambda: twin(fleet, dev_eui), what="LoRaWAN twin")
    assert doc["reported"]["energy_kwh"] == 1042.5
    assert doc["connectivity"]["protocol"] == "lorawan"
    doc = await eventually(lambda: twin(fleet, meter), what="twin of an online status")
    assert doc["connectivity"]["online"] is True


async def _reported(fleet: InProcessPlatform, device_id: str, key: str) -> bool:
    return key in (await twin(fleet, device_id))["reported"]


@pytest.mark.services
async def test_bad_messages_are_rejected_alone(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(fleet, settings_for(shared_broker))
    good = f"{prefix}good"
    bad = f"{prefix}bad"
    invalid_topic = f"devices/{prefix}no good!/telemetry"
    async with device() as client:
        await publish_json(client, f"devices/{good}/telemetry", {"seq": 1})
        await client.publish(f"devices/{bad}/telemetry", b"{not json", qos=1)
        await publish_json(client, f"devices/{good}/telemetry", {"seq": 2, "ts": time.time()})
        big = b'{"blob": "' + b"x" * MAX_PAYLOAD_BYTES + b'"}'
        await client.publish(f"devices/{bad}/reported", big, qos=1)
        await publish_json(client, f"devices/{good}/reported", {"mode": "eco"})
        await publish_json(client, invalid_topic, {"seq": 3})
        await publish_json(client, f"devices/{bad}/telemetry", {"": 2})
        await publish_json(client, f"devices/{bad}/commands/c1/response", {"status": "maybe"})
        await publish_json(client, f"devices/{good}/telemetry", {"seq": 4})

    await eventually(
        lambda: _has(fleet, good, {"seq": 4, "mode": "eco"}), what="good messages applied"
    )
    codes = await eventually(
        lambda: _codes(fleet, bad, 4), what="rejected events of the bad device"
    )
    assert sorted(codes) == [
        "invalid_patch",
        "malformed_payload",
        "malformed_payload",
        "payload_too_large",
    ]
    invalid = await eventually(lambda: rejected_events(fleet, invalid_topic))
    assert invalid[0].data["code"] == "invalid_device_id"
    assert invalid[0].data["protocol"] == "mqtt"
    # The shared broker may carry other runs' bad messages too: at least ours were counted
    # (the twin's own refusal, the empty key, is the host's to count).
    assert gateway.stats["rejected"] >= 4
    assert gateway.stats["rejected:payload_too_large"] >= 1
    assert gateway.stats["rejected:invalid_device_id"] >= 1
    assert gateway.stats["ingested"] >= 4


async def _has(fleet: InProcessPlatform, device_id: str, expected: dict[str, Any]) -> bool:
    reported = (await twin(fleet, device_id))["reported"]
    return all(reported.get(k) == v for k, v in expected.items())


async def _codes(fleet: InProcessPlatform, device_id: str, count: int) -> list[str] | None:
    events = await rejected_events(fleet, device_id)
    return [e.data["code"] for e in events] if len(events) >= count else None


# -- desired state and commands out -----------------------------------------------------------


@pytest.mark.services
async def test_desired_is_published_retained(
    shared_broker: str,
    prefix: str,
    fleet: InProcessPlatform,
    start_gateway: GatewayStarter,
    retained: list[str],
) -> None:
    await start_gateway(fleet, settings_for(shared_broker))
    pump = f"{prefix}pump"
    topic = f"devices/{pump}/desired"
    retained.append(topic)
    async with device() as client:
        await client.subscribe(topic, qos=1)
        await fleet.host.patch_desired(pump, {"speed": 1200, "mode": "auto"})
        message = await next_message(client)
    body = orjson.loads(message.payload)  # type: ignore[arg-type]
    assert body["desired"] == {"speed": 1200, "mode": "auto"}
    assert body["delta"] == {"speed": 1200, "mode": "auto"}
    assert body["version"] == (await twin(fleet, pump))["version"]
    async with device() as late:
        await late.subscribe(topic, qos=1)
        again = await next_message(late)
    assert again.retain
    assert orjson.loads(again.payload) == body  # type: ignore[arg-type]


async def answer_commands(
    client: aiomqtt.Client, device_id: str, received: list[dict[str, Any]]
) -> None:
    """A device that answers every command with ``{"status": "ok", "result": {"pong": ...}}``."""
    async for message in client.messages:
        command_id = message.topic.value.split("/")[3]
        command = orjson.loads(message.payload)  # type: ignore[arg-type]
        received.append({"id": command_id, **command})
        answer = {"status": "ok", "result": {"pong": command["params"].get("n", 0)}}
        await publish_json(client, f"devices/{device_id}/commands/{command_id}/response", answer)


@pytest.mark.services
async def test_command_round_trip(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(fleet, settings_for(shared_broker))
    plc = f"{prefix}plc"
    received: list[dict[str, Any]] = []
    async with device() as client:
        await client.subscribe(f"devices/{plc}/commands/+", qos=1)
        responder = asyncio.create_task(answer_commands(client, plc, received))
        await publish_json(client, f"devices/{plc}/telemetry", {"rpm": 900})
        await eventually(lambda: _online(fleet, plc), what="device online")
        record = await fleet.host.send_command(
            plc, {"name": "ping", "params": {"n": 7}, "timeout_s": 5}
        )
        await stop(responder)
    assert record["status"] == "succeeded"
    assert record["result"] == {"pong": 7}
    assert received[0]["id"] == record["id"]
    assert received[0]["name"] == "ping"
    assert received[0]["params"] == {"n": 7}
    assert received[0]["expires_at"] == pytest.approx(record["expires_at"])
    assert gateway.stats["commands_delivered"] == 1
    assert gateway.stats["responses"] >= 1


async def _online(fleet: InProcessPlatform, device_id: str) -> bool:
    return bool((await twin(fleet, device_id))["connectivity"]["online"])


@pytest.mark.services
async def test_command_waits_for_an_offline_device(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    await start_gateway(fleet, settings_for(shared_broker))
    meter = f"{prefix}meter"
    async with device() as client:
        await publish_json(client, f"devices/{meter}/telemetry", {"kwh": 1.0})
        await eventually(lambda: _online(fleet, meter))
        await client.publish(f"devices/{meter}/status", b"offline", qos=1)
        await eventually(lambda: _offline(fleet, meter), what="device offline")

    record = await fleet.host.send_command(meter, {"name": "reboot", "timeout_s": 0.3})
    assert record["status"] == "queued"  # nobody to deliver it to

    received: list[dict[str, Any]] = []
    async with device() as client:
        await client.subscribe(f"devices/{meter}/commands/+", qos=1)
        responder = asyncio.create_task(answer_commands(client, meter, received))
        await publish_json(client, f"devices/{meter}/telemetry", {"kwh": 1.5})  # back again
        done = await eventually(
            lambda: _command_final(fleet, meter, record["id"]), what="command answered"
        )
        await stop(responder)
    assert done["status"] == "succeeded"
    assert [r["id"] for r in received] == [record["id"]]


async def _offline(fleet: InProcessPlatform, device_id: str) -> bool:
    return not (await twin(fleet, device_id))["connectivity"]["online"]


async def _command_final(fleet: InProcessPlatform, device_id: str, command_id: str) -> Any:
    record = await fleet.host.get_command(device_id, command_id)
    return record if record["status"] in ("succeeded", "failed") else None


@pytest.mark.services
async def test_unanswered_command_is_sent_after_timeout(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    await start_gateway(fleet, settings_for(shared_broker))
    tracker = f"{prefix}tracker"
    async with device() as client:
        await client.subscribe(f"devices/{tracker}/commands/+", qos=1)
        await publish_json(client, f"devices/{tracker}/telemetry", {"lat": 52.5})
        await eventually(lambda: _online(fleet, tracker))
        record = await fleet.host.send_command(tracker, {"name": "locate", "timeout_s": 0.5})
        delivered = await next_message(client)  # delivered, but never answered
    assert record["status"] == "sent"
    assert delivered.topic.value == f"devices/{tracker}/commands/{record['id']}"


def connect_with_will(port: int, client_id: str, will_topic: str, will: bytes) -> socket.socket:
    """A bare MQTT 3.1.1 connection with a last will, to be dropped without DISCONNECT."""

    def field(data: bytes) -> bytes:
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | 0x04 | 0x08  # clean session, will, will QoS 1
    body = field(b"MQTT") + bytes([4, flags]) + (60).to_bytes(2, "big")
    body += field(client_id.encode()) + field(will_topic.encode()) + field(will)
    assert len(body) < 128
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(bytes([0x10, len(body)]) + body)
    sock.settimeout(5)
    connack = sock.recv(4)
    assert connack[:1] == b"\x20", connack
    assert connack[3:4] == b"\x00", connack  # connection accepted
    return sock


@pytest.mark.services
async def test_last_will_marks_the_twin_offline(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(fleet, settings_for(shared_broker))
    monitor = f"{prefix}monitor"
    sock = await asyncio.to_thread(
        connect_with_will, SHARED_PORT, monitor, f"devices/{monitor}/status", b"offline"
    )
    async with device() as client:
        await publish_json(client, f"devices/{monitor}/telemetry", {"bpm": 72})
        await eventually(lambda: _online(fleet, monitor))
        sock.close()  # the device vanishes: the broker publishes its will
        await eventually(lambda: _offline(fleet, monitor), what="offline by last will")
        assert gateway.stats["offline"] >= 1
        await client.publish(f"devices/{monitor}/status", b"online", qos=1)
        await eventually(lambda: _online(fleet, monitor), what="online by status")


@pytest.mark.services
async def test_two_gateways_share_the_traffic(
    shared_broker: str, prefix: str, fleet: InProcessPlatform, start_gateway: GatewayStarter
) -> None:
    settings = settings_for(shared_broker)
    one, two = RecordingPlatform(fleet), RecordingPlatform(fleet)
    await start_gateway(one, settings)
    await start_gateway(two, settings)
    devices = [f"{prefix}s{i}" for i in range(10)]
    sent = {(d, seq) for d in devices for seq in range(20)}
    start = time.time()
    async with device() as client:
        for seq in range(20):
            for dev in devices:
                # Measurement times keep the newest reading whichever gateway is faster.
                body = {"seq": seq, "ts": start + seq / 1000}
                await publish_json(client, f"devices/{dev}/telemetry", body)

    def ours(recording: RecordingPlatform) -> list[tuple[str, int]]:
        return [(m.device_id, m.payload["seq"]) for m in recording.seen if m.device_id in devices]

    await eventually(lambda: len(ours(one)) + len(ours(two)) >= len(sent), what="all delivered")
    await asyncio.sleep(0.2)  # a duplicate would arrive right behind
    got = ours(one) + ours(two)
    assert sorted(got) == sorted(sent)  # every message once
    assert ours(one)
    assert ours(two)
    for dev in devices:
        assert (await twin(fleet, dev))["reported"]["seq"] == 19


# -- private brokers: TLS, restarts -----------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path.with_suffix(".pem")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    """Certificates made for this test (no key is ever committed)."""
    folder = tmp_path / "pki"
    folder.mkdir()
    return make_pki(folder)


def make_pki(folder: Path) -> Pki:
    ca_key = _key()
    ca = _cert("twinfleet test CA", ca_key, None, ca=True)
    other_ca_key = _key()
    other_ca = _cert("someone else's CA", other_ca_key, None, ca=True)
    server_key, client_key, stranger_key = _key(), _key(), _key()
    _write(folder / "ca", ca, ca_key)
    _write(folder / "server", _cert("127.0.0.1", server_key, (ca, ca_key), server=True), server_key)
    _write(folder / "client", _cert("gateway", client_key, (ca, ca_key)), client_key)
    _write(
        folder / "stranger", _cert("stranger", stranger_key, (other_ca, other_ca_key)), stranger_key
    )
    return Pki(
        ca=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
        stranger_cert=folder / "stranger.pem",
        stranger_key=folder / "stranger.key",
    )


@pytest.mark.slow
async def test_tls_and_mutual_tls(
    pki: Pki,
    private_mosquitto: Callable[[str], PrivateMosquitto],
    prefix: str,
    fleet: InProcessPlatform,
    start_gateway: GatewayStarter,
) -> None:
    tls_port, mtls_port = free_port(), free_port()
    tls = f"cafile {pki.ca}\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\n"
    private_mosquitto(
        f"listener {tls_port} 127.0.0.1\n{tls}"
        f"listener {mtls_port} 127.0.0.1\n{tls}require_certificate true\n"
        "allow_anonymous true\n"
    )

    # Server verification: a client trusting our CA gets in; one trusting only the system's
    # CAs is refused.
    trusted = ssl.create_default_context(cafile=str(pki.ca))
    async with aiomqtt.Client("127.0.0.1", tls_port, tls_context=trusted) as client:
        await client.publish("probe", b"1", qos=1)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", tls_port, tls_context=ssl.create_default_context()):
            pass

    # Mutual TLS: no certificate, or one from another CA, is refused.
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mtls_port, tls_context=trusted, timeout=REFUSAL_S):
            pass
    stranger = ssl.create_default_context(cafile=str(pki.ca))
    stranger.load_cert_chain(pki.stranger_cert, pki.stranger_key)
    with pytest.raises(aiomqtt.MqttError):
        async with aiomqtt.Client("127.0.0.1", mtls_port, tls_context=stranger, timeout=REFUSAL_S):
            pass

    # The gateway over mutual TLS ingests what a (mutual TLS) device sends.
    settings = settings_for(
        f"mqtts://127.0.0.1:{mtls_port}",
        ca_file=str(pki.ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
    )
    await start_gateway(fleet, settings)
    own = ssl.create_default_context(cafile=str(pki.ca))
    own.load_cert_chain(pki.client_cert, pki.client_key)
    sensor = f"{prefix}secure"
    async with aiomqtt.Client("127.0.0.1", mtls_port, tls_context=own) as client:
        await publish_json(client, f"devices/{sensor}/telemetry", {"temperature": 19.0})
    doc = await eventually(lambda: twin(fleet, sensor), what="telemetry over mTLS")
    assert doc["reported"]["temperature"] == 19.0


async def test_missing_certificate_file_fails_at_once(
    tmp_path: Path, fleet: InProcessPlatform
) -> None:
    settings = MqttSettings.from_url("mqtts://127.0.0.1:1", ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(FileNotFoundError):  # a misconfiguration is not retried for ever
        await MqttGateway(fleet, settings).run()


@pytest.mark.slow
async def test_gateway_resumes_after_broker_restart(
    private_mosquitto: Callable[[str], PrivateMosquitto],
    prefix: str,
    fleet: InProcessPlatform,
    start_gateway: GatewayStarter,
) -> None:
    port = free_port()
    broker = private_mosquitto(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    gateway = await start_gateway(fleet, settings_for(f"mqtt://127.0.0.1:{port}"))
    sensor = f"{prefix}restart"
    async with device(port) as client:
        await publish_json(client, f"devices/{sensor}/telemetry", {"seq": 1})
    await eventually(lambda: _has(fleet, sensor, {"seq": 1}))

    broker.stop()
    await eventually(lambda: not gateway.connected, what="gateway notices the broker is gone")
    broker.start()
    await eventually(lambda: gateway.stats["reconnects"] >= 1, what="gateway reconnected")

    async with device(port) as client:
        for seq in range(2, 12):
            await publish_json(client, f"devices/{sensor}/telemetry", {"seq": seq})
    await eventually(lambda: _has(fleet, sensor, {"seq": 11}), what="messages after the restart")
    assert gateway.stats["connects"] >= 2


# -- the real runtime -------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.services
async def test_gateway_with_the_ray_runtime(
    ray_session: None,
    sqlite_url: str,
    shared_broker: str,
    prefix: str,
    start_gateway: GatewayStarter,
    retained: list[str],
) -> None:
    from twinfleet.runtime.runtime import Runtime, RuntimeSettings

    runtime = await asyncio.to_thread(Runtime, store=sqlite_url, settings=RuntimeSettings(hosts=1))
    try:
        fleet = RayPlatform(runtime)
        await start_gateway(fleet, settings_for(shared_broker))
        pump = f"{prefix}ray-pump"
        handle = runtime.twin(pump)
        retained.append(f"devices/{pump}/desired")
        received: list[dict[str, Any]] = []
        async with device() as client:
            await client.subscribe(f"devices/{pump}/commands/+", qos=1)
            await client.subscribe(f"devices/{pump}/desired", qos=1)
            await publish_json(client, f"devices/{pump}/telemetry", {"flow": 3.5})
            doc = await eventually(lambda: asyncio.to_thread(handle.get), what="twin on Ray")
            assert doc["reported"]["flow"] == 3.5
            await asyncio.to_thread(handle.patch_desired, {"flow": 4.0})
            desired = await next_message(client)
            assert desired.topic.value == f"devices/{pump}/desired"
            assert orjson.loads(desired.payload)["desired"] == {"flow": 4.0}  # type: ignore[arg-type]
            responder = asyncio.create_task(answer_commands(client, pump, received))
            record = await asyncio.to_thread(
                runtime.send_command, pump, "ping", {"n": 3}, timeout_s=10
            )
            await stop(responder)
        assert record["status"] == "succeeded"
        assert record["result"] == {"pong": 3}
    finally:
        await asyncio.to_thread(runtime.close)
