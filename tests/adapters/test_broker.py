"""The embedded brokers (Mosquitto when installed, rumqttd through iotcore), alone and with the
MQTT gateway: the contract devices and gateways rely on, on each."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shutil
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import orjson
import pytest
from helpers import eventually, next_message

from twinfleet.adapters.broker import EmbeddedBroker
from twinfleet.adapters.mqtt import MqttGateway
from twinfleet.runtime.edge import InProcessPlatform
from twinfleet.twins import MAX_PAYLOAD_BYTES

KINDS = [
    "rumqttd",
    pytest.param(
        "mosquitto",
        marks=pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs mosquitto"),
    ),
]


@pytest.fixture(params=KINDS)
async def broker(request: pytest.FixtureRequest) -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(kind=request.param) as broker:
        yield broker


def test_auto_is_mosquitto_when_installed() -> None:
    expected = "mosquitto" if shutil.which("mosquitto") else "rumqttd"
    assert EmbeddedBroker().kind == expected
    with pytest.raises(ValueError, match="one of auto, mosquitto, rumqttd"):
        EmbeddedBroker(kind="amqtt")


def test_settings_before_start() -> None:
    broker = EmbeddedBroker(port=0)
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.url
    with pytest.raises(ValueError, match="port"):
        EmbeddedBroker(port=70000)


async def test_broker_serves_aiomqtt_clients(broker: EmbeddedBroker) -> None:
    assert broker.url == f"mqtt://127.0.0.1:{broker.port}"
    assert broker.port > 0
    async with (
        aiomqtt.Client("127.0.0.1", broker.port) as sub,
        aiomqtt.Client("127.0.0.1", broker.port) as pub,
    ):
        await sub.subscribe("devices/+/telemetry", qos=1)
        await pub.publish("devices/a/telemetry", b'{"t": 1}', qos=1)
        message = await next_message(sub)
        assert message.topic.value == "devices/a/telemetry"
        assert message.payload == b'{"t": 1}'
        await pub.publish("devices/a/desired", b"{}", qos=1, retain=True)
        await sub.subscribe("devices/a/desired", qos=1)
        retained = await next_message(sub)
        assert retained.retain
        await pub.publish("devices/a/desired", b"", qos=1, retain=True)  # clears it


async def test_shared_subscriptions_split_the_load(broker: EmbeddedBroker) -> None:
    """Why ``--gateways N`` works on the embedded broker too."""
    counts = [0, 0]
    async with (
        aiomqtt.Client("127.0.0.1", broker.port) as a,
        aiomqtt.Client("127.0.0.1", broker.port) as b,
        aiomqtt.Client("127.0.0.1", broker.port) as pub,
    ):
        for sub in (a, b):
            await sub.subscribe("$share/g/devices/+/telemetry", qos=1)

        async def count(k: int, sub: aiomqtt.Client) -> None:
            async for _ in sub.messages:
                counts[k] += 1

        readers = [asyncio.create_task(count(k, sub)) for k, sub in enumerate((a, b))]
        for i in range(40):
            await pub.publish(f"devices/d{i}/telemetry", b"1", qos=1)
        await eventually(lambda: sum(counts) == 40)
        for reader in readers:
            reader.cancel()
    assert all(counts), counts  # each got a share, none twice
    assert broker.settings().shared


async def test_a_gateways_subscriptions_get_every_message_of_every_kind(
    broker: EmbeddedBroker,
) -> None:
    """rumqttd drops messages for a share group whose member holds several filters: the
    gateway's filters are in a group each, and all of them arrive."""
    kinds = ("telemetry", "reported", "status")
    got: list[str] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="gw", clean_session=False) as gw:
        await gw.subscribe(broker.settings().subscriptions())

        async def read() -> None:
            async for message in gw.messages:
                got.append(message.topic.value)  # noqa: PERF401 - until cancelled

        reader = asyncio.create_task(read())
        async with aiomqtt.Client("127.0.0.1", broker.port) as device:
            await asyncio.gather(
                *(
                    device.publish(f"devices/d{i}/{kind}", b"{}", qos=1)
                    for i in range(200)
                    for kind in kinds
                )
            )
        await eventually(lambda: len(got) == 600, timeout=10)
        reader.cancel()
    assert sorted(got) == sorted(f"devices/d{i}/{k}" for i in range(200) for k in kinds)


async def test_last_will_and_a_payload_at_the_platforms_limit(broker: EmbeddedBroker) -> None:
    big = b"x" * (MAX_PAYLOAD_BYTES - 100)
    async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
        await sub.subscribe("devices/+/status", qos=1)
        await sub.subscribe("devices/+/telemetry", qos=1)
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish("devices/big/telemetry", big, qos=1)
        assert (await next_message(sub)).payload == big
        will = aiomqtt.Will("devices/w/status", b"offline", qos=1)
        dying = aiomqtt.Client("127.0.0.1", broker.port, will=will, keepalive=60)
        await dying.__aenter__()
        dying._client.socket().close()  # gone without DISCONNECT: the broker sends the will
        message = await next_message(sub)
        assert (message.topic.value, message.payload) == ("devices/w/status", b"offline")
        with contextlib.suppress(Exception):
            await dying.__aexit__(None, None, None)


async def test_a_persistent_session_gets_again_what_it_did_not_acknowledge(
    broker: EmbeddedBroker,
) -> None:
    ident = f"gw-{uuid.uuid4().hex[:8]}"
    first = aiomqtt.Client("127.0.0.1", broker.port, identifier=ident, clean_session=False)
    first._client.manual_ack_set(True)
    async with first:
        await first.subscribe("devices/+/telemetry", qos=1)
        async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
            await pub.publish("devices/a/telemetry", b"read, never acknowledged", qos=1)
        await next_message(first)
    async with aiomqtt.Client("127.0.0.1", broker.port) as pub:
        await pub.publish("devices/a/telemetry", b"sent while away", qos=1)
    again = aiomqtt.Client("127.0.0.1", broker.port, identifier=ident, clean_session=False)
    async with again:
        payloads = {(await next_message(again)).payload for _ in range(2)}
    assert payloads == {b"read, never acknowledged", b"sent while away"}


async def test_a_taken_port_is_a_clear_oserror(broker: EmbeddedBroker) -> None:
    with pytest.raises(OSError, match="is taken") as raised:
        await EmbeddedBroker(port=broker.port).start()
    assert raised.value.errno == errno.EADDRINUSE


async def test_gateway_on_the_embedded_broker(broker: EmbeddedBroker) -> None:
    fleet = InProcessPlatform.create()
    await fleet.host.start()
    gateway = MqttGateway(fleet, broker.settings(batch_delay_s=0.005))
    task = asyncio.create_task(gateway.run())
    try:
        await gateway.wait_ready(10)
        sensor = f"emb{uuid.uuid4().hex[:8]}"
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe(f"devices/{sensor}/desired", qos=1)
            body = orjson.dumps({"temperature": 20.5})
            await client.publish(f"devices/{sensor}/telemetry", body, qos=1)
            doc = await eventually(lambda: fleet.host.get(sensor))
            assert doc["reported"]["temperature"] == 20.5
            await fleet.host.patch_desired(sensor, {"interval_s": 30})
            message = await next_message(client)
        desired = orjson.loads(message.payload)  # type: ignore[arg-type]
        assert desired["desired"] == {"interval_s": 30}
        assert desired["delta"] == {"interval_s": 30}
        assert gateway.stats["ingested"] == 1
        assert gateway.stats["published"] == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await fleet.host.stop()


async def test_messages_read_are_handed_over_on_shutdown(broker: EmbeddedBroker) -> None:
    fleet = InProcessPlatform.create()
    await fleet.host.start()
    settings = broker.settings(batch_delay_s=30, batch_size=10**6)
    gateway = MqttGateway(fleet, settings)
    task = asyncio.create_task(gateway.run())
    try:
        await gateway.wait_ready(10)
        sensor = f"emb{uuid.uuid4().hex[:8]}"
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.publish(f"devices/{sensor}/telemetry", b'{"seq": 1}', qos=1)
        await eventually(lambda: gateway.stats["received"] == 1)
    finally:
        task.cancel()  # long before the batch would be due
        with contextlib.suppress(asyncio.CancelledError):
            await task
    try:
        assert (await fleet.host.get(sensor))["reported"]["seq"] == 1
    finally:
        await fleet.host.stop()
