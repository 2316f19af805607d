"""Simulated devices against a real Mosquitto (127.0.0.1:1883) and an in-process CoAP endpoint.

Every test uses a device-id prefix of its own, so tests never see each other's messages, and
clears the retained messages it creates. Waits are bounded; nothing is timed.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

import aiomqtt
import numpy as np
import pytest
from helpers import eventually, free_port, port_open

from twinfleet.adapters.devices import (
    LabelWriter,
    SimulatedDevices,
    SimulatedDevicesOptions,
    answer_command,
    parse_desired,
    parse_mqtt_url,
    read_labels,
    reported_config,
)
from twinfleet.adapters.simulator import Anomaly, SignalSimulator

BROKER = ("127.0.0.1", 1883)
WAIT_S = 30.0


@pytest.fixture
def broker() -> str:
    """The shared Mosquitto's URL (scripts/test.sh starts it when it is down)."""
    if not port_open(*BROKER):
        pytest.fail("Mosquitto is not running on 127.0.0.1:1883 (scripts/test.sh starts it)")
    return f"mqtt://{BROKER[0]}:{BROKER[1]}"


@pytest.fixture
def prefix() -> str:
    """A device-id prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


@dataclass
class Seen:
    """Every message a watcher received for one prefix, as (topic parts after ``devices/``)."""

    prefix: str
    messages: list[tuple[list[str], bytes]] = field(default_factory=list)

    def of(self, leaf: str, device: str | None = None) -> list[tuple[str, bytes]]:
        """(device, payload) of the messages on ``devices/{device}/{leaf}``."""
        return [
            (parts[0], payload)
            for parts, payload in self.messages
            if "/".join(parts[1:]) == leaf and (device is None or parts[0] == device)
        ]

    def json(self, leaf: str, device: str | None = None) -> list[tuple[str, Any]]:
        """Like ``of``, decoded."""
        return [(d, json.loads(p)) for d, p in self.of(leaf, device)]

    def status(self, device: str) -> list[str]:
        """The ``online``/``offline`` payloads seen for one device, in order."""
        return [p.decode() for _, p in self.of("status", device)]


@asynccontextmanager
async def _watch(prefix: str) -> AsyncIterator[tuple[aiomqtt.Client, Seen]]:
    """A separate client recording what devices with ``prefix`` publish (and answer)."""
    seen = Seen(prefix)
    async with aiomqtt.Client(*BROKER, identifier=f"{prefix}-watch") as client:
        await client.subscribe(
            [
                ("devices/+/telemetry", 0),
                ("devices/+/reported", 1),
                ("devices/+/status", 1),
                ("devices/+/commands/+/response", 1),
            ]
        )

        async def record() -> None:
            async for message in client.messages:
                parts = message.topic.value.split("/")[1:]
                if parts[0].startswith(prefix + "-"):
                    assert isinstance(message.payload, bytes)
                    seen.messages.append((parts, message.payload))

        task = asyncio.create_task(record())
        try:
            yield client, seen
        finally:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task


async def _clear_retained(client: aiomqtt.Client, topics: list[str]) -> None:
    for topic in topics:
        await client.publish(topic, b"", qos=1, retain=True)


# ---------------------------------------------------------------------------------------------
# the device's logic, without a broker


def test_parse_desired_reads_the_sample_interval_at_either_path() -> None:
    top = parse_desired(b'{"version": 4, "desired": {"sample_interval": 5}, "delta": {}}')
    assert top is not None
    assert (top.version, top.sample_interval, top.top_level) == (4, 5.0, True)
    nested = parse_desired(b'{"version": 2, "desired": {"config": {"sample_interval": 0.5}}}')
    assert nested is not None
    assert (nested.version, nested.sample_interval, nested.top_level) == (2, 0.5, False)
    other = parse_desired(b'{"version": 1, "desired": {"led": "on"}}')
    assert other is not None
    assert other.sample_interval is None
    for bad in (
        b"",
        b"not json",
        b"[]",
        b'{"desired": 3}',
        b'{"desired": {"sample_interval": -1}}',
    ):
        update = parse_desired(bad)
        assert update is None or update.sample_interval is None


def test_reported_config_mirrors_a_top_level_desired_interval() -> None:
    assert reported_config(5.0) == {"config": {"sample_interval": 5.0}}
    assert reported_config(5.0, top_level=True) == {
        "config": {"sample_interval": 5.0},
        "sample_interval": 5.0,
    }


def test_answer_command() -> None:
    now = 1000.0

    def answer(command: dict[str, Any]) -> dict[str, Any]:
        return answer_command(json.dumps(command).encode(), now=now).response

    assert answer({"name": "ping", "params": {}, "expires_at": now + 5}) == {
        "status": "ok",
        "result": {"pong": True},
    }
    assert answer({"name": "reboot"})["status"] == "ok"
    interval = answer_command(b'{"name": "set_interval", "params": {"seconds": 2}}', now=now)
    assert interval.response == {"status": "ok", "result": {"sample_interval": 2.0}}
    assert interval.sample_interval == 2.0
    assert answer({"name": "set_interval", "params": {"seconds": 0}})["status"] == "error"
    unknown = answer({"name": "selfdestruct", "params": {}})
    assert unknown["status"] == "error"
    assert unknown["error"].startswith("unknown command")
    assert answer({"name": "ping", "expires_at": now - 1}) == {
        "status": "error",
        "error": "command expired",
    }
    assert answer_command(b"{", now=now).response["status"] == "error"


def test_options_are_validated() -> None:
    assert SimulatedDevicesOptions(devices=500).connection_count == 100
    assert SimulatedDevicesOptions(devices=7).connection_count == 7
    assert SimulatedDevicesOptions(devices=7, connections=2).connection_count == 2
    for bad in (
        {"devices": 0},
        {"devices": 5, "connections": 6},
        {"devices": 5, "interval_s": 0.0},
        {"devices": 5, "mqtt": "http://x"},
        {"devices": 5, "coap": "mqtt://x"},
        {"devices": 5, "prefix": "a/b"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by hand below
            SimulatedDevicesOptions(**bad)
    assert parse_mqtt_url("mqtts://u:p%40ss@broker") == ("broker", 8883, "u", "p@ss", True)


def test_simulator_generates_for_chosen_devices_and_reports_anomalies() -> None:
    seen: list[Anomaly] = []
    sim = SignalSimulator(
        10, seed=3, prefix="x", anomaly_rate=1.0, start=100.0, on_anomaly=seen.append
    )
    ids = [device for device, _ in sim.devices]
    first = sim.readings_for(ids[:4], now=110.0)
    assert sorted(m.device_id for m in first) == sorted(ids[:4])
    assert seen == sim.anomalies
    assert len(seen) == 4  # rate 1.0: one anomaly per reading
    assert all(sim.family(m.device_id) == m.device_type for m in first)
    # the old round-robin API still works
    assert len(sim.readings(25, now=120.0)) == 25
    assert len(sim) == 10


def test_counters_grow_with_each_devices_own_elapsed_time() -> None:
    sim = SignalSimulator(5, seed=1, prefix="c", anomaly_rate=0.0, start=0.0)
    meter = next(d for d, family in sim.devices if family == "smart-meter")
    a = sim.readings_for([meter], now=3600.0)[0].payload["energy"]
    b = sim.readings_for([meter], now=7200.0)[0].payload["energy"]
    c = sim.readings_for([meter], now=7200.0)[0].payload["energy"]
    assert b > a
    assert c == b


def test_label_writer_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    writer = LabelWriter(path)
    labels = [
        Anomaly("d1", "temperature", "spike", 1.0, 1.0),
        Anomaly("d2", "power", "drift", 2.0, math.inf),
    ]
    for label in labels:
        writer(label)
    writer.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[1]) == {
        "device_id": "d2",
        "metric": "power",
        "kind": "drift",
        "start": 2.0,
        "end": None,
    }
    assert read_labels(path) == labels


# ---------------------------------------------------------------------------------------------
# against Mosquitto


@pytest.mark.services
async def test_devices_publish_telemetry_at_their_interval(broker: str, prefix: str) -> None:
    options = SimulatedDevicesOptions(
        devices=6, mqtt=broker, prefix=prefix, interval_s=0.5, connections=2, tick_s=0.05
    )
    async with _watch(prefix) as (_, seen):
        fleet = SimulatedDevices(options)
        ids = fleet.device_ids
        async with fleet:
            await eventually(
                lambda: all(len(seen.of("telemetry", d)) >= 6 for d in ids), timeout=WAIT_S
            )
        for device in ids:
            readings = [body for _, body in seen.json("telemetry", device)]
            assert all(isinstance(body, dict) for body in readings)
            assert all(
                isinstance(v, int | float) and not isinstance(v, bool)
                for body in readings
                for v in body.values()
            )
            stamps = [body["ts"] for body in readings]
            assert stamps == sorted(stamps)
            assert abs(stamps[-1] - time.time()) < 60
            # the device's own timestamps say how often it reported (no wall-clock assertion)
            gap = median(np.diff(stamps).tolist())
            assert 0.25 <= gap <= 1.0, (device, gap)
            # greeted once per connection: firmware and applied config
            greeting = seen.json("reported", device)[0][1]
            assert greeting == {
                "firmware": {"version": "1.0.0"},
                "config": {"sample_interval": 0.5},
            }
        assert fleet.stats.sent >= 6 * len(ids)
        assert fleet.stats.failed == 0


@pytest.mark.services
async def test_retained_desired_changes_the_rate_and_is_reported(broker: str, prefix: str) -> None:
    options = SimulatedDevicesOptions(
        devices=2, mqtt=broker, prefix=prefix, interval_s=3.0, connections=1, tick_s=0.05
    )
    fleet = SimulatedDevices(options)
    fast, slow = fleet.device_ids
    desired_topic = f"devices/{fast}/desired"
    async with _watch(prefix) as (client, seen):
        # retained before the device connects: applied when it subscribes
        await client.publish(
            desired_topic,
            json.dumps(
                {"version": 1, "desired": {"config": {"sample_interval": 0.2}}, "delta": {}}
            ),
            qos=1,
            retain=True,
        )
        try:
            async with fleet:
                applied = {"config": {"sample_interval": 0.2}}
                await eventually(
                    lambda: (fast, applied) in seen.json("reported", fast), timeout=WAIT_S
                )
                before = len(seen.of("telemetry", fast))
                await eventually(
                    lambda: len(seen.of("telemetry", fast)) >= before + 10, timeout=WAIT_S
                )
                assert fleet.sample_interval(fast) == 0.2
                assert fleet.sample_interval(slow) == 3.0
                # at 15x the rate, the fast device has said far more than the slow one
                assert len(seen.of("telemetry", fast)) > 2 * len(seen.of("telemetry", slow))

                # a newer desired at the top-level path, while connected
                await client.publish(
                    desired_topic,
                    json.dumps({"version": 2, "desired": {"sample_interval": 5}, "delta": {}}),
                    qos=1,
                    retain=True,
                )
                mirrored = {"config": {"sample_interval": 5.0}, "sample_interval": 5.0}
                await eventually(
                    lambda: (fast, mirrored) in seen.json("reported", fast), timeout=WAIT_S
                )
                assert fleet.sample_interval(fast) == 5.0
                assert fleet.stats.desired_applied == 2
        finally:
            await _clear_retained(client, [desired_topic])


@pytest.mark.services
async def test_commands_get_answers(broker: str, prefix: str) -> None:
    options = SimulatedDevicesOptions(
        devices=3, mqtt=broker, prefix=prefix, interval_s=2.0, connections=2
    )
    fleet = SimulatedDevices(options)
    device = fleet.device_ids[1]
    base = f"devices/{device}/commands"

    def response(cmd_id: str) -> list[Any]:
        return [body for _, body in seen.json(f"commands/{cmd_id}/response", device)]

    async with _watch(prefix) as (client, seen), fleet:
        await eventually(lambda: seen.status(device) == ["online"], timeout=WAIT_S)
        expires = time.time() + 60
        await client.publish(
            f"{base}/c1",
            json.dumps({"name": "ping", "params": {}, "expires_at": expires}),
            qos=1,
        )
        await client.publish(
            f"{base}/c2", json.dumps({"name": "selfdestruct", "params": {}}), qos=1
        )
        await client.publish(
            f"{base}/c3",
            json.dumps({"name": "set_interval", "params": {"seconds": 0.5}, "expires_at": expires}),
            qos=1,
        )
        await client.publish(f"{base}/c4", json.dumps({"name": "reboot", "params": {}}), qos=1)
        await eventually(lambda: all(response(c) for c in ("c1", "c2", "c3", "c4")), timeout=WAIT_S)
        assert response("c1") == [{"status": "ok", "result": {"pong": True}}]
        [unknown] = response("c2")
        assert unknown["status"] == "error"
        assert "unknown command" in unknown["error"]
        assert "result" not in unknown
        assert response("c3") == [{"status": "ok", "result": {"sample_interval": 0.5}}]
        assert response("c4") == [{"status": "ok", "result": {}}]
        await eventually(
            lambda: (device, {"config": {"sample_interval": 0.5}}) in seen.json("reported", device),
            timeout=WAIT_S,
        )
        assert fleet.sample_interval(device) == 0.5
        assert fleet.stats.commands_answered == 4
        # a command for another device of the same connection is not answered by this one
        assert not seen.of("commands/c1/response", fleet.device_ids[0])


@pytest.mark.services
@pytest.mark.parametrize("connections", [1, 3])
async def test_online_on_connect_and_offline_on_clean_stop(
    broker: str, prefix: str, connections: int
) -> None:
    options = SimulatedDevicesOptions(
        devices=3, mqtt=broker, prefix=prefix, interval_s=5.0, connections=connections
    )
    fleet = SimulatedDevices(options)
    async with _watch(prefix) as (_, seen):
        async with fleet:
            await eventually(
                lambda: all(seen.status(d) == ["online"] for d in fleet.device_ids), timeout=WAIT_S
            )
            await eventually(lambda: fleet.stats.online == 3, timeout=WAIT_S)
        assert fleet.stats.online == 0
        await eventually(
            lambda: all(seen.status(d) == ["online", "offline"] for d in fleet.device_ids),
            timeout=WAIT_S,
        )


@pytest.mark.services
async def test_labels_file_gets_json_lines(broker: str, prefix: str, tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    options = SimulatedDevicesOptions(
        devices=4,
        mqtt=broker,
        prefix=prefix,
        interval_s=0.2,
        anomaly_rate=0.5,
        labels=labels,
        tick_s=0.05,
    )
    fleet = SimulatedDevices(options)

    def lines() -> list[str]:
        return labels.read_text().splitlines() if labels.exists() else []

    async with fleet:
        await eventually(lambda: len(lines()) >= 5, timeout=WAIT_S)
    records = [json.loads(line) for line in lines()]
    assert len(records) == fleet.stats.anomalies == len(fleet.simulator.anomalies)
    for record in records:
        assert set(record) == {"device_id", "metric", "kind", "start", "end"}
        assert record["device_id"] in fleet.device_ids
        assert record["kind"] in {"spike", "drift", "stuck"}
        assert record["end"] is None or record["end"] >= record["start"]
    assert read_labels(labels) == fleet.simulator.anomalies


@pytest.mark.services
async def test_two_thousand_devices_over_twenty_connections(broker: str, prefix: str) -> None:
    options = SimulatedDevicesOptions(
        devices=2000, mqtt=broker, prefix=prefix, interval_s=1.0, connections=20, anomaly_rate=0.0
    )
    fleet = SimulatedDevices(options)
    async with _watch(prefix) as (_, seen):
        distinct: set[str] = set()

        def all_published() -> bool:
            distinct.update(d for d, _ in seen.of("telemetry"))
            seen.messages.clear()
            return len(distinct) == 2000

        async with fleet:
            await eventually(all_published, timeout=120)
            assert fleet.stats.online == 2000
            assert fleet.stats.connected == 20
        assert distinct == set(fleet.device_ids)
        assert fleet.stats.online == 0


# ---------------------------------------------------------------------------------------------
# CoAP, against an endpoint in this process


@asynccontextmanager
async def _coap_endpoint() -> AsyncIterator[tuple[str, Any]]:
    """A minimal ``/devices/{id}/...`` CoAP endpoint recording what it is sent."""
    import aiocoap
    from aiocoap import resource

    class Devices(resource.Resource, resource.PathCapable):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.requests: list[tuple[str, str, str, Any, bytes, Any]] = []
            self.desired: dict[str, dict[str, Any]] = {}

        async def render(self, request: Any) -> Any:
            device, leaf = request.opt.uri_path
            self.requests.append(
                (
                    str(request.code),
                    device,
                    leaf,
                    request.opt.content_format,
                    request.payload,
                    request.mtype,
                )
            )
            if request.code == aiocoap.GET and leaf == "desired":
                if device not in self.desired:
                    return aiocoap.Message(code=aiocoap.NOT_FOUND)
                return aiocoap.Message(
                    code=aiocoap.CONTENT,
                    payload=json.dumps(self.desired[device]).encode(),
                    content_format=50,
                )
            return aiocoap.Message(code=aiocoap.CHANGED)

    site = resource.Site()
    devices = Devices()
    site.add_resource(["devices"], devices)
    port = free_port(udp=True)
    context = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
    try:
        yield f"coap://127.0.0.1:{port}", devices
    finally:
        await context.shutdown()


async def test_coap_devices_post_telemetry_and_poll_desired(prefix: str) -> None:
    import aiocoap

    async with _coap_endpoint() as (url, endpoint):
        options = SimulatedDevicesOptions(
            devices=3,
            protocol="coap",
            coap=url,
            prefix=prefix,
            interval_s=0.3,
            desired_poll_s=0.3,
            tick_s=0.05,
        )
        fleet = SimulatedDevices(options)
        device = fleet.device_ids[0]
        endpoint.desired[device] = {
            "version": 1,
            "desired": {"config": {"sample_interval": 0.6}},
            "delta": {},
        }

        def posts(leaf: str, who: str | None = None) -> list[tuple[Any, Any, Any]]:
            return [
                (json.loads(payload), fmt, mtype)
                for code, d, lf, fmt, payload, mtype in endpoint.requests
                if code == str(aiocoap.POST) and lf == leaf and (who is None or d == who)
            ]

        applied = {"config": {"sample_interval": 0.6}}
        async with fleet:
            await eventually(
                lambda: all(len(posts("telemetry", d)) >= 3 for d in fleet.device_ids),
                timeout=WAIT_S,
            )
            await eventually(
                lambda: any(body == applied for body, _, _ in posts("reported", device)),
                timeout=WAIT_S,
            )
        assert fleet.sample_interval(device) == 0.6
        for body, fmt, mtype in posts("telemetry"):
            assert int(fmt) == 50
            assert mtype == aiocoap.NON
            assert isinstance(body["ts"], float)
        assert posts("reported", device)[0][0] == {
            "firmware": {"version": "1.0.0"},
            "config": {"sample_interval": 0.3},
        }
        assert fleet.stats.sent >= 9
        assert fleet.stats.desired_applied == 1
