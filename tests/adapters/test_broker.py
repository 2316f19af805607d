"""The embedded amqtt broker, alone and with the MQTT gateway (no services needed)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import aiomqtt
import orjson
import pytest
from helpers import eventually, next_message

from twinfleet.adapters.broker import EmbeddedBroker
from twinfleet.adapters.mqtt import MqttGateway
from twinfleet.runtime.edge import InProcessPlatform


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker() as broker:
        yield broker


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


async def test_amqtt_has_no_shared_subscriptions(broker: EmbeddedBroker) -> None:
    """Why the gateway subscribes plainly on the embedded broker (``shared=False``)."""
    async with (
        aiomqtt.Client("127.0.0.1", broker.port) as sub,
        aiomqtt.Client("127.0.0.1", broker.port) as pub,
    ):
        await sub.subscribe("$share/g/devices/+/telemetry", qos=1)  # granted, but never matches
        await sub.subscribe("devices/+/reported", qos=1)
        await pub.publish("devices/a/telemetry", b"1", qos=1)
        await pub.publish("devices/a/reported", b"2", qos=1)
        message = await next_message(sub)
    assert message.topic.value == "devices/a/reported"  # the telemetry before it never came
    assert not broker.settings().shared


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
