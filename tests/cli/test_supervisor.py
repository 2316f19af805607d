"""The edges' supervisor against real Ray and a real (private) Mosquitto: a gateway process
killed with SIGKILL comes back by itself, and nothing it acknowledged is lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest
import ray
from helpers import PrivateMosquitto, free_port

from twinfleet import Runtime
from twinfleet.adapters.gateways import spawn_gateway
from twinfleet.adapters.mqtt import MqttSettings
from twinfleet.cli.supervisor import Supervisor
from twinfleet.runtime import RuntimeSettings

pytestmark = [pytest.mark.slow, pytest.mark.services, pytest.mark.usefixtures("ray_session")]

DEVICES = 3000


async def publish(port: int, ids: list[str]) -> None:
    """One QoS 1 reading per device, each acknowledged by the broker before the next batch."""
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as c:
        for start in range(0, len(ids), 100):
            await asyncio.gather(
                *(
                    c.publish(f"devices/{i}/telemetry", orjson.dumps({"temperature": 1.0}), qos=1)
                    for i in ids[start : start + 100]
                )
            )


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_gateway_killed_with_sigkill_comes_back_and_loses_nothing_it_acknowledged(
    tmp_path: Path, private_mosquitto: Callable[[str], PrivateMosquitto]
) -> None:
    port = free_port()
    # The broker keeps what arrives for the gateway's session while it is away (more than
    # Mosquitto's default of 1,000 queued messages).
    private_mosquitto(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages {2 * DEVICES}\n"
    )
    prefix = f"sk{uuid.uuid4().hex[:6]}"
    ids = [f"{prefix}-{i:05d}" for i in range(DEVICES)]
    with Runtime(store=f"sqlite:///{tmp_path}/s.db", settings=RuntimeSettings(hosts=2)) as rt:
        settings = MqttSettings.from_url(
            f"mqtt://127.0.0.1:{port}", client_id=f"{prefix}-gw", persistent=True
        )
        roster = rt.roster()
        supervisor = Supervisor(interval_s=0.2)
        supervisor.add(
            "gateway-0",
            lambda: spawn_gateway(roster, settings),
            lambda actor, facts: actor.start.remote(),
        )
        try:
            first = supervisor.stats()["gateway-0"]
            wait_for(lambda: supervisor.stats()["gateway-0"].get("pid"), 10, "the first stats")
            pid = supervisor.stats()["gateway-0"]["pid"]
            asyncio.run(publish(port, ids[: DEVICES // 2]))
            os.kill(pid, signal.SIGKILL)  # whatever it had read and not yet acknowledged
            asyncio.run(publish(port, ids[DEVICES // 2 :]))  # while it is gone
            wait_for(lambda: supervisor.stats()["gateway-0"]["restarts"] == 1, 90, "the restart")
            again = supervisor.stats()["gateway-0"]
            assert again["pid"] != pid
            assert again["up"] is True
            wait_for(lambda: rt.stats()["active"] == DEVICES, 90, "every device's twin")
            rt.flush()
            assert rt.twin(ids[0]).get()["reported"]["temperature"] == 1.0
            assert rt.twin(ids[-1]).get()["reported"]["temperature"] == 1.0
            assert first["restarts"] == 0
        finally:
            supervisor.stop()
        assert ray.is_initialized()
