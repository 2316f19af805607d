"""Gateways as Ray actors of their own, sharing the device topics, against the real Mosquitto."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import aiomqtt
import orjson
import pytest
import ray

from twinfleet import Runtime
from twinfleet.adapters.gateways import spawn_gateway
from twinfleet.adapters.mqtt import MqttSettings
from twinfleet.runtime import RuntimeSettings

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.usefixtures("ray_session")]


async def publish(messages: list[tuple[str, dict]]) -> None:
    async with aiomqtt.Client("127.0.0.1", 1883, identifier=f"t-{uuid.uuid4().hex[:8]}") as c:
        for topic, body in messages:
            await c.publish(topic, orjson.dumps(body), qos=1)


def test_two_gateway_actors_share_the_load_and_every_message_lands_once(tmp_path: Path) -> None:
    prefix = f"ga{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i:03d}" for i in range(60)]
    with Runtime(store=f"sqlite:///{tmp_path}/s.db", settings=RuntimeSettings(hosts=2)) as rt:
        settings = MqttSettings.from_url(
            "mqtt://127.0.0.1:1883", share_group=f"{prefix}-group", batch_delay_s=0.01
        )
        gateways = [spawn_gateway(rt.roster(), settings) for _ in range(2)]
        try:
            ray.get([g.start.remote() for g in gateways], timeout=60)
            messages = [
                (f"devices/{i}/telemetry", {"temperature": float(k), "ts": 1.8e9 + k})
                for k in range(5)
                for i in ids
            ]
            asyncio.run(publish(messages))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ray.get([g.flush.remote() for g in gateways])
                hosts = rt.stats()["hosts"]
                if sum(h["applied"] + h["stale"] for h in hosts) >= len(messages):
                    break
                time.sleep(0.2)
            stats = ray.get([g.stats.remote() for g in gateways])
            assert sum(s["received"] for s in stats) == len(messages)  # once each
            assert all(s["received"] > 0 for s in stats)  # both took a share
            assert sum(h["applied"] for h in rt.stats()["hosts"]) == len(messages)
            for i in ids[:5]:
                doc = rt.twin(i).get()
                assert doc["reported"]["temperature"] == 4.0
                assert doc["connectivity"]["protocol"] == "mqtt"
        finally:
            ray.get([g.stop.remote() for g in gateways], timeout=60)
            for gateway in gateways:
                ray.kill(gateway)
