"""Simulated MQTT devices against each embedded broker: how soon readings flow, how late.

``SimulatedDevices`` (``--devices`` over 100 connections, every device subscribing to its own
desired and command topics, as ``twinfleet up --simulate`` runs them) against an
``EmbeddedBroker`` of each kind; one subscriber on ``$share/x/devices/+/telemetry`` measures,
every 10 s, the readings received per second and how late they are (its clock against the
reading's ``ts``). The baseline is the steady state of the same run.

    .venv/bin/python bench/simulated_devices.py [--devices 8000] [--brokers mosquitto,rumqttd]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import aiomqtt
import orjson
from common import report

from twinfleet.adapters.broker import EmbeddedBroker
from twinfleet.adapters.devices import SimulatedDevices, SimulatedDevicesOptions


async def one(kind: str, devices: int, windows: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with EmbeddedBroker(kind=kind) as broker:
        lags: list[float] = []
        count = 0
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-sub") as sub:
            await sub.subscribe("$share/x/devices/+/telemetry", 1)

            async def read() -> None:
                nonlocal count
                async for message in sub.messages:
                    reading = orjson.loads(message.payload)  # type: ignore[arg-type]
                    count += 1
                    lags.append(time.time() - reading["ts"])

            reader = asyncio.create_task(read())
            options = SimulatedDevicesOptions(
                devices=devices, protocol="mqtt", mqtt=broker.url, prefix="sim"
            )
            async with SimulatedDevices(options) as fleet:
                for window in range(windows):
                    await asyncio.sleep(10)
                    late = sorted(lags)
                    lags.clear()
                    row = {
                        "seconds": 10 * (window + 1),
                        "readings_per_s": count / 10,
                        "lag_p50_s": round(late[len(late) // 2], 3) if late else None,
                        "lag_p99_s": round(late[int(len(late) * 0.99)], 3) if late else None,
                        "connected": fleet.stats.connected,
                        "reconnects": fleet.stats.reconnects,
                    }
                    count = 0
                    rows.append(row)
                    print(kind, json.dumps(row), flush=True)
            reader.cancel()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--devices", type=int, default=8000)
    parser.add_argument("--windows", type=int, default=8)
    parser.add_argument("--brokers", default="mosquitto,rumqttd")
    args = parser.parse_args()
    results = {
        kind: asyncio.run(one(kind, args.devices, args.windows)) for kind in args.brokers.split(",")
    }
    report(
        "simulated_devices",
        {"command": " ".join(sys.argv), "devices": args.devices, "windows": results},
    )


if __name__ == "__main__":
    main()
