"""End to end through Mosquitto, as ``twinfleet up --mqtt`` runs it: no bench-only wiring.

A private Mosquitto on a free port (``max_queued_messages`` raised so that the broker drops
nothing for a subscriber that falls behind; everything else default). In the same run:

- **baseline**: one do-nothing aiomqtt subscriber (QoS 1, decodes the JSON, nothing else) fed
  by the same publisher with the same burst;
- **twinfleet**: the real ``twinfleet up --mqtt mqtt://127.0.0.1:PORT`` command (its
  gateways, hosts, scoring, write-behind snapshots and SQLite history as shipped) with
  ``--twins`` twins made first by one reading each, then the same burst.

The publisher is well behaved: QoS 1 with at most ``--max-unacked`` messages unacknowledged.
Reported: msgs/s from the first publish to the last message received (baseline) or applied
by its twin (twinfleet, read from ``/metrics``), the ratio of the two, and messages lost.

    .venv/bin/python bench/up_mqtt.py [--twins 100000] [--burst 200000] [--gateways 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
from common import report
from prometheus_client.parser import text_string_to_metric_families

LOAD = Path(__file__).with_name("mqtt_load.py")
TWINFLEET = Path(sys.executable).with_name("twinfleet")
ID_FORMAT = "e2e-{:06d}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto(folder: Path, port: int) -> subprocess.Popen[bytes]:
    """A private Mosquitto that queues without limit for a subscriber that falls behind."""
    config = folder / "mosquitto.conf"
    config.write_text(
        f"user {getpass.getuser()}\npersistence false\nlog_dest stderr\nlog_type error\n"
        f"listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
    )
    proc = subprocess.Popen(["mosquitto", "-c", str(config)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start")


def publish(port: int, count: int, *, devices: int, first: int, max_unacked: int) -> float:
    """The burst from a process of its own; returns when the broker acknowledged it all."""
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            str(LOAD),
            "--port",
            str(port),
            "--rate",
            "1000000",
            "--count",
            str(count),
            "--devices",
            str(devices),
            "--id-format",
            ID_FORMAT,
            "--max-unacked",
            str(max_unacked),
            "--first",
            str(first),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    return started


def baseline(port: int, count: int, *, devices: int, max_unacked: int) -> dict[str, Any]:
    """One do-nothing aiomqtt subscriber: msgs/s from the first publish to the last message."""
    received = 0
    last = 0.0
    ready = threading.Event()
    done = threading.Event()

    async def subscriber() -> None:
        nonlocal received, last
        async with aiomqtt.Client(
            "127.0.0.1", port, identifier=f"naive-{uuid.uuid4().hex[:8]}"
        ) as client:
            await client.subscribe("devices/+/telemetry", qos=1)
            ready.set()
            async for message in client.messages:
                orjson.loads(message.payload)  # type: ignore[arg-type]
                received += 1
                last = time.perf_counter()
                if received >= count or done.is_set():
                    return

    thread = threading.Thread(target=asyncio.run, args=(subscriber(),), daemon=True)
    thread.start()
    ready.wait(30)
    started = publish(port, count, devices=devices, first=0, max_unacked=max_unacked)
    thread.join(120)
    done.set()
    return {
        "msgs_per_s": round(count / (last - started), 1) if received else 0.0,
        "received": received,
        "lost": count - received,
    }


def taken(url: str) -> float:
    """MQTT messages the hosts took so far, from ``/metrics``."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "twinfleet_messages_by_protocol_total"
        and sample.labels.get("protocol") == "mqtt"
    )


def wait_taken(url: str, target: float, timeout: float) -> tuple[float, float]:
    """Poll until the hosts took ``target`` messages; (when, how many) at the end."""
    deadline = time.monotonic() + timeout
    last_change, value = time.perf_counter(), taken(url)
    while value < target and time.monotonic() < deadline:
        time.sleep(0.1)
        now = taken(url)
        if now != value:
            value, last_change = now, time.perf_counter()
    return last_change, value


def twinfleet(port: int, args: argparse.Namespace, gateways: int, data: Path) -> dict[str, Any]:
    """``twinfleet up --mqtt``: make the twins, then the burst."""
    api = free_port()
    url = f"http://127.0.0.1:{api}"
    proc = subprocess.Popen(
        [
            str(TWINFLEET),
            "up",
            "--mqtt",
            f"mqtt://127.0.0.1:{port}",
            "--gateways",
            str(gateways),
            "--port",
            str(api),
            "--coap-port",
            "0",
            "--rate-limit",
            "none",
            "--data-dir",
            str(data),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("twinfleet up did not start")
            time.sleep(0.5)
        time.sleep(2)  # the gateways subscribe
        publish(port, args.twins, devices=args.twins, first=0, max_unacked=args.max_unacked)
        _, made = wait_taken(url, args.twins, 600)
        before = taken(url)
        started = publish(
            port, args.burst, devices=args.twins, first=args.twins, max_unacked=args.max_unacked
        )
        finished, after = wait_taken(url, before + args.burst, 600)
        applied = after - before
        return {
            "gateways": gateways,
            "twins_made": int(made),
            "msgs_per_s": round(applied / (finished - started), 1),
            "applied": int(applied),
            "lost": int(args.burst - applied),
        }
    finally:
        proc.terminate()
        proc.wait(120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--burst", type=int, default=200_000)
    parser.add_argument("--max-unacked", type=int, default=2000)
    parser.add_argument("--gateways", default="1,2")
    parser.add_argument("--name", default="up_mqtt")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory(prefix="up-mqtt-") as folder:
        port = free_port()
        broker = mosquitto(Path(folder), port)
        try:
            base = baseline(port, args.burst, devices=args.twins, max_unacked=args.max_unacked)
            print(json.dumps({"baseline": base}), flush=True)
            for gateways in (int(g) for g in args.gateways.split(",")):
                data = Path(folder) / f"data-{gateways}"
                run = twinfleet(port, args, gateways, data)
                run["vs_baseline"] = round(run["msgs_per_s"] / base["msgs_per_s"], 2)
                print(json.dumps(run), flush=True)
                runs.append(run)
        finally:
            broker.terminate()
            broker.wait(10)
    report(
        args.name,
        {
            "command": " ".join(sys.argv),
            "twins": args.twins,
            "burst": args.burst,
            "max_unacked": args.max_unacked,
            "baseline_one_aiomqtt_subscriber": base,
            "twinfleet_up": runs,
        },
    )


if __name__ == "__main__":
    main()
