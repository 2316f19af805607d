"""End to end through Mosquitto: device messages -> broker -> gateways -> twins.

100,000 twins with EWMA scoring and write-behind snapshots on. A separate load process
publishes QoS 1 telemetry (with the publish time as ``ts``) at a set rate; gateways (Ray actors
sharing a ``$share`` subscription) decode and route it. Reported for each offered rate: msgs/s
applied, messages lost, and the p50/p99 delay from publish to twin update (sampled by the
hosts). Baseline in the same run: the raw ceiling of one aiomqtt subscriber that only decodes
JSON, offered more than it can take.

    .venv/bin/python bench/e2e_mqtt.py [--twins 100000] [--rates 6000,9000,12000] [--gateways 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiomqtt
import orjson
import ray
from common import report, start_ray

from twinfleet import Runtime
from twinfleet.adapters.gateways import spawn_gateway
from twinfleet.adapters.mqtt import MqttSettings
from twinfleet.runtime import DeviceMessage, RuntimeSettings

LOAD = Path(__file__).with_name("mqtt_load.py")


def publish(rate: float, count: int, *, devices: int, id_format: str, topic: str) -> dict:
    """Run the load generator in its own process; returns what it reports."""
    out = subprocess.run(
        [
            sys.executable,
            str(LOAD),
            "--rate",
            str(rate),
            "--count",
            str(count),
            "--devices",
            str(devices),
            "--id-format",
            id_format,
            "--topic",
            topic,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_ceiling(rate: float, seconds: float) -> float:
    """Messages/s one aiomqtt subscriber takes (QoS 1, JSON decoded) when offered ``rate``."""
    tag = uuid.uuid4().hex[:8]
    received = 0
    first = last = 0.0
    ready = threading.Event()
    done = threading.Event()

    async def subscriber() -> None:
        nonlocal received, first, last
        async with aiomqtt.Client(
            "127.0.0.1", 1883, identifier=f"bench-raw-{tag}", max_queued_incoming_messages=0
        ) as client:
            await client.subscribe(f"raw-{tag}/+/telemetry", qos=1)
            ready.set()
            async for message in client.messages:
                orjson.loads(message.payload)  # type: ignore[arg-type]
                now = time.perf_counter()
                first = first or now
                last = now
                received += 1
                if done.is_set():
                    return

    thread = threading.Thread(target=asyncio.run, args=(subscriber(),), daemon=True)
    thread.start()
    ready.wait(30)
    publish(
        rate,
        int(rate * seconds),
        devices=1000,
        id_format="r{:04d}",
        topic=f"raw-{tag}/{{}}/telemetry",
    )
    time.sleep(2)  # the subscriber drains what the broker still holds for it
    done.set()
    return received / (last - first) if last > first else 0.0


def host_totals(runtime: Runtime) -> tuple[int, int]:
    """(applied, stale) summed over the hosts, whoever routed the messages."""
    hosts = runtime.stats()["hosts"]
    return sum(h["applied"] for h in hosts), sum(h["stale"] for h in hosts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--rates", default="6000,9000,12000")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--gateways", type=int, default=2)
    parser.add_argument("--hosts", type=int, default=2)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    start_ray()
    ceiling = raw_ceiling(max(rates) * 2, 10.0)
    id_format = "e2e-{:06d}"
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(
            store=f"sqlite:///{tmp}/e2e.db", settings=RuntimeSettings(hosts=args.hosts)
        )
        try:
            ids = [id_format.format(i) for i in range(args.twins)]
            runtime.ingest(
                DeviceMessage(
                    i,
                    "telemetry",
                    {"temperature": 21.0, "humidity": 45.0},
                    None,
                    "mqtt",
                    "smart-sensor",
                )
                for i in ids
            )
            runtime.persist()
            settings = MqttSettings.from_url(
                "mqtt://127.0.0.1:1883", share_group=f"bench-{uuid.uuid4().hex[:6]}"
            )
            gateways = [spawn_gateway(runtime.roster(), settings) for _ in range(args.gateways)]
            ray.get([g.start.remote() for g in gateways])
            runs = []
            for rate in rates:
                ray.get([h.delays.remote(reset=True) for _, h in runtime.roster().hosts])
                applied0, stale0 = host_totals(runtime)
                count = int(rate * args.seconds)
                start = time.perf_counter()
                sent = publish(
                    rate,
                    count,
                    devices=args.twins,
                    id_format=id_format,
                    topic="devices/{}/telemetry",
                )
                # drain: until every gateway has handed over and the hosts stop counting
                settled, previous = time.perf_counter(), -1
                while True:
                    ray.get([g.flush.remote() for g in gateways])
                    applied, stale = host_totals(runtime)
                    got = applied - applied0 + stale - stale0
                    if got >= count or (got == previous and time.perf_counter() - settled > 5):
                        break
                    if got != previous:
                        previous, settled = got, time.perf_counter()
                    time.sleep(0.5)
                elapsed = time.perf_counter() - start
                delays = [ray.get(h.delays.remote()) for _, h in runtime.roster().hosts]
                p99 = max(d.get("p99_ms", 0.0) for d in delays)
                p50 = max(d.get("p50_ms", 0.0) for d in delays)
                runs.append(
                    {
                        "offered_msgs_per_s": rate,
                        "published": count,
                        "acked_by_broker": sent["acked"],
                        "applied": got,
                        "lost": count - got,
                        "applied_msgs_per_s": round(got / elapsed),
                        "delay_p50_ms": p50,
                        "delay_p99_ms": p99,
                    }
                )
                print(runs[-1], flush=True)
            gateway_stats = ray.get([g.stats.remote() for g in gateways])
            ray.get([g.stop.remote() for g in gateways])
        finally:
            runtime.close()
    best = max(
        (r for r in runs if r["lost"] == 0), key=lambda r: r["applied_msgs_per_s"], default=None
    )
    report(
        "e2e_mqtt",
        {
            "command": "python bench/e2e_mqtt.py "
            + " ".join(f"--{k} {v}" for k, v in vars(args).items()),
            "twins": args.twins,
            "gateways": args.gateways,
            "hosts": args.hosts,
            "raw_aiomqtt_subscriber_msgs_per_s": round(ceiling),
            "runs": runs,
            "best_lossless_msgs_per_s": best["applied_msgs_per_s"] if best else 0,
            "ratio_best_over_raw_ceiling": round(best["applied_msgs_per_s"] / ceiling, 2)
            if best
            else 0,
            "gateway_stats": gateway_stats,
            "targets": {"msgs_per_s": 10_000, "ratio": 0.5, "lost": 0},
        },
    )


if __name__ == "__main__":
    main()
